"""The recall loop without a reviewer, on a real multi-site crawl (tests/recall_crawl.py, `confirm`:
maxima, Arb, FFTW and Euler documentation beside git, Werkzeug, Requests and h2o; seeds from SciPy).

- a round's selection and model are identical across runs and across runner presets;
- a classifier that cannot separate (the paper's fastText settings on a ~500-page pool) stops the
  loop with one clear line before anything is scored or approved;
- the unattended policy against the oracle reviewer (benchmarks/recall_unattended.py prints the
  same comparison on larger crawls).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beam_pipelines.recall.fasttext_model import (
    DegenerateClassifierError,
    classification_metrics,
    degenerate_reasons,
)
from beam_pipelines.recall.loop import run_recall
from tests.recall_crawl import (
    build_crawl,
    compose_recall,
    run_unattended,
    run_with_reviewer,
    selected_ids,
    small_pool_overrides,
)

# ----------------------------------------------------------------------------------------------
# Fast: the degenerate-classifier rule on its own


def test_score_spread_and_degenerate_reasons():
    labels = np.array([True] * 10 + [False] * 90)
    flat = classification_metrics(labels, np.linspace(0.50001, 0.50030, 100))
    assert flat["score_spread"] == pytest.approx(0.8 * 0.00029, rel=1e-3)
    reasons = degenerate_reasons(flat, min_f1=0.3, min_spread=0.05)
    assert len(reasons) == 2 and "min_holdout_f1" in reasons[0] and "min_score_spread" in reasons[1]
    labels = np.array([True] * 30 + [False] * 70)
    separating = classification_metrics(labels, np.r_[np.full(30, 0.9), np.full(70, 0.1)])
    assert separating["f1"] == 1.0 and separating["score_spread"] == pytest.approx(0.8)
    assert degenerate_reasons(separating, min_f1=0.3, min_spread=0.05) == []
    assert degenerate_reasons(flat, min_f1=0, min_spread=0) == []  # 0 switches the checks off


# ----------------------------------------------------------------------------------------------
# The real loop on the `confirm` crawl


@pytest.fixture(scope="module")
def crawl():
    try:
        return build_crawl("confirm")
    except RuntimeError as error:  # apt cannot provide the packages on this machine
        pytest.skip(str(error))


def _round_1(crawl, output_dir: Path, *extra: str) -> tuple[set, bytes]:
    run_recall(compose_recall(small_pool_overrides(crawl, str(output_dir)) + ["round=1", *extra]))
    return selected_ids(str(output_dir / "round_1")), (output_dir / "round_1" / "model.bin").read_bytes()


@pytest.mark.integration
def test_a_round_selects_the_same_pages_on_every_run_and_runner(crawl, tmp_path):
    """Default fastText threads (no override): the training file's order is a function of its
    lines and one thread trains, so the model bytes and the selection repeat exactly."""
    first = _round_1(crawl, tmp_path / "single-a")
    again = _round_1(crawl, tmp_path / "single-b")
    multi = _round_1(crawl, tmp_path / "multi", "beam=direct")  # worker processes write the shards
    assert first[0] and first[0] == again[0] == multi[0]
    assert first[1] == again[1] == multi[1]


@pytest.mark.integration
def test_a_classifier_that_cannot_separate_stops_the_loop(crawl, tmp_path):
    paper_settings = [  # the schema's fastText defaults are the paper's (dim 256, 3 epochs ...)
        "beam=direct_single",
        f"input_dir={crawl.pool_dir}",
        f"output_dir={tmp_path}",
        f"training.seed_positives=[{crawl.seed_file}]",
        f"selection.token_budgets=[{crawl.math_tokens}]",
        "+experiment=recall_unattended",
    ]
    with pytest.raises(DegenerateClassifierError) as raised:
        run_recall(compose_recall(paper_settings))
    message = str(raised.value)
    assert "\n" not in message and "fasttext.epoch=30" in message  # one line, with the remedy
    round_1 = tmp_path / "round_1"
    assert not (round_1 / "round.json").exists()  # incomplete: a rerun redoes it
    assert not list(round_1.glob("documents/*.parquet"))  # nothing scored or selected
    assert not (tmp_path / "round_2").exists() and not (tmp_path / "final").exists()
    figures = json.loads((round_1 / "classifier.json").read_text())
    assert figures["degenerate"] and figures["holdout"]["score_spread"] < 0.05


@pytest.mark.integration
@pytest.mark.xfail(
    strict=True,
    reason="open: on this crawl the unattended policy approves Requests/Werkzeug (their pages score like the "
    "SciPy seed) and never FFTW; see benchmarks/recall_unattended.py",
)
def test_unattended_recall_is_within_005_of_the_reviewers_at_equal_precision(crawl, tmp_path):
    reviewer = run_with_reviewer(crawl, str(tmp_path / "reviewer"))
    unattended = run_unattended(crawl, str(tmp_path / "unattended"))
    assert reviewer["final"] and unattended["final"]
    assert unattended["final"]["recall"] >= reviewer["final"]["recall"] - 0.05
    assert unattended["final"]["precision"] >= reviewer["final"]["precision"] - 0.02
