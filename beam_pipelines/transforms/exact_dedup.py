"""Exact-content deduplication: one document per hash of its normalised text.

Normalisation (case, Unicode NFKC, whitespace) makes copies that differ only in layout collide;
near-duplicates are the MinHash step's job. Survivor rule: the earliest fetch (the original),
then the smallest id. Losers go to `removed/06_exact_dedup/` with the survivor's id.
Scale: a 128-bit xxHash per document and one GroupByKey on it; groups are streamed, not held.
"""

from __future__ import annotations

import unicodedata

import apache_beam as beam
import xxhash

from beam_pipelines.accounting import REMOVED
from beam_pipelines.document import Document
from beam_pipelines.transforms.url_dedup import KeepBestPerKey, ReverseOrder

EXACT_DEDUP_STEP = "06_exact_dedup"


def normalize_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def content_hash(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(normalize_text(text).encode("utf-8", "surrogatepass"))


def _original_rank(document: Document) -> tuple:
    # Higher is better: the earliest fetch date wins, then the smallest id.
    return (ReverseOrder(document.fetch_date), ReverseOrder(document.id))


class ExactDedup(beam.PTransform):
    """Documents -> one document per content hash; `.removed` holds the duplicates' rows."""

    def expand(self, documents):
        return (
            documents
            | "Hash text" >> beam.Map(_with_content_hash)
            | "Key by hash" >> beam.Map(lambda d: (d.content_hash, d))
            | "Group by hash" >> beam.GroupByKey()
            | "Keep original"
            >> beam.ParDo(KeepBestPerKey(EXACT_DEDUP_STEP, "duplicate_text", _original_rank)).with_outputs(
                REMOVED, main="kept"
            )
        )


def _with_content_hash(document: Document) -> Document:
    document.content_hash = content_hash(document.text)
    return document
