"""Text a client sends must be valid Unicode: finding lone surrogates in decoded JSON.

Python's `json` turns the escape `\\ud800` (and, for bytes, CESU-8 `ED A0 80`) into a lone surrogate: a `str` that
cannot be encoded as UTF-8, so tokenizers, databases and log handlers fail on it later, far from the request. Every
JSON a client sends (request bodies in `llmaas.api.body_limit`, training files in `llmaas.training.files`) is checked
here once, right after decoding, and refused with the path of the offending value. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from typing import Any

# A \uD800-\uDFFF escape somewhere in JSON text: the only way (besides CESU-8 bytes, which strict UTF-8 decoding
# refuses) to get a surrogate out of json.loads. Bodies without one skip the walk.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def lone_surrogate_path(value: Any, path: str = "") -> str | None:
    """The dotted path (`messages[0].content`) of the first string, key or value, holding a lone surrogate; None if none.

    A key with a surrogate is reported at the key itself (`metadata.<key>` cannot be printed, so the parent's path).
    """
    if isinstance(value, str):
        return (path or "body") if has_surrogate(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and has_surrogate(key):
                return path or "body"
            found = lone_surrogate_path(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None
