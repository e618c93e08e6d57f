"""A tokenizer's identity: the SHA-256 of its `tokenizer.json`, the file that fixes every token id.

The tokenize step records it (with the end-of-document id) in each source's summary.json, and a
training run compares it with the tokenizer it trains with, so a dataset made by another tokenizer
is refused before any step instead of training on ids that mean something else. Chat templates
and other tokenizer_config.json settings do not change the ids of a text and are not part of it;
the end-of-document id, which tokenizer_config.json can choose, is recorded and compared beside it.
Cost: one read of the file (a few MB), streamed.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

_CHUNK_BYTES = 1 << 20


def stream_sha256(handle: BinaryIO) -> str:
    """The hex SHA-256 of everything `handle` still holds."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
        digest.update(chunk)
    return digest.hexdigest()


def tokenizer_sha256(tokenizer_json: str) -> str:
    """The identity of the local tokenizer.json at `tokenizer_json`."""
    with open(tokenizer_json, "rb") as handle:
        return stream_sha256(handle)
