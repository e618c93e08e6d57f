"""The recall loop's parts, each against a readable reference or real files (fast tests)."""

from __future__ import annotations

import inspect
import json
import json as json_module
import random
import statistics

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sympy
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.document import Document
from beam_pipelines.recall import domains
from beam_pipelines.recall.fasttext_model import (
    LABEL_MATH,
    LABEL_OTHER,
    TextNormalization,
    balancing_repeats,
    classification_metrics,
    math_probability,
    reference_pr_point,
    shuffle_lines,
    train_classifier,
)
from beam_pipelines.recall.loop import read_seed_positives
from beam_pipelines.recall.select import (
    ScoreCut,
    SelectByTokenBudget,
    TokenBudget,
    coarse_bin_of,
    find_coarse_boundary,
    find_cut,
    fine_bin_of,
    reference_selection,
)
from tests.support import REPO_ROOT

# ----------------------------------------------------------------------------------------------
# Normalisation and the classifier


def test_normalization_makes_one_fasttext_line():
    normalize = TextNormalization()
    text = "Let $x^2+1=0$.\nThen\r\n\tx = \\pm i\x0b\x0c\x00and\u2028\u00a0done\x85 (QED)"
    line = normalize(text)
    assert "\n" not in line and "\r" not in line and "\x00" not in line and "  " not in line
    assert line == "let $ x ^ 2 + 1 = 0 $ . then x = \\ pm i and done ( qed )"
    assert TextNormalization(lowercase=False, split_punctuation=False)(text).startswith("Let $x^2+1=0$. Then")
    assert TextNormalization(max_characters=3)("abcdef") == "abc"
    assert normalize("") == "" and normalize(" \n\t ") == ""


def test_classifier_trains_deterministically_and_separates_real_text(tmp_path):
    """fastText with one thread gives the same model twice (its uninitialised input matrix is
    zero-filled, see zero_filled_allocations) and learns math vs. prose from real docstrings."""
    math_texts = [
        inspect.getdoc(getattr(sympy, name)) or ""
        for name in (
            "integrate",
            "diff",
            "limit",
            "series",
            "solve",
            "Matrix",
            "factor",
            "expand",
            "simplify",
            "summation",
        )
    ]
    other_texts = [
        inspect.getdoc(obj) or ""
        for obj in (
            json_module.dumps,
            json_module.loads,
            random.shuffle,
            random.choice,
            statistics.mean,
            open,
            print,
            sorted,
            zip,
            enumerate,
        )
    ]
    normalize = TextNormalization()
    lines = [f"{LABEL_MATH} {normalize(t)}\n" for t in math_texts] + [
        f"{LABEL_OTHER} {normalize(t)}\n" for t in other_texts
    ]
    random.Random(0).shuffle(lines)
    train_file = tmp_path / "train.txt"
    train_file.write_text("".join(lines * 5))

    class Settings:
        dim, lr, word_ngrams, min_count, epoch, bucket, loss, threads, seed = 16, 0.5, 2, 1, 50, 5000, "softmax", 1, 0

    first, lr_first = train_classifier(str(train_file), Settings)
    second, _ = train_classifier(str(train_file), Settings)
    assert lr_first == 0.5
    assert np.array_equal(first.get_output_matrix(), second.get_output_matrix())
    math_scores = [math_probability(first, normalize(t)) for t in math_texts]
    other_scores = [math_probability(first, normalize(t)) for t in other_texts]
    assert all(0.0 <= s <= 1.0 for s in math_scores + other_scores)
    assert min(math_scores) > max(other_scores)


def test_classification_metrics_agree_with_the_reference():
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.3
    scores = np.clip(labels * 0.3 + rng.random(500) * 0.7, 0, 1).round(2)  # ties on purpose
    metrics = classification_metrics(labels, scores, threshold=0.5, curve_points=10_000)
    precision, recall = reference_pr_point(labels.tolist(), scores.tolist(), 0.5)
    assert metrics["precision"] == pytest.approx(precision) and metrics["recall"] == pytest.approx(recall)
    curve = metrics["pr_curve"]
    for threshold, p, r in zip(curve["threshold"], curve["precision"], curve["recall"]):
        assert (p, r) == pytest.approx(reference_pr_point(labels.tolist(), scores.tolist(), threshold), abs=1e-6)
    assert 0.3 < metrics["average_precision"] <= 1.0
    assert metrics["examples"] == 500 and metrics["positives"] == int(labels.sum())


def test_shuffle_keeps_every_line_and_mixes_sources(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("".join(f"{LABEL_MATH} m{i}\n" for i in range(500)))
    second.write_text("".join(f"{LABEL_OTHER} o{i}\n" for i in range(500)) + "\n")
    output = tmp_path / "out.txt"
    assert shuffle_lines([str(first), str(second)], str(output), buckets=7, seed=3) == 1000
    lines = output.read_text().splitlines()
    expected = [line for path in (first, second) for line in path.read_text().splitlines() if line]
    assert sorted(lines) == sorted(expected)
    assert sum(line.startswith(LABEL_MATH) for line in lines[:100]) in range(25, 76)
    assert list(tmp_path.iterdir()).count(output) == 1 and len(list(tmp_path.iterdir())) == 3  # no bucket files left
    # The order depends on the lines and the seed, not on the order they arrive in.
    reversed_input = tmp_path / "reversed.txt"
    reversed_input.write_text("\n".join(reversed(expected)) + "\n")
    again = tmp_path / "again.txt"
    shuffle_lines([str(reversed_input)], str(again), buckets=7, seed=3)
    assert again.read_text() == output.read_text()


def test_balancing_repeats_the_smaller_class_spread_over_the_file(tmp_path):
    assert balancing_repeats({LABEL_MATH: 92, LABEL_OTHER: 2258}, max_repeat=50) == {LABEL_MATH: 25}
    assert balancing_repeats({LABEL_MATH: 10, LABEL_OTHER: 5000}, max_repeat=50) == {LABEL_MATH: 50}
    assert balancing_repeats({LABEL_MATH: 900, LABEL_OTHER: 1000}, max_repeat=50) == {}  # already 1:1
    assert balancing_repeats({LABEL_MATH: 3000, LABEL_OTHER: 1000}, max_repeat=50) == {LABEL_OTHER: 3}
    assert balancing_repeats({LABEL_MATH: 92, LABEL_OTHER: 2258}, max_repeat=1) == {}  # switched off

    source = tmp_path / "train.txt"
    source.write_text(
        "".join(f"{LABEL_MATH} m{i}\n" for i in range(40)) + "".join(f"{LABEL_OTHER} o{i}\n" for i in range(400))
    )
    output = tmp_path / "out.txt"
    written = shuffle_lines([str(source)], str(output), buckets=5, seed=1, repeats={LABEL_MATH: 10})
    lines = output.read_text().splitlines()
    assert written == len(lines) == 800
    # Every math line ten times, unchanged (no salt left behind); every other line once.
    assert sorted(lines) == sorted(
        [f"{LABEL_MATH} m{i}" for i in range(40)] * 10 + [f"{LABEL_OTHER} o{i}" for i in range(400)]
    )
    # The copies are spread over the file, not written next to each other.
    positions = [index for index, line in enumerate(lines) if line == f"{LABEL_MATH} m0"]
    assert max(positions) - min(positions) > 200
    adjacent_copies = sum(1 for a, b in zip(lines, lines[1:]) if a == b)
    assert adjacent_copies < 20


# ----------------------------------------------------------------------------------------------
# Token-budget selection


def _histograms(items, coarse_bins, fine_bins, budget):
    pages, tokens = np.zeros(coarse_bins, np.int64), np.zeros(coarse_bins, np.int64)
    for _, score, n in items:
        pages[coarse_bin_of(score, coarse_bins)] += 1
        tokens[coarse_bin_of(score, coarse_bins)] += n
    boundary = find_coarse_boundary(pages, tokens, budget)
    fine_pages, fine_tokens = np.zeros(fine_bins, np.int64), np.zeros(fine_bins, np.int64)
    for _, score, n in items:
        if coarse_bin_of(score, coarse_bins) == boundary.coarse_bin and not boundary.keep_all:
            fine_pages[fine_bin_of(score, coarse_bins, fine_bins)] += 1
            fine_tokens[fine_bin_of(score, coarse_bins, fine_bins)] += n
    return find_cut(boundary, fine_pages, fine_tokens, coarse_bins)


@pytest.mark.parametrize("coarse_bins, fine_bins", [(4096, 4096), (16, 4), (2, 1)])
def test_histogram_cut_matches_the_sorted_reference(coarse_bins, fine_bins):
    rng = random.Random(coarse_bins)
    items = [(f"p{i}", rng.betavariate(0.5, 2), rng.randint(0, 5000)) for i in range(3000)]
    items += [(f"tie{i}", 0.75, 100) for i in range(50)] + [(f"one{i}", 1.0, 10) for i in range(5)]
    total = sum(n for _, _, n in items)
    for budget_tokens in (1, 1000, total // 3, total - 1, total, total * 2):
        cut = _histograms(items, coarse_bins, fine_bins, TokenBudget(tokens=budget_tokens))
        kept = {page for page, score, _ in items if cut.keeps(score)}
        reference = reference_selection(items, budget_tokens)
        assert reference <= kept
        kept_tokens = sum(n for page, _, n in items if page in kept)
        assert kept_tokens == cut.selected_tokens and len(kept) == cut.selected_pages
        assert kept_tokens >= min(budget_tokens, total)
        # The surplus is confined to the one sub-bin where the budget runs out.
        surplus_bins = {
            (coarse_bin_of(s, coarse_bins), fine_bin_of(s, coarse_bins, fine_bins))
            for page, s, _ in items
            if page in kept - reference
        }
        assert surplus_bins <= {(cut.coarse_bin, cut.fine_bin)}


def test_budget_per_round_and_fraction():
    class Selection:
        token_budgets, pool_token_fractions = [40, 120], [0.3]

    assert [TokenBudget.for_round(Selection, k).tokens for k in (1, 2, 3, 4)] == [40, 120, 120, 120]
    Selection.token_budgets = []
    assert TokenBudget.for_round(Selection, 2).resolve(1000) == 300
    assert ScoreCut(coarse_bins=10, fine_bins=10, coarse_bin=3, fine_bin=5).threshold == pytest.approx(0.35)


def test_select_by_token_budget_in_beam_agrees_with_the_reference():
    rng = random.Random(5)
    documents = [Document(id=f"d{i}", math_score=rng.random(), token_estimate=rng.randint(1, 900)) for i in range(400)]
    budget = sum(d.token_estimate for d in documents) // 4
    expected = reference_selection([(d.id, d.math_score, d.token_estimate) for d in documents], budget)
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        selected, cut, _ = (
            pipeline
            | beam.Create(documents)
            | SelectByTokenBudget(TokenBudget(tokens=budget), coarse_bins=4096, fine_bins=4096)
        )
        # Distinct random scores: the sub-bin resolution separates them, so the cut is exact.
        assert_that(selected | beam.Map(lambda d: d.id), equal_to(sorted(expected)))
        assert_that(cut | beam.Map(lambda c: c.selected_pages), equal_to([len(expected)]), label="cut pages")


# ----------------------------------------------------------------------------------------------
# Domains, prefixes, annotations


def test_url_prefixes_and_matching_are_segment_aware():
    url = "https://docs.scipy.org/doc/scipy/reference/generated/scipy.special.gamma.html"
    assert domains.url_prefixes("docs.scipy.org", url, 3) == [
        "docs.scipy.org",
        "docs.scipy.org/doc",
        "docs.scipy.org/doc/scipy",
        "docs.scipy.org/doc/scipy/reference",
    ]
    assert domains.url_prefixes("mathoverflow.net", "https://mathoverflow.net/questions/", 2) == [
        "mathoverflow.net",
        "mathoverflow.net/questions",
    ]
    assert domains.parse_prefix("https://www.MathOverflow.net/questions/") == ("mathoverflow.net", ("questions",))
    approved = domains.ApprovedPrefixes(["mathoverflow.net/questions", "docs.scipy.org/doc/scipy"])
    assert (
        approved.match("mathoverflow.net", "https://mathoverflow.net/questions/1/why") == "mathoverflow.net/questions"
    )
    assert approved.match("mathoverflow.net", "https://mathoverflow.net/questions") == "mathoverflow.net/questions"
    assert approved.match("mathoverflow.net", "https://mathoverflow.net/help/on-topic") is None
    assert approved.match("docs.scipy.org", "https://docs.scipy.org/doc/scipy-1.9/index.html") is None
    assert approved.covers("docs.scipy.org/doc/scipy/reference") and not approved.covers("docs.scipy.org/doc")
    with pytest.raises(ValueError):
        domains.parse_prefix("   ")


def test_annotations_file_format_and_errors(tmp_path):
    (tmp_path / "round_2.yaml").write_text(
        "round: 2\nreviewer: ana\napproved:\n  - https://www.mathoverflow.net/questions/\n"
        "rejected:\n  - mathoverflow.net/help\nnotes: checked 20 samples\n"
    )
    annotations = domains.load_annotations(str(tmp_path), 2)
    assert annotations.exists and annotations.reviewer == "ana"
    assert annotations.approved == ["mathoverflow.net/questions"] and annotations.rejected == ["mathoverflow.net/help"]
    missing = domains.load_annotations(str(tmp_path), 3)
    assert not missing.exists and missing.approved == []
    bad_files = [
        (5, "round: 4\napproved: [a.org/x]\n", "says round 4"),
        (6, "approved: a.org/x\n", "must be a list"),
        (7, "approve: [a.org/x]\n", "unknown key"),
        (8, "approved: [a.org/x]\nrejected: [a.org/x]\n", "both approved and rejected"),
        (9, "approved: [\n", "not valid YAML"),
        (10, "- a.org/x\n", "expected a mapping"),
        (11, "approved: ['   ']\n", "not a URL prefix"),
    ]
    for number, text, message in bad_files:
        (tmp_path / f"round_{number}.yaml").write_text(text)
        with pytest.raises(domains.AnnotationError, match=message):
            domains.load_annotations(str(tmp_path), number)


def test_candidate_rule_and_auto_approval_policy():
    row = domains.domain_row("a.org", (100, 5000, 11, 600))
    assert row["selected_fraction"] == pytest.approx(0.11)
    assert domains.is_candidate_domain(row, 0.1, 5)
    assert not domains.is_candidate_domain(domains.domain_row("b.org", (100, 5000, 10, 600)), 0.1, 5)  # "more than"
    assert not domains.is_candidate_domain(domains.domain_row("c.org", (4, 50, 4, 50)), 0.1, 5)
    review = [
        {"prefix": "a.org", "pool_pages": 100, "selected_fraction": 0.11},
        {"prefix": "a.org/math", "pool_pages": 20, "selected_fraction": 0.5},
        {"prefix": "a.org/math/old", "pool_pages": 10, "selected_fraction": 0.9},
        {"prefix": "a.org/tiny", "pool_pages": 3, "selected_fraction": 1.0},
    ]
    assert domains.auto_approved_prefixes(review, 0.5, 10) == ["a.org/math", "a.org/math/old"]
    assert domains.auto_approved_prefixes(review, 0.5, 10, rejected=["a.org/math/old"]) == ["a.org/math"]
    assert domains.auto_approved_prefixes(review, 0.5, 10, rejected=["a.org"]) == []


def test_prefix_stats_combine_counts_and_stable_samples():
    combine = domains.PrefixStatsFn(samples=2)
    pages = [(i % 3 == 0, 10 * i, (domains.hash_unit(str(i)), f"u{i}", f"t{i}", 0.5)) for i in range(30)]
    whole = combine.extract_output(combine.add_inputs(combine.create_accumulator(), pages))
    halves = [combine.add_inputs(combine.create_accumulator(), part) for part in (pages[:13], pages[13:])]
    merged = combine.extract_output(combine.merge_accumulators(halves))
    assert (merged.pool_pages, merged.selected_pages, merged.pool_tokens) == (30, 10, sum(10 * i for i in range(30)))
    assert merged.selected_samples == whole.selected_samples and len(merged.unselected_samples) == 2
    row = domains.review_row(("x.org", "x.org/a/b"), merged)
    assert row["depth"] == 2 and row["unselected_pages"] == 20 and row["selected_samples"][0]["url"].startswith("u")


def test_seed_records_become_documents_or_dead_letters(tmp_path):
    jsonl = tmp_path / "seeds.jsonl"
    jsonl.write_text(
        json.dumps({"url": "https://math.example/a", "text": "Let $x=1$."})
        + "\n"
        + "{broken json\n"
        + json.dumps({"url": "https://math.example/b"})
        + "\n"
    )
    parquet = tmp_path / "seeds.parquet"
    pq.write_table(
        pa.table({"url": ["https://www.math.example/c"], "text": ["Proof. Trivial."], "other": [1]}), parquet
    )
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        documents, dead_letters = read_seed_positives(pipeline, [str(parquet), str(jsonl)])
        assert_that(
            documents | beam.Map(lambda d: (d.domain, d.text, d.source)),
            equal_to([("math.example", "Let $x=1$.", "seed"), ("math.example", "Proof. Trivial.", "seed")]),
        )
        assert_that(
            dead_letters | beam.Map(lambda line: json.loads(line)["kind"]),
            equal_to(["bad_seed_record", "bad_seed_record"]),
            label="dead letters",
        )


def test_the_documented_example_annotations_file_loads():
    example = domains.load_annotations(str(REPO_ROOT / "annotations" / "example"), 1)
    assert example.exists and example.approved == ["docs.scipy.org/doc/scipy", "mpmath.org/doc/current"]
    assert domains.ApprovedPrefixes(example.rejected).covers("docs.python.org/3.11/tutorial")
