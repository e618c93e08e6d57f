"""The one record that flows through every corpus step, and its Arrow schema.

A `Document` is created by `prepare` from one WARC response record and is carried, unchanged in
shape, through recall, dedup, decontamination and tokenization. Steps fill fields; none invents
a dict of its own. Removed documents keep the same fields plus why they were removed
(`REMOVED_SCHEMA`), so a reviewer can read `removed/` with the same tools as the pool.

Cost: one object per page; nothing here holds more than one document.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa

from beam_pipelines.text_units import TextUnits


@dataclass(slots=True)
class Document:
    """One web page (or one document of another source) and everything we learned about it."""

    id: str
    url: str = ""
    domain: str = ""
    text: str = ""
    title: str = ""
    source: str = "commoncrawl"
    language: str = ""
    language_score: float = 0.0
    # Count of math spans that extraction kept as delimited TeX (0 for prose pages).
    math_spans: int = 0
    # Named quality signals (gopher_*, c4_*...): floats so every rule reads the same way.
    quality: dict[str, float] = field(default_factory=dict)
    # Rough token count (whitespace words x 1.3): the recall loop budgets by it before the real
    # tokenizer has run.
    token_estimate: int = 0
    # Math classifier probability, filled by the recall loop (None before scoring).
    math_score: float | None = None
    # Provenance: where the bytes came from.
    warc_file: str = ""
    warc_offset: int = -1
    warc_record_id: str = ""
    fetch_date: str = ""
    content_type: str = ""
    charset: str = ""
    # Normalised URL used as the URL-dedup key.
    normalized_url: str = ""
    # Hash of the normalised text used as the exact-dedup key (hex).
    content_hash: str = ""

    def to_row(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in _FIELDS}
        row["quality"] = list(self.quality.items())
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Document":
        values = {name: row[name] for name in _FIELD_NAMES if name in row and row[name] is not None}
        quality = values.get("quality")
        if quality is not None and not isinstance(quality, dict):
            values["quality"] = dict(quality)
        return cls(**values)

    def replace(self, **changes: Any) -> "Document":
        return dataclasses.replace(self, **changes)


_FIELDS = dataclasses.fields(Document)
_FIELD_NAMES = tuple(f.name for f in _FIELDS)

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("text", pa.large_string()),
        pa.field("title", pa.string()),
        pa.field("source", pa.string()),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("math_spans", pa.int32()),
        pa.field("quality", pa.map_(pa.string(), pa.float64())),
        pa.field("token_estimate", pa.int64()),
        pa.field("math_score", pa.float32()),
        pa.field("warc_file", pa.string()),
        pa.field("warc_offset", pa.int64()),
        pa.field("warc_record_id", pa.string()),
        pa.field("fetch_date", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("charset", pa.string()),
        pa.field("normalized_url", pa.string()),
        pa.field("content_hash", pa.string()),
    ]
)
assert DOCUMENT_SCHEMA.names == list(_FIELD_NAMES), "schema and dataclass must list the same fields"

# A removed document: the whole record, the step that removed it, why, and a detail such as the
# surviving duplicate's id or the benchmark item that matched.
REMOVED_SCHEMA = (
    DOCUMENT_SCHEMA.append(pa.field("removed_step", pa.string()))
    .append(pa.field("removed_reason", pa.string()))
    .append(pa.field("removed_detail", pa.string()))
)


def removed_row(document: Document, step: str, reason: str, detail: str = "") -> dict[str, Any]:
    row = document.to_row()
    row.update(removed_step=step, removed_reason=reason, removed_detail=detail)
    return row


def documents_to_table(documents: Iterable[Document]) -> pa.Table:
    return pa.Table.from_pylist([d.to_row() for d in documents], schema=DOCUMENT_SCHEMA)


def table_to_documents(table: pa.Table) -> list[Document]:
    return [Document.from_row(row) for row in table.to_pylist()]


def stable_id(*parts: str) -> str:
    """A short, stable id from provenance (same input bytes -> same id on every run and runner)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=12)
    return digest.hexdigest()


def estimate_tokens(text: str) -> int:
    """About as many tokens as the DeepSeek tokenizer gives (the tokenize step reports exact
    counts later): per space-delimited word and per CJK character (beam_pipelines/text_units.py)."""
    return TextUnits.of(text).token_estimate
