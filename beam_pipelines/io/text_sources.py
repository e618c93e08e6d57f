"""Text sources for tokenization: our Document Parquet, or any JSONL / Parquet with a text field.

One named source (`TextSourceConfig`) becomes a PCollection of `Document`s (id, text, source) so
web pages, code, arXiv papers and plain text enter the tokenizer the same way:
- `documents`: a stage directory (`<input>/documents/*.parquet`), columns id and text only;
- `parquet`: files matching `input`, columns `text_field` (+ `id_field` when present);
- `jsonl`: files matching `input`, one JSON object per line (compression from the suffix:
  .gz, .bz2, .zst, ...); lines are read as bytes so a bad byte is one dead letter, not a crash;
  blank lines are not records and are skipped.
A record without a usable text (missing, null, not a string) or an unparsable line is a
`DeadLetter` of the tokenize step; each record read counts as `in` of that step.
Outside Beam, `iter_source_texts` streams the texts (tokenizer training, benchmarks).
Cost: linear in input bytes; one record in memory at a time per worker.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.accounting import DEAD_LETTER, DeadLetter, StepCounters, bytes_preview
from beam_pipelines.document import Document, stable_id
from beam_pipelines.io.config import TextSourceConfig
from beam_pipelines.io.parquet import count_rows, documents_pattern
from stack_common.errors import ConfigError

TOKENIZE_STEP = "09_tokenize"


def document_from_record(
    record: Any, text_field: str, id_field: str, source_name: str, origin: str, fallback_key: str
) -> Document | DeadLetter:
    """One record (a JSON object or a Parquet row) -> a Document, or a DeadLetter saying why not.

    `origin` is the file it came from (for the dead letter); `fallback_key` identifies the
    record within the source when it has no id (the id is then a stable hash of both).
    """
    if not isinstance(record, dict):
        return DeadLetter(
            TOKENIZE_STEP,
            "not_an_object",
            f"record is a {type(record).__name__}, expected an object",
            source=origin,
            preview=repr(record)[:200],
        )
    text = record.get(text_field)
    raw_id = record.get(id_field) if id_field else None
    document_id = str(raw_id) if raw_id not in (None, "") else stable_id(source_name, origin, fallback_key)
    if text is None:
        return DeadLetter(
            TOKENIZE_STEP,
            "missing_text",
            f"no {text_field!r} field (fields: {', '.join(sorted(map(str, record))[:20])})",
            source=origin,
            record_id=document_id,
        )
    if not isinstance(text, str):
        return DeadLetter(
            TOKENIZE_STEP,
            "text_not_a_string",
            f"{text_field!r} is a {type(text).__name__}",
            source=origin,
            record_id=document_id,
            preview=repr(text)[:200],
        )
    return Document(id=document_id, text=text, source=source_name)


def parse_json_line(
    line: bytes, text_field: str, id_field: str, source_name: str, origin: str
) -> Document | DeadLetter:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, ValueError) as error:
        return DeadLetter(
            TOKENIZE_STEP,
            "bad_json",
            f"{type(error).__name__}: {error}",
            source=origin,
            preview=bytes_preview(line, 200),
        )
    return document_from_record(record, text_field, id_field, source_name, origin, _content_key(line))


def _content_key(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


class _RecordsToDocuments(beam.DoFn):
    """Counts every record as `in` of the tokenize step and dead-letters unusable ones."""

    def __init__(self, source: TextSourceConfig, records_are_json_lines: bool):
        self.text_field = source.text_field
        self.id_field = source.id_field
        self.source_name = source.name
        self.records_are_json_lines = records_are_json_lines

    def setup(self):
        self.counters = StepCounters(TOKENIZE_STEP)

    def process(self, element):
        if self.records_are_json_lines:
            origin, line = element
            # A blank line is not a record (files often end with one): neither counted nor kept.
            outcome = (
                parse_json_line(line, self.text_field, self.id_field, self.source_name, origin)
                if line.strip()
                else None
            )
        else:
            key = _content_key(repr(sorted(element.items())).encode("utf-8", "backslashreplace"))
            outcome = document_from_record(element, self.text_field, self.id_field, self.source_name, "", key)
        if outcome is None:
            pass
        elif isinstance(outcome, DeadLetter):
            self.counters.count_in()
            self.counters.count_dead_letter(outcome.kind)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, outcome.to_json())
        else:
            self.counters.count_in()
            yield outcome


def source_pattern(source: TextSourceConfig) -> str:
    if source.format == "documents":
        return source.input if source.input.endswith(".parquet") else documents_pattern(source.input)
    return source.input


def source_columns(source: TextSourceConfig) -> list[str] | None:
    """The Parquet columns to read (None for JSONL); checked against the first file's schema."""
    if source.format == "jsonl":
        return None

    matches = FileSystems.match([source_pattern(source)])[0].metadata_list
    if not matches:
        raise ConfigError(f"source.input={source.input!r}: no files match {source_pattern(source)}")
    with FileSystems.open(matches[0].path) as handle:
        names = set(pq.read_schema(handle).names)
    if source.text_field not in names:
        raise ConfigError(
            f"source.text_field={source.text_field!r} is not a column of {matches[0].path} (columns: "
            f"{', '.join(sorted(names))})"
        )
    columns = [source.text_field]
    if source.id_field and source.id_field in names:
        columns.append(source.id_field)
    return columns


def check_source(source: TextSourceConfig) -> None:
    """Fail before the pipeline (one line) when the input matches nothing or lacks the column."""
    if source.format == "jsonl":
        if not FileSystems.match([source.input])[0].metadata_list:
            raise ConfigError(f"source.input={source.input!r} matches no file")
        return
    source_columns(source)


def count_source_records(source: TextSourceConfig, jsonl_up_to_bytes: int) -> int | None:
    """How many records `ReadTextSource` must count as `in` for this source, found without Beam;
    None when not counted. Parquet: the files' footers (cheap). JSONL: the non-blank lines (the
    reader's rule: records end at b"\\n", a blank line is not a record), read in this process,
    so only when the files total at most `jsonl_up_to_bytes` (0: never)."""
    if source.format != "jsonl":
        return count_rows(source_pattern(source))
    files = FileSystems.match([source.input])[0].metadata_list
    if jsonl_up_to_bytes <= 0 or sum(m.size_in_bytes for m in files) > jsonl_up_to_bytes:
        return None
    records = 0
    for metadata in files:
        records += sum(1 for line in _file_lines(metadata.path) if line.strip())
    return records


def _file_lines(path: str) -> Iterator[bytes]:
    """The lines of a file, decompressed by suffix like the Beam reader. Beam's compressed-file
    handles offer readline() but are not iterable."""
    with FileSystems.open(path) as handle:
        while line := handle.readline():
            yield line


class ReadTextSource(beam.PTransform):
    """A configured source -> Documents (main output) and dead letters (`DEAD_LETTER`)."""

    def __init__(self, source: TextSourceConfig):
        super().__init__()
        self.source = source

    def expand(self, pipeline):
        source = self.source
        if source.format == "jsonl":
            records = pipeline | "Read JSONL" >> beam.io.ReadFromTextWithFilename(
                source.input, coder=beam.coders.BytesCoder()
            )
        else:
            records = pipeline | "Read Parquet" >> beam.io.ReadFromParquet(
                source_pattern(source), columns=source_columns(source)
            )
        return records | "To documents" >> beam.ParDo(
            _RecordsToDocuments(source, source.format == "jsonl")
        ).with_outputs(DEAD_LETTER, main="documents")


def iter_source_texts(source: TextSourceConfig, max_characters: int | None = None) -> Iterator[str]:
    """The source's texts in file order, without Beam, stopping after `max_characters`.
    Records that would be dead letters are skipped."""
    paths = sorted(m.path for m in FileSystems.match([source_pattern(source)])[0].metadata_list)
    seen = 0

    def records():
        for path in paths:
            if source.format == "jsonl":
                for line in _file_lines(path):
                    if not line.strip():
                        continue
                    document = parse_json_line(line.rstrip(b"\r\n"), source.text_field, "", source.name, path)
                    if isinstance(document, Document):
                        yield document.text
            else:
                with FileSystems.open(path) as handle:
                    parquet = pq.ParquetFile(handle)
                    for batch in parquet.iter_batches(columns=[source.text_field], batch_size=1024):
                        for text in batch.column(0).to_pylist():
                            if isinstance(text, str):
                                yield text

    for text in records():
        if max_characters is not None and seen >= max_characters:
            return
        seen += len(text)
        yield text
