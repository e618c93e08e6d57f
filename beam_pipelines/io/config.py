"""The corpus pipelines' input sections: `corpus` (a build's inputs and work directory, shared with
the training recipes' data presets), `read` (WARC reading, warc.py) and `source` (one text source
to tokenize, text_sources.py). Light: nothing here imports Beam."""

from __future__ import annotations

from dataclasses import dataclass, field

from stack_common.checks import require_choice, require_fraction, require_not_empty, require_positive
from stack_common.errors import ConfigError

SOURCE_FORMATS = ("documents", "parquet", "jsonl")
_SOURCE_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass
class CorpusConfig:
    """One corpus build: its inputs and the directory every stage writes under.

    Stage outputs: `<work_dir>/pool` (prepare), `<work_dir>/pool_near_dedup` (MinHash near-dedup),
    `<work_dir>/recall/round_<k>` and `<work_dir>/recall/final` (recall rounds), `<work_dir>/corpus`
    (decontamination), `<work_dir>/tokenized/<source>` (Megatron indexed datasets).
    The defaults are the embedded sample (conf/corpus/sample.yaml).
    """

    name: str = "sample"
    work_dir: str = "outputs/corpus/sample"
    # WARC files or patterns (local, gs://, s3://, hdfs://). Empty: build the embedded sample.
    warc_inputs: list[str] = field(default_factory=list)
    # Sample build (used when warc_inputs is empty): pages per group, to size the demo.
    sample_max_math_pages: int = 400
    sample_max_other_pages: int = 400

    def validate(self) -> None:
        require_not_empty("corpus.work_dir", self.work_dir)


@dataclass
class ReadConfig:
    # Common Crawl truncates payloads at 1 MiB; 10 MiB keeps other crawls' pages and still bounds
    # a worker's memory per record.
    max_record_bytes: int = 10 * 1024 * 1024
    # A page whose text has more than this fraction of undecodable characters is dead-lettered.
    max_replacement_fraction: float = 0.01

    def validate(self) -> None:
        require_positive("read.max_record_bytes", self.max_record_bytes)
        require_fraction("read.max_replacement_fraction", self.max_replacement_fraction)


@dataclass
class TextSourceConfig:
    """One named text source. Its tokenized dataset is `<tokenize.output_dir>/<name>.bin/.idx`.

    Formats: `documents` = a stage directory of our Document Parquet (`<input>/documents/*.parquet`);
    `parquet` / `jsonl` = file patterns (local, gs://, ...; .gz/.bz2/.zst JSONL is decompressed by
    its suffix) whose records carry the text in `text_field` and, optionally, an id in `id_field`.
    The defaults are this project's corpus (conf/source/math_corpus.yaml).
    """

    name: str = "math_corpus"
    format: str = "documents"
    input: str = "${corpus.work_dir}/corpus"
    text_field: str = "text"
    # Empty, or a record without it: the id is a hash of the file name and the record.
    id_field: str = "id"

    def validate(self) -> None:
        if not self.name or not set(self.name) <= _SOURCE_NAME_CHARACTERS or self.name.startswith("."):
            raise ConfigError(f"source.name={self.name!r} must be a file name: letters, digits, '_', '-', '.'")
        require_choice("source.format", self.format, SOURCE_FORMATS)
        if not self.input or self.input == "???":
            raise ConfigError(
                f"source.input is required for source {self.name!r} (a file pattern, e.g. "
                f"source.input='/data/{self.name}/*.jsonl.zst')"
            )
        require_not_empty("source.text_field", self.text_field)
