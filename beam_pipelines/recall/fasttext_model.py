"""The math classifier of the recall loop: text normalisation, fastText training, hold-out metrics.

DeepSeekMath (section 2.1) trains a fastText model on 500k OpenWebMath positives and 500k Common
Crawl negatives (dim 256, lr 0.1, word n-grams 3, min count 3, 3 epochs) and retrains it every
round. This module holds everything about that model that does not need Beam:

- `TextNormalization`: the one function that turns a document into a fastText line, for training
  and scoring alike. fastText refuses newlines and splits on whitespace only, so whitespace is
  collapsed, and (by default) text is lower-cased and punctuation split off words so that `x^2`,
  `\\frac{a}{b}` and `(see` share tokens with their parts. Its settings are saved beside the model
  (`model.json`) and the scorer reads them from there, so a changed config cannot make scoring
  disagree with training.
- `shuffle_lines`: a bounded-memory shuffle of the training file (SGD over a file sorted by
  source learns the last source best).
- `train_classifier`, `evaluate_holdout`: training with the configured settings and the hold-out
  precision / recall / F1 / PR curve each round reports.

Cost: normalisation is linear in text length; training is linear in training-set tokens x epochs
(fastText, on the machine that runs the loop); the shuffle holds one bucket (lines / buckets) in
memory; evaluation holds the hold-out scores (one float per hold-out line).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import string
import tempfile
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import fasttext
import numpy as np
import xxhash
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.io.parquet import read_json, write_json
from stack_common.errors import ConfigError

log = logging.getLogger(__name__)

LABEL_MATH = "__label__math"
LABEL_OTHER = "__label__other"

# Every ASCII punctuation character becomes a token of its own. One str.replace per character
# present is ~6x faster than str.translate to multi-character strings or a regex (measured).
_PUNCTUATION = tuple((c, f" {c} ") for c in string.punctuation)


@dataclass(frozen=True)
class TextNormalization:
    lowercase: bool = True
    split_punctuation: bool = True
    max_characters: int = 0

    def __call__(self, text: str) -> str:
        """One line of whitespace-separated tokens, never containing a newline."""
        if self.max_characters:
            text = text[: self.max_characters]
        if self.lowercase:
            text = text.lower()
        if self.split_punctuation:
            for character, spaced in _PUNCTUATION:
                if character in text:
                    text = text.replace(character, spaced)
        if "\x00" in text:  # a separator for fastText, not for str.split()
            text = text.replace("\x00", " ")
        # str.split() splits on every Unicode whitespace (\n, \r, \v, \f, \x1c-\x1f, \x85, \u2028...).
        return " ".join(text.split())

    @classmethod
    def from_config(cls, fasttext_config) -> "TextNormalization":
        return cls(fasttext_config.lowercase, fasttext_config.split_punctuation, fasttext_config.max_characters)

    def as_dict(self) -> dict:
        return asdict(self)


def training_line(label: str, normalized_text: str) -> str:
    return f"{label} {normalized_text}"


# ----------------------------------------------------------------------------------------------
# Shuffle


def shuffle_lines(
    sources: Iterable[str], destination: str, buckets: int, seed: int, repeats: dict[str, int] | None = None
) -> int:
    """Write every non-empty line of the `sources` files to `destination` in a pseudo-random
    order; returns the line count.

    The order is a function of the lines and the seed only (a seeded hash of each line), not of
    the order the lines arrive in, so the same training set gives the same model whichever
    runner wrote its shards. Lines are dealt by hash into `buckets` temporary files, then each
    bucket is sorted by hash in memory: memory is about one bucket, not the whole file.

    `repeats` maps a label (`__label__math`) to how many copies of each of its lines to write
    (class balancing, see `balancing_repeats`); the copies are hashed apart, so they land at
    independent places in the file rather than next to each other."""
    directory = tempfile.mkdtemp(prefix="shuffle-", dir=os.path.dirname(os.path.abspath(destination)))
    bucket_paths = [os.path.join(directory, f"bucket-{i:05d}") for i in range(buckets)]
    handles = [open(path, "w", encoding="utf-8") for path in bucket_paths]
    count = 0
    try:
        for source in sources:
            with open(source, encoding="utf-8") as lines:
                for line in lines:
                    if not line.strip():
                        continue
                    line = line if line.endswith("\n") else line + "\n"
                    copies = repeats.get(line.split(" ", 1)[0], 1) if repeats else 1
                    for copy in range(copies):
                        # The copy number salts the hash; the first copy hashes as an unrepeated line.
                        salted = line if copy == 0 else f"{copy}\x00{line}"
                        digest = xxhash.xxh64_intdigest(salted.encode("utf-8", "surrogatepass"), seed=seed)
                        handles[digest % buckets].write(salted)
                        count += 1
    finally:
        for handle in handles:
            handle.close()
    with open(destination, "w", encoding="utf-8") as output:
        for path in bucket_paths:
            with open(path, encoding="utf-8") as bucket:
                lines = bucket.readlines()
            lines.sort(
                key=lambda line: (xxhash.xxh3_64_intdigest(line.encode("utf-8", "surrogatepass"), seed=seed), line)
            )
            # Normalised training text never holds NUL (see TextNormalization), so a NUL near the
            # start marks a copy's salt, dropped here.
            output.writelines(line.split("\x00", 1)[1] if "\x00" in line[:12] else line for line in lines)
            os.remove(path)
    os.rmdir(directory)
    return count


def balancing_repeats(label_counts: dict[str, int], max_repeat: int) -> dict[str, int]:
    """Copies per line that bring the smaller class up to about the size of the larger one.

    The paper trains on equal numbers of positives and negatives (500k each). A small seed set
    against a large pool (100 seed pages, 2k pool pages) is 1:20, and fastText then learns to
    answer "other" for everything (hold-out F1 0); repeating the minority's lines is the
    fastText equivalent of a class weight. `max_repeat` bounds the copies (1 switches it off)."""
    if len(label_counts) < 2 or max_repeat <= 1:
        return {}
    largest = max(label_counts.values())
    return {
        label: min(max_repeat, round(largest / count))
        for label, count in label_counts.items()
        if count and round(largest / count) > 1
    }


# ----------------------------------------------------------------------------------------------
# Training and evaluation


@contextlib.contextmanager
def zero_filled_allocations() -> Iterator[bool]:
    """Make glibc hand out zero-filled memory for the duration (yields whether it could).

    fastText 0.9.3 (and its numpy-2 build) allocates the input matrix uninitialised and its
    random initialisation fills only `thread` tenths of it (upstream issue #1061; 0.9.2 had
    zeros there). With fewer than 10 threads the rest is whatever the heap held before, which
    makes training fail with "Encountered NaN" or, worse, silently learn from garbage, depending
    on what the process did earlier. glibc's M_PERTURB option fills every allocation with the
    complement of a byte: 255 gives zeros, i.e. fastText 0.9.2's behaviour, deterministic again.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        yield False
        return
    mallopt(_M_PERTURB, 255)
    try:
        yield True
    finally:
        mallopt(_M_PERTURB, 0)


_M_PERTURB = -6


def train_classifier(train_file: str, fasttext_config, retries: int = 3) -> tuple[object, float]:
    """Train the supervised model on a file of `__label__X text` lines; returns (model, lr used).

    Runs inside `zero_filled_allocations` (see there); where that is not available (not glibc)
    it trains with at least 10 threads, the only setting in which fastText 0.9.3 initialises its
    whole input matrix. fastText's SGD can also diverge ("Encountered NaN") at a high learning
    rate: then it retries with half the rate (the rate used is reported)."""
    lr = fasttext_config.lr
    for attempt in range(retries + 1):
        try:
            with zero_filled_allocations() as zero_filled:
                threads = fasttext_config.threads or os.cpu_count() or 1
                model = fasttext.train_supervised(
                    input=train_file,
                    dim=fasttext_config.dim,
                    lr=lr,
                    wordNgrams=fasttext_config.word_ngrams,
                    minCount=fasttext_config.min_count,
                    epoch=fasttext_config.epoch,
                    bucket=fasttext_config.bucket,
                    loss=fasttext_config.loss,
                    thread=threads if zero_filled else max(threads, 10),
                    seed=fasttext_config.seed,
                    verbose=0,
                )
            return model, lr
        except RuntimeError as error:
            if "NaN" not in str(error) or attempt == retries:
                raise
            log.warning("[recall] fastText diverged at lr %g; retrying at lr %g", lr, lr / 2)
            lr /= 2
    raise AssertionError("unreachable")


def math_probability(model, normalized_text: str) -> float:
    """P(math) for one normalised line, clipped to [0, 1] (fastText's softmax can return 1.00001)."""
    labels, probabilities = model.predict(normalized_text, k=2)
    for label, probability in zip(labels, probabilities):
        if label == LABEL_MATH:
            return min(1.0, max(0.0, float(probability)))
    # k=2 of two labels always names both; an empty line may return none: it is not math.
    return 0.0


def read_labelled_lines(path: str) -> Iterator[tuple[bool, str]]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            label, _, text = line.rstrip("\n").partition(" ")
            if label in (LABEL_MATH, LABEL_OTHER):
                yield label == LABEL_MATH, text


def evaluate_holdout(model, holdout_file: str, threshold: float = 0.5, curve_points: int = 101) -> dict:
    """Precision, recall and F1 at `threshold`, average precision and a PR curve on the hold-out."""
    labels, scores = [], []
    for is_math, text in read_labelled_lines(holdout_file):
        labels.append(is_math)
        scores.append(math_probability(model, text))
    return classification_metrics(
        np.array(labels, dtype=bool), np.array(scores, dtype=np.float64), threshold, curve_points
    )


def classification_metrics(
    labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5, curve_points: int = 101
) -> dict:
    """Metrics of scores against boolean labels (vectorised; `reference_pr_point` checks it)."""
    positives = int(labels.sum())
    metrics: dict = {
        "examples": int(labels.size),
        "positives": positives,
        "negatives": int(labels.size - positives),
        "threshold": threshold,
    }
    predicted = scores >= threshold
    true_positives = int((predicted & labels).sum())
    metrics["precision"] = _ratio(true_positives, int(predicted.sum()))
    metrics["recall"] = _ratio(true_positives, positives)
    p, r = metrics["precision"], metrics["recall"]
    metrics["f1"] = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    metrics["accuracy"] = _ratio(int((predicted == labels).sum()), int(labels.size))
    quantiles = np.quantile(scores, [0.1, 0.5, 0.9]) if scores.size else np.zeros(3)
    metrics["score_quantiles"] = {"p10": float(quantiles[0]), "p50": float(quantiles[1]), "p90": float(quantiles[2])}
    metrics["score_spread"] = float(quantiles[2] - quantiles[0])
    # PR curve: every distinct score is a threshold; sorted descending, cumulative counts give
    # precision and recall at each cut.
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    cumulative_tp = np.cumsum(sorted_labels)
    cumulative_all = np.arange(1, sorted_labels.size + 1)
    last_of_each_score = (
        np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]
        if sorted_scores.size
        else np.array([], dtype=int)
    )
    precision_curve = cumulative_tp[last_of_each_score] / cumulative_all[last_of_each_score]
    recall_curve = cumulative_tp[last_of_each_score] / positives if positives else np.zeros(last_of_each_score.size)
    thresholds = sorted_scores[last_of_each_score]
    # Average precision: sum over cuts of precision x recall gained at that cut.
    recall_gain = np.diff(np.r_[0.0, recall_curve])
    metrics["average_precision"] = float((precision_curve * recall_gain).sum()) if positives else 0.0
    if thresholds.size > curve_points:
        keep = np.unique(np.linspace(0, thresholds.size - 1, curve_points).round().astype(int))
    else:
        keep = np.arange(thresholds.size)
    metrics["pr_curve"] = {
        "threshold": [round(float(x), 6) for x in thresholds[keep]],
        "precision": [round(float(x), 6) for x in precision_curve[keep]],
        "recall": [round(float(x), 6) for x in recall_curve[keep]],
    }
    return metrics


class DegenerateClassifierError(ConfigError):
    """The round's classifier cannot separate math from other pages: the loop stops before it
    scores the pool or approves anything on noise. One line: the figures, the limits, a remedy."""


def degenerate_reasons(holdout: dict, min_f1: float, min_spread: float) -> list[str]:
    """Why the hold-out metrics show a classifier that cannot separate (empty: it can)."""
    reasons = []
    if min_f1 and holdout["f1"] < min_f1:
        reasons.append(f"hold-out F1 {holdout['f1']:.3f} < training.min_holdout_f1={min_f1}")
    if min_spread and holdout["score_spread"] < min_spread:
        low, high = holdout["score_quantiles"]["p10"], holdout["score_quantiles"]["p90"]
        reasons.append(
            f"hold-out scores spread {holdout['score_spread']:.5f} (10th-90th percentile {low:.5f}..{high:.5f}) "
            f"< training.min_score_spread={min_spread}"
        )
    return reasons


def small_pool_advice(train_lines: int, fasttext_config) -> str:
    """A remedy to print with a degenerate classifier: what suits a training set this size."""
    if train_lines < 100_000 and (fasttext_config.epoch < 20 or fasttext_config.dim > 100):
        return (
            f"a training set of {train_lines:,} lines is too small for epoch={fasttext_config.epoch}, "
            f"dim={fasttext_config.dim}: try fasttext.epoch=30 fasttext.dim=64 fasttext.bucket=20000 "
            "(README: settings for small pools)"
        )
    # Below a few thousand lines most 2- and 3-grams occur once and pull every score towards 0.5
    # (the chain's ~250-line round 1: spread 0.01-0.15 with n-grams 3, 0.63-0.77 with unigrams).
    if train_lines < 5_000 and fasttext_config.word_ngrams > 1:
        return (
            f"on {train_lines:,} training lines word n-grams {fasttext_config.word_ngrams} are mostly seen once: "
            "try fasttext.word_ngrams=1 (README: settings for small pools)"
        )
    return (
        "check that training.seed_positives are math and the pool is not mostly math, or raise fasttext.epoch "
        "(README: settings for small pools)"
    )


def reference_pr_point(labels: list[bool], scores: list[float], threshold: float) -> tuple[float, float]:
    """Readable precision and recall at one threshold (checks the vectorised curve)."""
    true_positives = sum(1 for label, score in zip(labels, scores) if label and score >= threshold)
    predicted = sum(1 for score in scores if score >= threshold)
    return _ratio(true_positives, predicted), _ratio(true_positives, sum(labels))


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


# ----------------------------------------------------------------------------------------------
# Model files


def model_metadata_path(model_path: str) -> str:
    return model_path.rsplit(".", 1)[0] + ".json"


def write_model_metadata(model_path: str, normalization: TextNormalization, extra: dict) -> None:
    write_json(
        model_metadata_path(model_path),
        {"normalization": normalization.as_dict(), "labels": [LABEL_MATH, LABEL_OTHER], **extra},
    )


def read_model_metadata(model_path: str) -> dict:
    return read_json(model_metadata_path(model_path))


def load_model(model_path: str):
    """Load a model from a local path or any Beam FileSystems URL (copied to a local temp file,
    since fastText reads only local files). Returns (model, normalization)."""
    metadata = read_model_metadata(model_path)
    normalization = TextNormalization(**metadata["normalization"])
    local_path = model_path
    if FileSystems.get_scheme(model_path) not in (None, "file"):
        handle, local_path = tempfile.mkstemp(suffix=".bin", prefix="recall-model-")
        with os.fdopen(handle, "wb") as local, FileSystems.open(model_path) as remote:
            while chunk := remote.read(1 << 24):
                local.write(chunk)
    model = fasttext.load_model(local_path)
    return model, normalization
