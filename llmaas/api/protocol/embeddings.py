"""/v1/embeddings schemas, OpenAI field for field.

`input` is a string, a list of strings, a token array or a list of token arrays (bounded by
`limits.max_embedding_inputs`). `encoding_format` is float or base64 (little-endian float32, what the official client
asks for by default). `dimensions` is accepted only when it equals the model's native size (no truncation).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from llmaas.api.protocol.common import OpenAIBaseModel, ResponseModel
from llmaas.config import Limits
from llmaas.errors import InvalidRequest

HARD_MAX_INPUTS = 100_000  # Limits.max_embedding_inputs' own ceiling
HARD_MAX_INPUT_TOKENS = 1_048_576
TokenIds = Annotated[
    list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(min_length=1, max_length=HARD_MAX_INPUT_TOKENS)
]


class EmbeddingRequest(OpenAIBaseModel):
    """An embeddings request. Unknown fields are ignored (and their names logged)."""

    model: str = Field(max_length=256, description="An embedding model id from GET /v1/models.")
    input: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=HARD_MAX_INPUTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=HARD_MAX_INPUTS)]
    ) = Field(description="Text or token ids to embed: one or a list of them.")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64 = little-endian float32 bytes.")
    dimensions: int | None = Field(None, ge=1, le=1_000_000, description="Must equal the model's native size if given.")
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list of strings or a list of token arrays."""
        x = self.input
        if isinstance(x, str):
            return [x]
        if x and isinstance(x[0], int):
            return [list(x)]
        return list(x)  # type: ignore[return-value]

    def check_limits(self, limits: Limits) -> None:
        inputs = self.inputs()
        if len(inputs) > limits.max_embedding_inputs:
            raise InvalidRequest(f"At most {limits.max_embedding_inputs} inputs per request.", param="input")
        for i, item in enumerate(inputs):
            if isinstance(item, str) and not item:
                raise InvalidRequest(
                    "Inputs must not be empty strings.",
                    param=f"input[{i}]" if not isinstance(self.input, str) else "input",
                )


class Embedding(ResponseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or a base64 string of little-endian float32.")


class EmbeddingUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
