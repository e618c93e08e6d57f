"""The recall loop's schema (python -m beam_pipelines.recall, conf/recall.yaml) and its sections:
`fasttext` (fasttext_model.py), `training` and `selection` (loop.py, select.py), `domains` and
`approval` (domains.py). Defaults follow DeepSeekMath section 2.1 where the paper states a value
(4 rounds, stop at 98% overlap, 500k positives and negatives, fastText dim 256 ...); the paper
preset (conf/experiment/recall_paper.yaml) adds the corpus-scale token budgets. Light: nothing
here imports Beam."""

from __future__ import annotations

from dataclasses import dataclass, field

from beam_pipelines.io.config import CorpusConfig
from beam_pipelines.options import BeamConfig
from stack_common.checks import (
    require_at_least,
    require_choice,
    require_non_negative,
    require_positive,
    require_range,
)
from stack_common.errors import ConfigError

APPROVAL_POLICIES = ("annotations_only", "annotations_and_auto_prefix_fraction")
FASTTEXT_LOSSES = ("softmax", "ns", "hs", "ova")
SEED_POSITIVE_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")


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
    # One thread: fastText's Hogwild SGD with several threads races on shared weights, so the same
    # training file gives a different model (and selection) on every run. 0 = all cores: faster
    # on paper-scale samples, but a round is then not reproducible (metrics.json says so).
    threads: int = 1
    seed: int = 0
    # Text normalisation, applied identically when training and scoring (the settings are saved
    # next to the model and the scorer reads them from there, not from the current config).
    lowercase: bool = True
    split_punctuation: bool = True
    # Characters of a document fed to the classifier; 0 = the whole text.
    max_characters: int = 0

    def validate(self) -> None:
        for name in ("dim", "word_ngrams", "epoch", "bucket"):
            require_positive(f"fasttext.{name}", getattr(self, name))
        require_at_least("fasttext.min_count", self.min_count, 1)
        require_range("fasttext.lr", self.lr, 0, 10, low_inclusive=False)
        require_choice("fasttext.loss", self.loss, FASTTEXT_LOSSES)
        require_non_negative("fasttext.threads", self.threads)
        require_non_negative("fasttext.max_characters", self.max_characters)


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
    # Class balance: the paper's training set is 1:1. When one class is smaller (a few hundred
    # seed pages against a pool of thousands), each of its training lines is written
    # round(larger/smaller) times, at most this many; 1 trains on the set as drawn. Without it a
    # 1:20 set teaches fastText to call every page "other" (hold-out F1 0 on the test pool).
    balance_max_repeat: int = 50
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
    # A classifier that cannot separate math from the rest stops the loop before it scores the
    # pool (and before any prefix is approved on its noise): a hold-out score spread (90th minus
    # 10th percentile) below `min_score_spread`, or, when set, hold-out F1 at 0.5 below
    # `min_holdout_f1`. 0 switches a check off. The paper's settings on a pool of ~1k pages put
    # every score within 0.0003 of 0.5; a working model spreads over most of [0, 1].
    # F1 is off by default because the hold-out negatives are pool pages, labelled "other"
    # whatever they are: on a pool that is largely math (the Debian-docs test pool is 82% SciPy)
    # a model that ranks well scores F1 < 0.1. A low F1 is logged as a warning instead.
    min_holdout_f1: float = 0.0
    min_score_spread: float = 0.05

    def validate(self) -> None:
        if not self.seed_positives:
            raise ConfigError(
                "recall needs seed positives: set training.seed_positives=[/path/openwebmath/*.parquet] "
                "(Parquet or JSONL math documents with text and url)"
            )
        for index, pattern in enumerate(self.seed_positives):
            if not pattern.endswith(SEED_POSITIVE_SUFFIXES):
                raise ConfigError(
                    f"training.seed_positives[{index}]={pattern!r} must end in .parquet, .jsonl or .jsonl.gz"
                )
        require_positive("training.positive_samples", self.positive_samples)
        require_positive("training.negative_samples", self.negative_samples)
        require_non_negative("training.discovered_positive_samples", self.discovered_positive_samples)
        require_range(
            "training.holdout_fraction", self.holdout_fraction, 0, 0.5, low_inclusive=False, high_inclusive=False
        )
        require_at_least("training.shuffle_buckets", self.shuffle_buckets, 1)
        require_at_least("training.balance_max_repeat", self.balance_max_repeat, 1)
        require_range("training.min_holdout_f1", self.min_holdout_f1, 0, 1)
        require_range("training.min_score_spread", self.min_score_spread, 0, 1)


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
        for index, budget in enumerate(self.token_budgets):
            require_positive(f"selection.token_budgets[{index}]", budget)
        for index, fraction in enumerate(self.pool_token_fractions):
            require_range(f"selection.pool_token_fractions[{index}]", fraction, 0, 1, low_inclusive=False)
        require_at_least("selection.coarse_bins", self.coarse_bins, 2)
        require_at_least("selection.fine_bins", self.fine_bins, 1)


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
        require_range(
            "domains.candidate_min_selected_fraction",
            self.candidate_min_selected_fraction,
            0,
            1,
            high_inclusive=False,
        )
        require_range("domains.prefix_max_depth", self.prefix_max_depth, 0, 8)
        for name in (
            "candidate_min_pool_pages",
            "prefix_min_pool_pages",
            "review_max_domains",
            "review_max_prefixes_per_domain",
            "report_top_domains",
        ):
            require_at_least(f"domains.{name}", getattr(self, name), 1)
        require_non_negative("domains.review_samples_per_prefix", self.review_samples_per_prefix)


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
        require_choice("approval.policy", self.policy, APPROVAL_POLICIES)
        require_range(
            "approval.auto_min_prefix_selected_fraction",
            self.auto_min_prefix_selected_fraction,
            0,
            1,
            low_inclusive=False,
        )
        require_at_least("approval.auto_min_prefix_pool_pages", self.auto_min_prefix_pool_pages, 1)


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
        require_at_least("max_rounds", self.max_rounds, 1)
        if self.round < 0 or self.round > self.max_rounds:
            raise ConfigError(f"round={self.round} must be 0 (all rounds) or 1..max_rounds ({self.max_rounds})")
        require_range("stop_overlap_fraction", self.stop_overlap_fraction, 0, 1, low_inclusive=False)
        require_non_negative("num_shards", self.num_shards)
        if self.input_dir.rstrip("/") == self.output_dir.rstrip("/"):
            raise ConfigError(f"input_dir and output_dir must differ (both are {self.input_dir!r})")
