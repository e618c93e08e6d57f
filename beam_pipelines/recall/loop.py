"""The recall loop: rounds of (training set -> fastText -> scoring -> selection -> domain review).

One round k (DeepSeekMath section 2.1, one "iteration"):
1. approvals of round k-1 (reviewer's annotations + the optional unattended policy) name URL
   prefixes; pool pages under them that round k-1 did not select become new positives;
2. training set (Beam): a hash sample of the seed positives, the positives discovered so far,
   and a hash sample of pool negatives (pages under approved prefixes, seed URLs and, optionally,
   round k-1's selection excluded); a part is held out;
3. fastText trained on the shuffled training file; hold-out precision/recall/F1 and PR curve;
4. scoring and selection (Beam): every pool page scored, the cut for the round's token budget
   found by a two-level score histogram, the selection written in the documents/ layout,
   domain statistics, candidate math domains, URL-prefix review rows and the overlap with round
   k-1's selection;
5. metrics.json, review.yaml, annotations_template.yaml, report.html and, last, round.json.

Layout under `output_dir`: round_<k>/ (above, plus model.bin/.json, training/, new_positives/,
domains/, stats/), final/ (documents/ + summary.json: the last round's selection), report.html.

Resumability: round.json is written last, so a round without it is incomplete; a run deletes an
incomplete round and redoes it, and resumes after the last complete round. final/summary.json
is likewise written last (after clearing final/). The loop stops after round k when at least
`stop_overlap_fraction` of round k's selected pages were selected in round k-1, or at max_rounds.

Cost per round: two passes over the pool in Beam (training sample, scoring), linear in pool
text; one shuffle of the sampled negatives (bounded by the sample size) and of selection ids;
training on the machine that runs the loop, bounded by the configured sample sizes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines.accounting import DeadLetter, tally_counters
from beam_pipelines.document import Document, stable_id
from beam_pipelines.io.parquet import (
    DOCUMENTS_SUBDIR,
    SUMMARY_FILE,
    ReadDocuments,
    WriteDocuments,
    documents_pattern,
    read_json,
    write_json,
)
from beam_pipelines.options import pipeline_options
from beam_pipelines.recall import domains as domain_rules
from beam_pipelines.recall.config import RecallConfig
from beam_pipelines.recall.domains import ApprovedPrefixes, hash_unit
from beam_pipelines.recall.fasttext_model import (
    LABEL_MATH,
    LABEL_OTHER,
    DegenerateClassifierError,
    TextNormalization,
    balancing_repeats,
    degenerate_reasons,
    evaluate_holdout,
    shuffle_lines,
    small_pool_advice,
    train_classifier,
    write_model_metadata,
)
from beam_pipelines.recall.report import write_corpus_report, write_review_files, write_round_report
from beam_pipelines.recall.select import SelectByTokenBudget, TokenBudget, report_histogram
from beam_pipelines.transforms.classify import MathScoreDoFn
from beam_pipelines.transforms.extract import domain_of
from beam_pipelines.transforms.url_dedup import normalize_url
from stack_common.errors import ConfigError

ROUND_MARKER = "round.json"
TRAINING_STEP = "recall_training"
STOP_CONVERGED = "converged"
STOP_MAX_ROUNDS = "max_rounds"
log = logging.getLogger("recall")


# ----------------------------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class RoundPaths:
    output_dir: str
    number: int

    @property
    def root(self) -> str:
        return f"{self.output_dir.rstrip('/')}/round_{self.number}"

    def file(self, name: str) -> str:
        return f"{self.root}/{name}"

    model = property(lambda self: self.file("model.bin"))  # + model.json (normalisation, parameters)
    metrics = property(lambda self: self.file("metrics.json"))
    review = property(lambda self: self.file("review.yaml"))
    template = property(lambda self: self.file("annotations_template.yaml"))
    approvals = property(lambda self: self.file("approvals.json"))
    report = property(lambda self: self.file("report.html"))
    marker = property(lambda self: self.file(ROUND_MARKER))
    training = property(lambda self: self.file("training"))
    new_positives = property(lambda self: self.file("new_positives"))
    domains = property(lambda self: self.file("domains"))
    stats = property(lambda self: self.file("stats"))
    dead_letter = property(lambda self: self.file("dead_letter"))

    @property
    def selection_pattern(self) -> str:
        return documents_pattern(self.root)

    def stat(self, name: str) -> str:
        return f"{self.stats}/{name}"


def final_dir(output_dir: str) -> str:
    return f"{output_dir.rstrip('/')}/final"


def is_complete(paths: RoundPaths) -> bool:
    return FileSystems.exists(paths.marker)


def complete_rounds(output_dir: str, max_rounds: int) -> list[int]:
    """Rounds 1..n that are all complete (the first gap ends the list)."""
    done = []
    for number in range(1, max_rounds + 1):
        if not is_complete(RoundPaths(output_dir, number)):
            break
        done.append(number)
    return done


def delete_path(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def matching_files(pattern: str) -> list[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:
        return []


# ----------------------------------------------------------------------------------------------
# Checks before any heavy work


def preflight(config: RecallConfig) -> list[str]:
    """Check inputs exist and are readable; returns the seed files. Raises ConfigError (one line)."""
    if not FileSystems.exists(f"{config.input_dir.rstrip('/')}/{SUMMARY_FILE}"):
        hint = (
            " (no near-dedup stage? point input_dir at ${corpus.work_dir}/pool)"
            if config.input_dir.rstrip("/").endswith("pool_near_dedup")
            else ""
        )
        raise ConfigError(f"input_dir={config.input_dir} is not a complete stage directory (no {SUMMARY_FILE}){hint}")
    if not matching_files(documents_pattern(config.input_dir)):
        raise ConfigError(f"input_dir={config.input_dir} has no documents/*.parquet")
    seed_files = []
    for pattern in config.training.seed_positives:
        files = matching_files(pattern)
        if not files:
            raise ConfigError(f"training.seed_positives: {pattern!r} matches no file")
        if pattern.endswith(".parquet"):
            columns = parquet_columns(files[0])
            if "text" not in columns:
                raise ConfigError(
                    f"training.seed_positives: {files[0]} has no `text` column (columns: {', '.join(columns)})"
                )
        seed_files.extend(files)
    return seed_files


def pool_fingerprint(input_dir: str) -> str:
    """Identifies the pool a round read: its summary.json and its shards' names and sizes.

    Rounds compare selections by document id; ids of a rebuilt pool differ (a rewritten WARC
    has new record ids), so resuming on another pool would silently compare unrelated sets."""
    digest = hashlib.sha256()
    with FileSystems.open(f"{input_dir.rstrip('/')}/{SUMMARY_FILE}") as handle:
        digest.update(handle.read())
    for metadata in sorted(FileSystems.match([documents_pattern(input_dir)])[0].metadata_list, key=lambda m: m.path):
        digest.update(f"{metadata.path.rsplit('/', 1)[-1]}:{metadata.size_in_bytes}".encode())
    return digest.hexdigest()[:20]


def check_same_pool(config: RecallConfig, rounds: list[int]) -> None:
    current = pool_fingerprint(config.input_dir)
    for number in rounds:
        recorded = read_json(RoundPaths(config.output_dir, number).marker).get("pool_fingerprint")
        if recorded and recorded != current:
            raise ConfigError(
                f"input_dir={config.input_dir} is not the pool round {number} read (the pool was rebuilt or "
                f"changed); start again with round=1 or use a new output_dir"
            )


def parquet_columns(path: str) -> list[str]:
    with FileSystems.open(path) as handle:
        return list(pq.read_schema(handle).names)


# ----------------------------------------------------------------------------------------------
# Seed positives


class SeedDocumentDoFn(beam.DoFn):
    """A JSONL line or a Parquet row of a seed set -> Document; unusable ones -> dead letter."""

    DEAD_LETTER = "dead_letter"

    def setup(self):
        self.read = Metrics.counter(TRAINING_STEP, "seed_read")
        self.dead = Metrics.counter(TRAINING_STEP, "seed_dead_letter")

    def process(self, item):
        self.read.inc()
        try:
            row = json.loads(item) if isinstance(item, str) else item
            if not isinstance(row, dict):
                raise ValueError("a seed record must be a JSON object")
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ValueError("no `text` (a non-empty string) in the seed record")
            url = str(row.get("url") or "")
            document = Document(
                id=str(row.get("id") or stable_id("seed", url, text)),
                url=url,
                domain=domain_of(url) if url else "",
                text=text,
                title=str(row.get("title") or ""),
                source="seed",
            )
        except Exception as error:
            self.dead.inc()
            preview = item if isinstance(item, str) else json.dumps(item, default=str)
            yield beam.pvalue.TaggedOutput(
                self.DEAD_LETTER,
                DeadLetter(
                    TRAINING_STEP, "bad_seed_record", f"{type(error).__name__}: {error}", preview=preview[:200]
                ).to_json(),
            )
            return
        yield document


def read_seed_positives(pipeline, seed_files: list[str]):
    """Documents of every seed file (Parquet or JSONL, gzip by extension) and their dead letters."""
    parquet = [f for f in seed_files if f.endswith(".parquet")]
    jsonl = [f for f in seed_files if not f.endswith(".parquet")]
    records = []
    if parquet:
        wanted = [c for c in ("id", "url", "title", "text") if c in parquet_columns(parquet[0])]
        records.append(
            pipeline
            | "Seed Parquet files" >> beam.Create(parquet)
            | "Read seed Parquet" >> beam.io.ReadAllFromParquet(columns=wanted)
        )
    if jsonl:
        records.append(
            pipeline | "Seed JSONL files" >> beam.Create(jsonl) | "Read seed JSONL" >> beam.io.ReadAllFromText()
        )
    merged = records[0] if len(records) == 1 else tuple(records) | "All seed records" >> beam.Flatten()
    outputs = merged | "Seed documents" >> beam.ParDo(SeedDocumentDoFn()).with_outputs(
        SeedDocumentDoFn.DEAD_LETTER, main="documents"
    )
    return outputs["documents"], outputs[SeedDocumentDoFn.DEAD_LETTER]


# ----------------------------------------------------------------------------------------------
# Training set (Beam)


class SampleByHash(beam.PTransform):
    """About `target` elements, chosen by a hash of their id (the same ones on every run):
    keep an element iff hash(id) < target / (count - expected_exclusions)."""

    def __init__(self, target: int, salt: str, expected_exclusions: int = 0):
        super().__init__()
        self.target, self.salt, self.expected_exclusions = target, salt, expected_exclusions

    def expand(self, documents):
        target, salt, exclusions = self.target, self.salt, self.expected_exclusions
        count = documents | "Count" >> beam.combiners.Count.Globally()
        return documents | "Keep sampled" >> beam.Filter(
            lambda d, n: hash_unit(d.id, salt) < target / max(1, n - exclusions), beam.pvalue.AsSingleton(count)
        )


def join_key(document: Document) -> str:
    return document.normalized_url or (normalize_url(document.url) if document.url else f"id:{document.id}")


def row_join_key(row: dict) -> str:
    return row.get("normalized_url") or (normalize_url(row["url"]) if row.get("url") else f"id:{row['id']}")


class LabelledLineDoFn(beam.DoFn):
    """Document -> `__label__X normalised text`; hold-out lines on a tagged output."""

    HOLDOUT = "holdout"

    def __init__(self, label: str, counter: str, normalization: TextNormalization, holdout_fraction: float, salt: str):
        self.label, self.counter_name = label, counter
        self.normalization, self.holdout_fraction, self.salt = normalization, holdout_fraction, salt

    def setup(self):
        self.examples = Metrics.counter(TRAINING_STEP, self.counter_name)
        self.empty = Metrics.counter(TRAINING_STEP, "empty_text")

    def process(self, document: Document):
        text = self.normalization(document.text)
        if not text:
            self.empty.inc()
            return
        self.examples.inc()
        line = f"{self.label} {text}"
        if hash_unit(document.id, self.salt) < self.holdout_fraction:
            yield beam.pvalue.TaggedOutput(self.HOLDOUT, line)
        else:
            yield line


def _count(name: str):
    def counted(element):
        Metrics.counter(TRAINING_STEP, name).inc()
        return element

    return counted


def _unselected(keyed, counter_name: str):
    _, groups = keyed
    if groups["previous"]:
        return
    for document in groups["pool"]:
        _count(counter_name)(document)
        yield document


def _not_excluded(keyed, exclude_previous: bool):
    _, groups = keyed
    if groups["seed"]:
        _count("negatives_excluded_seed_url")(None)
        return
    if exclude_previous and groups["previous"]:
        _count("negatives_excluded_previously_selected")(None)
        return
    for document in groups["negative"]:
        yield document


def build_training_pipeline(
    pipeline,
    config: RecallConfig,
    paths: RoundPaths,
    seed_files: list[str],
    new_approvals: ApprovedPrefixes,
    all_approvals: ApprovedPrefixes,
    earlier_positive_patterns: list[str],
    previous_selected_pages: int,
) -> None:
    training = config.training
    normalization = TextNormalization.from_config(config.fasttext)
    salt = str(training.sample_seed)
    pool = pipeline | "Read pool" >> ReadDocuments(config.input_dir)
    seeds, seed_dead_letters = read_seed_positives(pipeline, seed_files)
    seed_dead_letters | "Write seed dead letters" >> beam.io.WriteToText(
        f"{paths.dead_letter}/seed_positives/part", file_name_suffix=".jsonl"
    )
    positives = [
        seeds
        | "Sample seeds" >> SampleByHash(training.positive_samples, f"seed-{salt}")
        | "Count seed positives" >> beam.Map(_count("positives_seed"))
    ]

    previous = None
    if paths.number > 1:
        previous_pattern = RoundPaths(paths.output_dir, paths.number - 1).selection_pattern
        previous = pipeline | "Read previous selection" >> beam.io.ReadFromParquet(
            previous_pattern, columns=["id", "url", "normalized_url"]
        )
    discovered = []
    if previous is not None and new_approvals:
        # Pages under the prefixes approved after round k-1 that round k-1 did not select.
        under_prefix = pool | "Under newly approved prefixes" >> beam.Filter(
            lambda d: new_approvals.match(d.domain, d.url) is not None
        )
        new_positives = (
            {
                "pool": under_prefix | "Key by id" >> beam.Map(lambda d: (d.id, d)),
                "previous": previous | "Key previous by id" >> beam.Map(lambda r: (r["id"], True)),
            }
            | "Join with previous selection" >> beam.CoGroupByKey()
            | "Not selected before" >> beam.FlatMap(_unselected, "new_positives")
        )
        new_positives | "Write new positives" >> WriteDocuments(paths.new_positives)
        discovered.append(new_positives)
    for index, pattern in enumerate(earlier_positive_patterns):
        discovered.append(
            pipeline
            | f"Read discovered positives {index}" >> beam.io.ReadFromParquet(pattern)
            | f"Discovered positives {index} to documents" >> beam.Map(Document.from_row)
        )
    if discovered:
        merged = (
            discovered[0] if len(discovered) == 1 else tuple(discovered) | "All discovered positives" >> beam.Flatten()
        )
        positives.append(
            merged
            | "Key discovered by id" >> beam.Map(lambda d: (d.id, d))
            | "One per id" >> beam.CombinePerKey(lambda documents: next(iter(documents)))
            | "Drop keys" >> beam.Values()
            | "Sample discovered" >> SampleByHash(training.discovered_positive_samples, f"discovered-{salt}")
            | "Count discovered positives" >> beam.Map(_count("positives_discovered"))
        )

    exclude_previous = training.exclude_previous_selection_from_negatives and previous is not None
    candidates = pool
    if all_approvals:
        candidates = pool | "Not under approved prefixes" >> beam.Filter(
            lambda d: all_approvals.match(d.domain, d.url) is None
        )
    sampled = candidates | "Sample negatives" >> SampleByHash(
        training.negative_samples, f"negative-{salt}", previous_selected_pages if exclude_previous else 0
    )
    join_inputs = {
        "negative": sampled | "Key negatives by URL" >> beam.Map(lambda d: (join_key(d), d)),
        "seed": seeds
        | "Seed URLs" >> beam.Filter(lambda d: bool(d.url))
        | "Key seeds by URL" >> beam.Map(lambda d: (join_key(d), True)),
    }
    if exclude_previous:
        join_inputs["previous"] = previous | "Key previous by URL" >> beam.Map(lambda r: (row_join_key(r), True))
    else:
        join_inputs["previous"] = pipeline | "No previous selection" >> beam.Create([])
    negatives = (
        join_inputs
        | "Join negatives with exclusions" >> beam.CoGroupByKey()
        | "Drop excluded negatives" >> beam.FlatMap(_not_excluded, exclude_previous)
    )

    positive_documents = positives[0] if len(positives) == 1 else tuple(positives) | "All positives" >> beam.Flatten()
    holdout_salt = f"holdout-{salt}"
    positive_lines = positive_documents | "Positive lines" >> beam.ParDo(
        LabelledLineDoFn(LABEL_MATH, "positives", normalization, training.holdout_fraction, holdout_salt)
    ).with_outputs(LabelledLineDoFn.HOLDOUT, main="train")
    negative_lines = negatives | "Negative lines" >> beam.ParDo(
        LabelledLineDoFn(LABEL_OTHER, "negatives", normalization, training.holdout_fraction, holdout_salt)
    ).with_outputs(LabelledLineDoFn.HOLDOUT, main="train")
    (
        (positive_lines["train"], negative_lines["train"])
        | "Training lines" >> beam.Flatten()
        | "Write training lines" >> beam.io.WriteToText(f"{paths.training}/train", file_name_suffix=".txt")
    )
    (
        (positive_lines[LabelledLineDoFn.HOLDOUT], negative_lines[LabelledLineDoFn.HOLDOUT])
        | "Hold-out lines" >> beam.Flatten()
        | "Write hold-out lines" >> beam.io.WriteToText(f"{paths.training}/holdout", file_name_suffix=".txt")
    )


# ----------------------------------------------------------------------------------------------
# Scoring, selection and statistics (Beam)


def _write_json_lines(pcoll, path: str, label: str):
    return (
        pcoll
        | f"{label}: to JSON" >> beam.Map(lambda row: json.dumps(row, ensure_ascii=False, sort_keys=True))
        | f"{label}: write" >> beam.io.WriteToText(path, shard_name_template="", num_shards=1)
    )


def _review_top_key(row: dict):
    return row["pool_pages"], -row["depth"], row["prefix"]


def build_scoring_pipeline(pipeline, config: RecallConfig, paths: RoundPaths, budget: TokenBudget) -> None:
    domains_config = config.domains
    scored = (
        pipeline | "Read pool" >> ReadDocuments(config.input_dir) | "Score" >> beam.ParDo(MathScoreDoFn(paths.model))
    )
    selected, cut, histogram = scored | "Select by token budget" >> SelectByTokenBudget(
        budget, config.selection.coarse_bins, config.selection.fine_bins
    )
    selected | "Write selection" >> WriteDocuments(paths.root, config.num_shards)
    _write_json_lines(cut | "Cut as dict" >> beam.Map(lambda c: c.as_dict()), paths.stat("cut.json"), "Cut")
    _write_json_lines(
        histogram | "Histogram for report" >> beam.Map(lambda h: report_histogram(h[0], h[1])),
        paths.stat("histogram.json"),
        "Histogram",
    )
    cut_side = beam.pvalue.AsSingleton(cut)

    # Domain statistics and candidate math domains.
    domain_rows = (
        scored
        | "Tally per domain"
        >> beam.Map(lambda d, c: (d.domain, domain_rules.page_tally(d.token_estimate, c.keeps(d.math_score))), cut_side)
        | "Sum per domain" >> beam.CombinePerKey(domain_rules.sum_tallies)
        | "Domain rows" >> beam.MapTuple(domain_rules.domain_row)
    )
    domain_rows | "Write domain stats" >> beam.io.WriteToParquet(
        f"{paths.domains}/part", schema=domain_rules.domain_stats_schema(), file_name_suffix=".parquet"
    )
    _write_json_lines(
        domain_rows
        | "Top domains"
        >> beam.combiners.Top.Of(
            domains_config.report_top_domains, key=lambda r: (r["selected_pages"], r["pool_pages"], r["domain"])
        ),
        paths.stat("top_domains.json"),
        "Top domains",
    )
    min_fraction, min_pages = domains_config.candidate_min_selected_fraction, domains_config.candidate_min_pool_pages
    candidates = domain_rows | "Candidate math domains" >> beam.Filter(
        domain_rules.is_candidate_domain, min_fraction, min_pages
    )
    _write_json_lines(candidates, paths.stat("candidates.jsonl"), "Candidates")
    reviewed_domains = (
        candidates
        | "Domains to review"
        >> beam.combiners.Top.Of(domains_config.review_max_domains, key=lambda r: (r["selected_pages"], r["domain"]))
        | "As a set" >> beam.Map(lambda rows: frozenset(r["domain"] for r in rows))
    )

    # URL-prefix review of the candidate domains.
    max_depth, min_prefix_pages = domains_config.prefix_max_depth, domains_config.prefix_min_pool_pages
    review = (
        scored
        | "Prefixes of candidate pages"
        >> beam.FlatMap(
            lambda d, c, reviewed: domain_rules.prefix_entries(d, c.keeps(d.math_score), reviewed, max_depth),
            cut_side,
            beam.pvalue.AsSingleton(reviewed_domains),
        )
        | "Sum per prefix" >> beam.CombinePerKey(domain_rules.PrefixStatsFn(domains_config.review_samples_per_prefix))
        | "Review rows" >> beam.MapTuple(lambda key, accumulator: domain_rules.review_row(key, accumulator))
        | "Enough pages" >> beam.Filter(lambda r: r["depth"] == 0 or r["pool_pages"] >= min_prefix_pages)
        | "Key rows by domain" >> beam.Map(lambda r: (r["domain"], r))
        | "Largest prefixes"
        >> beam.combiners.Top.PerKey(domains_config.review_max_prefixes_per_domain, key=_review_top_key)
        | "Rows" >> beam.FlatMap(lambda keyed: keyed[1])
    )
    _write_json_lines(review, paths.stat("review.jsonl"), "Review")

    # Overlap with the previous round's selection (1 = only now, 2 = only before, 3 = both).
    if paths.number > 1:
        previous_pattern = RoundPaths(paths.output_dir, paths.number - 1).selection_pattern
        now = selected | "Selected ids" >> beam.Map(lambda d: (d.id, 1))
        before = (
            pipeline
            | "Read previous selection" >> beam.io.ReadFromParquet(previous_pattern, columns=["id"])
            | "Previous ids" >> beam.Map(lambda r: (r["id"], 2))
        )
        overlap = (
            (now, before)
            | "Both selections" >> beam.Flatten()
            | "Where each page was selected" >> beam.CombinePerKey(sum)
            | "Membership" >> beam.Values()
            | "Count memberships" >> beam.combiners.Count.PerElement()
        )
        _write_json_lines(
            overlap | "Overlap rows" >> beam.MapTuple(lambda member, n: {"membership": member, "pages": n}),
            paths.stat("overlap.jsonl"),
            "Overlap",
        )


def read_json_lines(path: str) -> list[dict]:
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path) as handle:
        return [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# Training (on the machine that runs the loop)


def train_round_model(config: RecallConfig, paths: RoundPaths) -> dict:
    normalization = TextNormalization.from_config(config.fasttext)
    work = tempfile.mkdtemp(prefix=f"recall-round-{paths.number}-")
    try:
        train_shards = [_local_copy(path, work) for path in matching_files(f"{paths.training}/train*.txt")]
        holdout_shards = [_local_copy(path, work) for path in matching_files(f"{paths.training}/holdout*.txt")]
        train_file = os.path.join(work, "train.txt")
        started = time.time()
        labels: dict[str, int] = {}
        for shard in train_shards:
            for label, count in _label_counts(shard).items():
                labels[label] = labels.get(label, 0) + count
        if not labels.get(LABEL_MATH) or not labels.get(LABEL_OTHER):
            raise RuntimeError(
                f"round {paths.number}: the training set has {labels.get(LABEL_MATH, 0)} positive and "
                f"{labels.get(LABEL_OTHER, 0)} negative lines; both are needed (check seed_positives and the pool)"
            )
        repeats = balancing_repeats(labels, config.training.balance_max_repeat)
        lines = shuffle_lines(
            train_shards,
            train_file,
            config.training.shuffle_buckets,
            seed=config.training.sample_seed * 1000 + paths.number,
            repeats=repeats,
        )
        balance = "".join(f", each {label[len('__label__') :]} line x{n} to balance" for label, n in repeats.items())
        log.info(
            f"[recall] round {paths.number}: training fastText on {lines:,} lines "
            f"({labels[LABEL_MATH]:,} math, {labels[LABEL_OTHER]:,} other{balance}; dim {config.fasttext.dim}, "
            f"{config.fasttext.epoch} epochs, word n-grams {config.fasttext.word_ngrams})"
        )
        model, learning_rate = train_classifier(train_file, config.fasttext)
        training_seconds = time.time() - started
        local_model = os.path.join(work, "model.bin")
        model.save_model(local_model)
        _upload(local_model, paths.model)
        holdout_file = os.path.join(work, "holdout.txt")
        with open(holdout_file, "w", encoding="utf-8") as output:
            for shard in holdout_shards:
                with open(shard, encoding="utf-8") as lines_in:
                    shutil.copyfileobj(lines_in, output)
        holdout = evaluate_holdout(model, holdout_file)
        model_info = {
            "path": paths.model,
            "bytes": os.path.getsize(local_model),
            "train_lines": lines,
            "train_positives": labels[LABEL_MATH],
            "train_negatives": labels[LABEL_OTHER],
            "balancing_repeats": repeats,
            "training_seconds": round(training_seconds, 3),
            "learning_rate_used": learning_rate,
            # One thread and the order-independent shuffle make the model a function of the
            # training set; several threads (Hogwild) do not.
            "reproducible": config.fasttext.threads == 1,
            "vocabulary": len(model.words),
            "parameters": {
                k: getattr(config.fasttext, k)
                for k in ("dim", "lr", "word_ngrams", "min_count", "epoch", "bucket", "loss", "threads", "seed")
            },
        }
        write_model_metadata(paths.model, normalization, {"round": paths.number, **model_info})
        return {"model": model_info, "holdout": holdout}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _label_counts(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            label = line.split(" ", 1)[0]
            counts[label] = counts.get(label, 0) + 1
    return counts


def _local_copy(path: str, directory: str) -> str:
    if FileSystems.get_scheme(path) in (None, "file"):
        return path
    local = os.path.join(directory, os.path.basename(path))
    with FileSystems.open(path) as remote, open(local, "wb") as output:
        shutil.copyfileobj(remote, output, 1 << 24)
    return local


def _upload(local: str, destination: str) -> None:
    with open(local, "rb") as source, FileSystems.create(destination) as target:
        shutil.copyfileobj(source, target, 1 << 24)


# ----------------------------------------------------------------------------------------------
# One round


def round_approvals(config: RecallConfig, number: int) -> dict:
    """The prefixes approved after round `number` (reviewer + unattended policy), with their origin."""
    annotations = domain_rules.load_annotations(config.approval.annotations_dir, number)
    automatic: list[str] = []
    if config.approval.policy == "annotations_and_auto_prefix_fraction":
        review = read_json_lines(RoundPaths(config.output_dir, number).stat("review.jsonl"))
        automatic = domain_rules.auto_approved_prefixes(
            review,
            config.approval.auto_min_prefix_selected_fraction,
            config.approval.auto_min_prefix_pool_pages,
            rejected=annotations.rejected,
        )
    return {
        "after_round": number,
        "annotations_file": annotations.path,
        "annotations_file_found": annotations.exists,
        "reviewer": annotations.reviewer,
        "from_annotations": annotations.approved,
        "rejected": annotations.rejected,
        "policy": config.approval.policy,
        "auto_rule": (
            f"prefix selected fraction >= {config.approval.auto_min_prefix_selected_fraction} and "
            f"pool pages >= {config.approval.auto_min_prefix_pool_pages}"
        )
        if automatic or config.approval.policy != "annotations_only"
        else "",
        "automatic": automatic,
        "approved": sorted(set(annotations.approved) | set(automatic)),
    }


def clear_round(config: RecallConfig, number: int) -> str | None:
    """Delete what an earlier run left of round `number`; returns what that was: "complete" (the
    round is redone), "incomplete" (an attempt that was killed) or None (nothing)."""
    paths = RoundPaths(config.output_dir, number)
    if is_complete(paths):
        log.info(f"[recall] round {number}: redoing it (removing the complete round at {paths.root})")
        delete_path(paths.marker)  # first: a half-deleted round must not look complete
        delete_path(paths.root)
        return "complete"
    if FileSystems.exists(paths.root):
        log.info(f"[recall] round {number}: removing an incomplete earlier attempt at {paths.root}")
        delete_path(paths.root)
        return "incomplete"
    return None


def run_round(config: RecallConfig, number: int, seed_files: list[str]) -> dict:
    """Run round `number` from scratch, after `clear_round`; returns its round.json."""
    paths = RoundPaths(config.output_dir, number)
    started = time.time()

    # 1. Approvals after the previous round, cumulative approvals, discovered positives so far.
    approvals_by_round = [round_approvals(config, k) for k in range(1, number)]
    new_approvals = ApprovedPrefixes(approvals_by_round[-1]["approved"] if approvals_by_round else [])
    all_approvals = ApprovedPrefixes([p for a in approvals_by_round for p in a["approved"]])
    earlier_positive_patterns = [
        documents_pattern(RoundPaths(config.output_dir, k).new_positives)
        for k in range(2, number)
        if matching_files(documents_pattern(RoundPaths(config.output_dir, k).new_positives))
    ]
    previous_marker = read_json(RoundPaths(config.output_dir, number - 1).marker) if number > 1 else {}
    if approvals_by_round:
        latest = approvals_by_round[-1]
        source = latest["annotations_file"] if latest["annotations_file_found"] else f"no {latest['annotations_file']}"
        log.info(
            f"[recall] round {number}: {len(latest['approved'])} prefix(es) approved after round {number - 1} "
            f"({len(latest['from_annotations'])} from {source}, "
            f"{len(latest['automatic'])} by policy {config.approval.policy})"
        )
    write_json(paths.approvals, {"rounds": approvals_by_round, "cumulative": all_approvals.prefixes})

    # 2. Training set.
    log.info(f"[recall] round {number}: building the training set (Beam, runner {config.beam.runner})")
    pipeline = beam.Pipeline(options=pipeline_options(config.beam, job_name=f"recall-round-{number}-training"))
    build_training_pipeline(
        pipeline,
        config,
        paths,
        seed_files,
        new_approvals,
        all_approvals,
        earlier_positive_patterns,
        int(previous_marker.get("selected_pages", 0)),
    )
    result = pipeline.run()
    result.wait_until_finish()
    training_tally = tally_counters(result).get(TRAINING_STEP)
    training_counts = dict(sorted(training_tally.other.items())) if training_tally else {}

    # 3. Classifier; one that cannot separate stops the loop here, before anything is approved on it.
    classifier = train_round_model(config, paths)
    holdout = classifier["holdout"]
    log.info(
        f"[recall] round {number}: hold-out precision {holdout['precision']:.3f} recall {holdout['recall']:.3f} "
        f"F1 {holdout['f1']:.3f}, score spread {holdout['score_spread']:.4f} ({holdout['examples']} examples); "
        f"model {classifier['model']['bytes'] / 1e6:.1f} MB"
    )
    check_classifier(config, paths, classifier)

    # 4. Scoring, selection and statistics.
    budget = TokenBudget.for_round(config.selection, number)
    log.info(f"[recall] round {number}: scoring the pool and keeping the top pages up to {budget.describe()}")
    pipeline = beam.Pipeline(options=pipeline_options(config.beam, job_name=f"recall-round-{number}-scoring"))
    build_scoring_pipeline(pipeline, config, paths, budget)
    result = pipeline.run()
    result.wait_until_finish()
    scoring_counts = tally_counters(result).get("recall_score")

    # 5. Round metrics, review, report, marker.
    cut = read_json_lines(paths.stat("cut.json"))[0]
    overlap_rows = {row["membership"]: row["pages"] for row in read_json_lines(paths.stat("overlap.jsonl"))}
    overlap = None
    if number > 1:
        in_both, only_now, only_before = overlap_rows.get(3, 0), overlap_rows.get(1, 0), overlap_rows.get(2, 0)
        overlap = {
            "previous_round": number - 1,
            "in_both": in_both,
            "only_this_round": only_now,
            "only_previous_round": only_before,
            "fraction_already_selected": in_both / (in_both + only_now) if in_both + only_now else 1.0,
        }
    candidates = sorted(
        read_json_lines(paths.stat("candidates.jsonl")), key=lambda r: (-r["selected_pages"], r["domain"])
    )
    review_rows = domain_rules.sort_review_rows(read_json_lines(paths.stat("review.jsonl")))
    metrics: dict[str, Any] = {
        "round": number,
        "budget": {"rule": budget.describe(), "tokens": cut["budget_tokens"]},
        "selection": cut,
        "score_histogram": read_json_lines(paths.stat("histogram.json"))[0],
        "training": training_counts,
        "classifier": classifier,
        "overlap": overlap,
        "candidate_domains": candidates,
        "candidate_rule": {
            "min_selected_fraction": config.domains.candidate_min_selected_fraction,
            "min_pool_pages": config.domains.candidate_min_pool_pages,
        },
        "top_domains": sorted(read_json_lines(paths.stat("top_domains.json"))[0], key=lambda r: -r["selected_pages"]),
        "approvals_applied": approvals_by_round[-1] if approvals_by_round else None,
        "scoring": {
            "scored": scoring_counts.other.get("scored", 0) if scoring_counts else 0,
            "score_errors": scoring_counts.other.get("score_errors", 0) if scoring_counts else 0,
        },
        "elapsed_seconds": round(time.time() - started, 3),
    }
    write_json(paths.metrics, metrics)
    write_review_files(config, paths, metrics, review_rows)
    write_round_report(paths, metrics, review_rows)
    stop_reason = stop_decision(config, number, overlap)
    marker = {
        "round": number,
        "complete": True,
        "selected_pages": cut["selected_pages"],
        "selected_tokens": cut["selected_tokens"],
        "pool_pages": cut["pool_pages"],
        "threshold": cut["threshold"],
        "overlap_fraction": overlap["fraction_already_selected"] if overlap else None,
        "stop_reason": stop_reason,
        "pool_fingerprint": pool_fingerprint(config.input_dir),
        "config": _config_snapshot(config),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(paths.marker, marker)  # last: the round is complete from here on
    overlap_text = (
        f", {overlap['fraction_already_selected']:.1%} already selected in round {number - 1}" if overlap else ""
    )
    log.info(
        f"[recall] round {number}: selected {cut['selected_pages']:,} of {cut['pool_pages']:,} pages, "
        f"{cut['selected_tokens']:,} tokens (threshold {cut['threshold']:.4f}){overlap_text}; "
        f"{len(candidates)} candidate math domain(s)"
    )
    log.info(
        f"[recall] round {number}: review {paths.review}; approve prefixes in "
        f"{domain_rules.annotations_path(config.approval.annotations_dir, number)} (template: {paths.template})"
    )
    return marker


LOW_HOLDOUT_F1 = 0.3  # below this a round warns (see RecallTrainingConfig.min_holdout_f1)


def check_classifier(config: RecallConfig, paths: RoundPaths, classifier: dict) -> None:
    """Raise DegenerateClassifierError when the round's model cannot separate math from the rest
    (its figures stay in round_<k>/classifier.json; the round is left incomplete, so a rerun
    with better settings redoes it)."""
    holdout = classifier["holdout"]
    if holdout["f1"] < LOW_HOLDOUT_F1 and not config.training.min_holdout_f1:
        log.warning(
            f"[recall] round {paths.number}: hold-out F1 {holdout['f1']:.3f} is low. Hold-out negatives are "
            "pool pages: if the pool is largely math this is expected; otherwise check the seed positives "
            "(training.min_holdout_f1 makes this a stop)"
        )
    reasons = degenerate_reasons(holdout, config.training.min_holdout_f1, config.training.min_score_spread)
    if not reasons:
        return
    write_json(paths.file("classifier.json"), {**classifier, "degenerate": reasons})
    advice = small_pool_advice(classifier["model"]["train_lines"], config.fasttext)
    raise DegenerateClassifierError(
        f"round {paths.number}: the classifier cannot separate math from other pages ({'; '.join(reasons)}); "
        f"stopped before scoring and approving anything. Suggestion: {advice}"
    )


def stop_decision(config: RecallConfig, number: int, overlap: dict | None) -> str | None:
    """Why the loop stops after round `number` under the current config, or None to go on."""
    if overlap is not None and overlap["fraction_already_selected"] >= config.stop_overlap_fraction:
        return STOP_CONVERGED
    if number >= config.max_rounds:
        return STOP_MAX_ROUNDS
    return None


def _marker_stop(config: RecallConfig, marker: dict) -> str | None:
    overlap = (
        None if marker.get("overlap_fraction") is None else {"fraction_already_selected": marker["overlap_fraction"]}
    )
    return stop_decision(config, marker["round"], overlap)


def _config_snapshot(config: RecallConfig) -> dict:
    snapshot = asdict(config)
    snapshot.pop("beam", None)
    snapshot.pop("round", None)
    return snapshot


# ----------------------------------------------------------------------------------------------
# The loop


def write_final(config: RecallConfig, markers: list[dict], stop_reason: str) -> dict:
    """Copy the last round's selection to final/ and write final/summary.json last."""
    last = markers[-1]
    paths = RoundPaths(config.output_dir, last["round"])
    destination = final_dir(config.output_dir)
    delete_path(f"{destination}/{SUMMARY_FILE}")
    delete_path(f"{destination}/{DOCUMENTS_SUBDIR}")
    sources = matching_files(paths.selection_pattern)
    targets = [f"{destination}/{DOCUMENTS_SUBDIR}/{path.rsplit('/', 1)[-1]}" for path in sources]
    if FileSystems.get_scheme(destination) in (None, "file"):
        os.makedirs(f"{destination}/{DOCUMENTS_SUBDIR}", exist_ok=True)  # object stores need no folders
    if sources:
        FileSystems.copy(sources, targets)
    summary = {
        "pipeline": "recall",
        "source_round": last["round"],
        "stop_reason": stop_reason,
        "totals": {
            "in": last["pool_pages"],
            "kept": last["selected_pages"],
            "not_selected": last["pool_pages"] - last["selected_pages"],
        },
        "balanced": True,
        "selected_tokens": last["selected_tokens"],
        "rounds": [
            {k: m.get(k) for k in ("round", "selected_pages", "selected_tokens", "threshold", "overlap_fraction")}
            for m in markers
        ],
        "outputs": {
            "documents": documents_pattern(destination),
            "report": f"{config.output_dir.rstrip('/')}/report.html",
        },
    }
    write_json(f"{destination}/{SUMMARY_FILE}", summary)
    return summary


def _all_markers(config: RecallConfig) -> list[dict]:
    return [
        read_json(RoundPaths(config.output_dir, k).marker)
        for k in complete_rounds(config.output_dir, config.max_rounds)
    ]


def _refresh_corpus_report(config: RecallConfig) -> None:
    numbers = complete_rounds(config.output_dir, config.max_rounds)
    metrics = [read_json(RoundPaths(config.output_dir, k).metrics) for k in numbers]
    if metrics:
        write_corpus_report(config.output_dir, metrics)


def _invalidate_after(config: RecallConfig, number: int) -> None:
    """Remove final/ and rounds > number: they derive from round `number`, about to be (re)done."""
    delete_path(f"{final_dir(config.output_dir)}/{SUMMARY_FILE}")
    delete_path(final_dir(config.output_dir))
    for later in range(number + 1, config.max_rounds + 1):
        paths = RoundPaths(config.output_dir, later)
        if FileSystems.exists(paths.root):
            log.info(
                f"[recall] removing round {later} ({paths.root}): it derives from round {number}, which is being redone"
            )
            delete_path(paths.marker)
            delete_path(paths.root)


def run_recall(config: RecallConfig) -> dict:
    """Run the configured rounds; returns a status dict: complete_at_start (rounds an earlier run
    had finished), replaced ({round: "complete" | "incomplete"}: earlier output of a round run
    again), rounds_run, complete_rounds, stop_reason and the final summary (or None)."""
    seed_files = preflight(config)
    done = complete_rounds(config.output_dir, config.max_rounds)
    ran: list[int] = []
    replaced: dict[int, str] = {}

    def run_from_scratch(number: int) -> dict:
        earlier = clear_round(config, number)
        if earlier is not None:
            replaced[number] = earlier
        marker = run_round(config, number, seed_files)
        ran.append(number)
        return marker

    if config.round:
        number = config.round
        missing = [k for k in range(1, number) if k not in done]
        if missing:
            raise ConfigError(
                f"round={number} needs rounds 1..{number - 1} complete; round {missing[0]} is not "
                f"(run python -m beam_pipelines.recall round={missing[0]}, or without round= to run all)"
            )
        check_same_pool(config, list(range(1, number)))
        _invalidate_after(config, number)
        marker = run_from_scratch(number)
        stop_reason = _marker_stop(config, marker)
    else:
        check_same_pool(config, done)
        markers = _all_markers(config)
        stop_reason = _marker_stop(config, markers[-1]) if markers else None
        if markers:
            log.info(
                f"[recall] rounds {markers[0]['round']}..{markers[-1]['round']} already complete in {config.output_dir}"
                + (f"; stop rule: {stop_reason}" if stop_reason else f"; resuming at round {markers[-1]['round'] + 1}")
            )
        next_round = (markers[-1]["round"] + 1) if markers else 1
        while stop_reason is None and next_round <= config.max_rounds:
            _invalidate_after(config, next_round)
            marker = run_from_scratch(next_round)
            _refresh_corpus_report(config)
            stop_reason = _marker_stop(config, marker)
            next_round += 1
    _refresh_corpus_report(config)
    status: dict[str, Any] = {
        "complete_at_start": done,
        "replaced": replaced,
        "rounds_run": ran,
        "complete_rounds": complete_rounds(config.output_dir, config.max_rounds),
        "stop_reason": stop_reason,
        "final": None,
    }
    if stop_reason is not None:
        markers = _all_markers(config)
        summary = write_final(config, markers, stop_reason)
        status["final"] = summary
        why = (
            f"overlap with the previous round reached {config.stop_overlap_fraction}"
            if stop_reason == STOP_CONVERGED
            else "max_rounds reached"
        )
        log.info(
            f"[recall] stopped after round {markers[-1]['round']} ({why}); "
            f"final selection: {summary['outputs']['documents']} "
            f"({summary['totals']['kept']:,} pages, {summary['selected_tokens']:,} tokens)"
        )
    else:
        log.info(
            f"[recall] round(s) {ran} done; "
            f"the loop continues at round {status['complete_rounds'][-1] + 1} on the next run"
        )
    log.info(f"[recall] report: {config.output_dir.rstrip('/')}/report.html")
    return status
