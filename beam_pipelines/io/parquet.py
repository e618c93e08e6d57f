"""Documents <-> Parquet shards (one Arrow schema: `DOCUMENT_SCHEMA`), in Beam and outside it.

Layout of a stage's output directory (pool, selection, corpus ...):
    <dir>/documents/part-SSSSS-of-NNNNN.parquet   the kept documents
    <dir>/removed/<NN_step>/part-*.parquet        removed documents with step, reason, detail
    <dir>/dead_letter/<NN_step>/part-*.jsonl      unreadable inputs with their error
    <dir>/summary.json                            written last: its presence marks the stage done

Paths may be local or any Beam FileSystems URL (gs://, s3://, hdfs://).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.document import DOCUMENT_SCHEMA, Document

DOCUMENTS_SUBDIR = "documents"
SUMMARY_FILE = "summary.json"


def documents_pattern(stage_dir: str) -> str:
    return f"{stage_dir.rstrip('/')}/{DOCUMENTS_SUBDIR}/*.parquet"


class WriteDocuments(beam.PTransform):
    def __init__(self, stage_dir: str, num_shards: int = 0):
        super().__init__()
        self.prefix = f"{stage_dir.rstrip('/')}/{DOCUMENTS_SUBDIR}/part"
        self.num_shards = num_shards

    def expand(self, documents):
        return (
            documents
            | "To rows" >> beam.Map(Document.to_row)
            | "Write Parquet"
            >> beam.io.WriteToParquet(
                self.prefix, schema=DOCUMENT_SCHEMA, file_name_suffix=".parquet", num_shards=self.num_shards
            )
        )


class ReadDocuments(beam.PTransform):
    def __init__(self, stage_dir_or_pattern: str):
        super().__init__()
        pattern = stage_dir_or_pattern
        self.pattern = pattern if pattern.endswith(".parquet") else documents_pattern(pattern)

    def expand(self, pipeline):
        return (
            pipeline
            | "Read Parquet" >> beam.io.ReadFromParquet(self.pattern)
            | "To documents" >> beam.Map(Document.from_row)
        )


def iter_documents(stage_dir_or_pattern: str, columns: list[str] | None = None) -> Iterator[Document]:
    """Read documents without Beam (reports, tests, small tools), shard by shard."""
    pattern = (
        stage_dir_or_pattern if stage_dir_or_pattern.endswith(".parquet") else documents_pattern(stage_dir_or_pattern)
    )
    for path in sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list):
        with FileSystems.open(path) as handle:
            table = pq.read_table(handle, columns=columns)
        for row in table.to_pylist():
            yield Document.from_row(row)


def count_rows(pattern: str) -> int:
    total = 0
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(metadata.path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def write_json(path: str, payload: dict[str, Any]) -> None:
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=False).encode("utf-8"))


def read_json(path: str) -> dict[str, Any]:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def clear_stage_dir(stage_dir: str) -> None:
    """Remove a previous run's outputs so shards of two runs never mix (summary first, so a
    half-cleared directory never looks complete)."""
    stage_dir = stage_dir.rstrip("/")
    summary = f"{stage_dir}/{SUMMARY_FILE}"
    if FileSystems.exists(summary):
        FileSystems.delete([summary])
    for subdir in (DOCUMENTS_SUBDIR, "removed", "dead_letter"):
        path = f"{stage_dir}/{subdir}"
        if FileSystems.exists(path):
            FileSystems.delete([path])
