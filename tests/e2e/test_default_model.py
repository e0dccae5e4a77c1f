"""The real default model, served with no model configuration at all: a factual question gets the right answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest


@pytest.mark.slow
def test_capital_of_france(serve_llmaas: Callable[..., Any]) -> None:
    server = serve_llmaas()  # no models in the config: SmolLM2-135M-Instruct + all-MiniLM-L6-v2
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=300)
        ids = [m.id for m in client.models.list().data]
        assert ids == ["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]
        r = client.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=32,
        )
        assert "Paris" in r.choices[0].message.content, r.choices[0].message.content
        streamed = client.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=32,
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == r.choices[0].message.content
        # The Responses API answers the same through the same chat path, and continues the conversation by id.
        first = client.responses.create(model="SmolLM2-135M-Instruct", input="What is the capital of France?",
                                        temperature=0, max_output_tokens=32)  # fmt: skip
        assert first.output_text == r.choices[0].message.content
        follow = client.responses.create(model="SmolLM2-135M-Instruct", input="Which country is that city in?",
                                         previous_response_id=first.id, temperature=0, max_output_tokens=32)  # fmt: skip
        assert "France" in follow.output_text, follow.output_text
        assert follow.usage.input_tokens_details.cached_tokens > 0  # the first turn's blocks were reused
    finally:
        server.stop()
