"""`POST /v1/classifications` (llmaas extension): label probabilities for texts, scored by a chat model.

Each label is scored as the assistant's whole answer to the text (the user's message); probabilities are the
softmax over the labels' total log-likelihoods. Counts are bounded here and by `limits.max_classification_*`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from llmaas.api.protocol.common import OpenAIBaseModel, ResponseModel, Usage
from llmaas.config import Limits
from llmaas.errors import InvalidRequest

Text = Annotated[str, Field(min_length=1, max_length=100_000)]
Label = Annotated[str, Field(min_length=1, max_length=256)]


class ClassificationRequest(OpenAIBaseModel):
    model: str = Field(min_length=1, max_length=512, description="A chat model or a fine-tuned ft:… model.")
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=10_000)] = Field(
        description="Text(s) to classify."
    )
    labels: Annotated[list[Label], Field(min_length=2, max_length=1000)] = Field(description="Candidate answers.")

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def check_limits(self, limits: Limits) -> None:
        if len(self.inputs) > limits.max_classification_inputs:
            raise InvalidRequest(f"At most {limits.max_classification_inputs} inputs per request.", param="input")
        if len(self.labels) > limits.max_classification_labels:
            raise InvalidRequest(f"At most {limits.max_classification_labels} labels per request.", param="labels")
        if len(set(self.labels)) != len(self.labels):
            raise InvalidRequest("Labels must be distinct.", param="labels")


class Classification(ResponseModel):
    index: int
    label: str
    scores: dict[str, float]


class ClassificationResponse(ResponseModel):
    object: str = "list"
    model: str
    data: list[Classification]
    usage: Usage
