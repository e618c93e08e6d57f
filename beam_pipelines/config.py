"""The corpus pipelines' top-level schemas (one per entry point: prepare, dedup, decontaminate,
tokenize, train_tokenizer) and the Hydra registration of every schema. Each section's schema,
with its defaults and checks, lives beside the component it configures:

    beam                       options.py
    corpus, read, source       io/config.py
    extract, language, quality, dedup, minhash, decontamination, benchmarks, tokenizer
                               transforms/config.py
    recall (its entry point's schema and sections)   recall/config.py

YAML files under `conf/` pick presets and set only what differs from these defaults. Every schema
has `validate()`, which the CLI runs before any pipeline is built, so a bad value fails with one
line. Nothing here imports Beam.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from beam_pipelines.io.config import CorpusConfig, ReadConfig, TextSourceConfig
from beam_pipelines.options import BeamConfig
from beam_pipelines.recall.config import RecallConfig
from beam_pipelines.transforms.config import (
    BENCHMARK_FORMATS,
    BenchmarkSource,
    DecontaminationConfig,
    ExtractConfig,
    LanguageConfig,
    MinHashConfig,
    PoolDedupConfig,
    QualityConfig,
    TokenizerConfig,
)
from stack_common.checks import (
    require_at_least,
    require_choice,
    require_non_negative,
    require_not_empty,
    require_positive,
)
from stack_common.errors import ConfigError

__all__ = ["register_configs"]


def _require_distinct_directories(input_dir: str, output_dir: str) -> None:
    if input_dir.rstrip("/") == output_dir.rstrip("/"):
        raise ConfigError(
            f"output_dir={output_dir!r} must differ from input_dir (the output directory is cleared first)"
        )


@dataclass
class PrepareConfig:
    """python -m beam_pipelines.prepare (conf/prepare.yaml)."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedup: PoolDedupConfig = field(default_factory=PoolDedupConfig)
    # Where the pool goes; by default inside the corpus work directory.
    output_dir: str = "${corpus.work_dir}/pool"
    # Parquet shards of the pool; 0 lets the runner choose.
    num_shards: int = 0

    def validate(self) -> None:
        for section in (self.corpus, self.beam, self.read, self.extract, self.language, self.quality):
            section.validate()
        require_non_negative("num_shards", self.num_shards)


@dataclass
class DedupConfig:
    """python -m beam_pipelines.dedup (conf/dedup.yaml)."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    # A stage directory (documents/*.parquet) or a Parquet file pattern.
    input_dir: str = "${corpus.work_dir}/pool"
    output_dir: str = "${corpus.work_dir}/pool_near_dedup"
    # Intermediate edges and candidate lists (any FileSystems path); removed after success
    # unless keep_work_files.
    work_dir: str = "${output_dir}/work"
    keep_work_files: bool = False
    # Must stay 0: the kept documents are written one file per input file.
    num_shards: int = 0

    def validate(self) -> None:
        for section in (self.corpus, self.beam, self.minhash):
            section.validate()
        for name in ("input_dir", "output_dir", "work_dir"):
            require_not_empty(name, getattr(self, name))
        _require_distinct_directories(self.input_dir, self.output_dir)
        require_non_negative("num_shards", self.num_shards)


def _default_benchmarks() -> list[BenchmarkSource]:
    # The paper's decontamination sets, downloaded once by the user into benchmarks_dir (no
    # dataset hub here); each is read in its own public format.
    return [
        BenchmarkSource(name=name, path=f"${{benchmarks_dir}}/{name}", format=name)
        for name in ("gsm8k", "math", "cmath", "agieval")
    ]


@dataclass
class DecontaminateConfig:
    """python -m beam_pipelines.decontaminate (conf/decontaminate.yaml)."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    benchmarks_dir: str = "data/benchmarks"
    benchmarks: list[BenchmarkSource] = field(default_factory=_default_benchmarks)
    # Sources whose path matches no file are skipped with a warning; none found is an error
    # unless this is false (then the corpus passes through unchanged, and the summary says so).
    require_benchmarks: bool = True
    input_dir: str = "${corpus.work_dir}/recall/final"
    output_dir: str = "${corpus.work_dir}/corpus"
    num_shards: int = 0

    def validate(self) -> None:
        for section in (self.corpus, self.beam, self.decontamination):
            section.validate()
        names = [source.name for source in self.benchmarks]
        for index, source in enumerate(self.benchmarks):
            if not source.name or not source.path:
                raise ConfigError(f"benchmarks[{index}] needs a name and a path")
            require_choice(f"benchmarks[{index}].format", source.format, BENCHMARK_FORMATS)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"benchmark names must be unique: {', '.join(duplicates)}")
        for name in ("input_dir", "output_dir"):
            require_not_empty(name, getattr(self, name))
        _require_distinct_directories(self.input_dir, self.output_dir)
        require_non_negative("num_shards", self.num_shards)


@dataclass
class TokenizeConfig:
    """python -m beam_pipelines.tokenize (conf/tokenize.yaml)."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    source: TextSourceConfig = field(default_factory=TextSourceConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    # The dataset prefix of a source is `<output_dir>/<source.name>`; its summary, removed/ and
    # dead_letter/ folders go in the directory of the same name beside the .bin/.idx files.
    output_dir: str = "${corpus.work_dir}/tokenized"
    # Encoding batches: up to this many documents or characters per encode_batch call.
    batch_documents: int = 256
    batch_characters: int = 2_000_000
    # Longer documents are dropped (reason too_long): bounds one call's memory (~10 MB of text).
    max_characters: int = 10_000_000
    # A worker starts a new shard after this many documents (4 bytes of lengths each in memory).
    max_documents_per_shard: int = 1_000_000
    # Keep the per-worker shards after the merge (debugging); they are deleted by default.
    keep_shards: bool = False
    # The summary compares the records the pipeline read with the records the input holds, so a
    # run that loses input fails instead of reporting "balanced". Parquet inputs are counted from
    # their footers (cheap, always); JSONL inputs must be read once more by the launching process,
    # so only when they total at most this many bytes (0: never; larger inputs are logged as
    # unchecked).
    count_jsonl_input_up_to_bytes: int = 1 << 30

    def validate(self) -> None:
        for section in (self.corpus, self.beam, self.source, self.tokenizer):
            section.validate()
        require_not_empty("output_dir", self.output_dir)
        for name in ("batch_documents", "batch_characters", "max_characters", "max_documents_per_shard"):
            require_positive(name, getattr(self, name))
        if self.count_jsonl_input_up_to_bytes < 0:
            raise ConfigError(
                f"count_jsonl_input_up_to_bytes={self.count_jsonl_input_up_to_bytes}: "
                "must be >= 0 (0 turns the check off)"
            )


@dataclass
class TrainTokenizerConfig:
    """A byte-level BPE trained with Hugging Face `tokenizers`, for small experiments
    (python -m beam_pipelines.train_tokenizer, conf/train_tokenizer.yaml)."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    source: TextSourceConfig = field(default_factory=TextSourceConfig)
    output_dir: str = "${corpus.work_dir}/tokenizer"
    vocab_size: int = 32000
    min_frequency: int = 2
    # Training reads at most this many characters (the trainer's word counts live in memory).
    max_characters: int = 200_000_000
    eod_token: str = "<|endoftext|>"
    extra_special_tokens: list[str] = field(default_factory=list)
    # Split numbers into single digits before BPE (DeepSeekMath's tokenizer choice for arithmetic).
    individual_digits: bool = True

    def validate(self) -> None:
        self.corpus.validate()
        self.source.validate()
        # The 256 byte symbols, the end-of-document token and the extra special tokens, plus one merge.
        require_at_least("vocab_size", self.vocab_size, 257 + 1 + len(self.extra_special_tokens))
        require_at_least("min_frequency", self.min_frequency, 1)
        require_positive("max_characters", self.max_characters)
        require_not_empty("eod_token", self.eod_token)


def register_configs() -> None:
    """Register the schemas (idempotent). Group files name them in their defaults lists."""
    store = ConfigStore.instance()
    store.store(name="prepare_schema", node=PrepareConfig)
    store.store(name="dedup_schema", node=DedupConfig)
    store.store(name="decontaminate_schema", node=DecontaminateConfig)
    store.store(name="tokenize_schema", node=TokenizeConfig)
    store.store(name="train_tokenizer_schema", node=TrainTokenizerConfig)
    store.store(name="recall_schema", node=RecallConfig)
    store.store(group="beam", name="beam_schema", node=BeamConfig)
    store.store(group="corpus", name="corpus_schema", node=CorpusConfig)
    store.store(group="source", name="source_schema", node=TextSourceConfig)
    store.store(group="quality", name="quality_schema", node=QualityConfig)
