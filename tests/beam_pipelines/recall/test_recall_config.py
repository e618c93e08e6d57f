"""Every recall composition in conf/ composes, bad values fail in one line before any work."""

from __future__ import annotations

import pytest

from beam_pipelines.config import register_configs
from beam_pipelines.io.parquet import write_json
from beam_pipelines.recall.loop import pool_fingerprint, run_recall
from stack_common.cli import compose_config
from stack_common.errors import ConfigError
from tests.support import run_module

SEEDS = "training.seed_positives=[/data/openwebmath/*.parquet]"


def compose(*overrides: str):
    return compose_config("recall", [SEEDS, *overrides], register_configs)


def test_default_composition_has_the_papers_classifier_and_rules():
    config = compose()
    assert (
        config.fasttext.dim,
        config.fasttext.lr,
        config.fasttext.word_ngrams,
        config.fasttext.min_count,
        config.fasttext.epoch,
    ) == (256, 0.1, 3, 3, 3)
    assert config.fasttext.bucket * config.fasttext.dim * 4 < 512e6  # not fastText's 2M-bucket default
    assert (config.max_rounds, config.stop_overlap_fraction, config.domains.candidate_min_selected_fraction) == (
        4,
        0.98,
        0.1,
    )
    assert config.input_dir == "outputs/corpus/sample/pool_near_dedup"
    assert config.output_dir == "outputs/corpus/sample/recall"
    assert config.approval.annotations_dir == "outputs/corpus/sample/recall/annotations"
    assert config.approval.policy == "annotations_only"  # nothing is approved without a person by default


def test_paper_preset():
    config = compose("+experiment=recall_paper")
    assert (config.training.positive_samples, config.training.negative_samples) == (500_000, 500_000)
    assert config.selection.token_budgets[0] == 40_000_000_000 and config.max_rounds == 4


def test_unattended_preset_names_its_policy():
    config = compose(
        "+experiment=recall_unattended",
        "beam=dataflow",
        "beam.project=p",
        "beam.region=r",
        "beam.temp_location=gs://b/tmp",
        "corpus=commoncrawl",
    )
    assert config.approval.policy == "annotations_and_auto_prefix_fraction"
    assert config.approval.auto_min_prefix_selected_fraction == 0.5
    assert config.input_dir == "gs://YOUR_BUCKET/deepseekmath-corpus/pool_near_dedup"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ((), "seed positives"),
        ((SEEDS, "approval.policy=yes"), "approval.policy='yes'"),
        ((SEEDS, "round=5"), "round=5"),
        ((SEEDS, "selection.token_budgets=[]", "selection.pool_token_fractions=[]"), "selection.token_budgets"),
        ((SEEDS, "selection.pool_token_fractions=[1.5]"), "(0, 1]"),
        ((SEEDS, "fasttext.dim=0"), "fasttext.dim"),
        (("training.seed_positives=[/data/seeds.csv]",), ".parquet, .jsonl"),
        ((SEEDS, "fasttext.dimension=3"), "fasttext.dimension"),
    ],
)
def test_bad_values_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        compose_config("recall", list(overrides), register_configs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_entry_point_reports_missing_inputs_in_one_line(tmp_path):
    result = run_module(
        "beam_pipelines.recall",
        f"corpus.work_dir={tmp_path}",
        f"training.seed_positives=[{tmp_path}/seeds.jsonl]",
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: input_dir=")
    assert "point input_dir at ${corpus.work_dir}/pool" in result.stderr
    result = run_module("beam_pipelines.recall", SEEDS, "round=9", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: round=9 must be 0 (all rounds) or 1..max_rounds (4)"


def test_a_later_round_needs_the_earlier_ones(tmp_path):
    pool = tmp_path / "pool"
    (pool / "documents").mkdir(parents=True)
    (pool / "documents" / "part-00000-of-00001.parquet").write_bytes(b"")
    write_json(str(pool / "summary.json"), {})
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("{}\n")
    config = compose_config(
        "recall",
        [f"training.seed_positives=[{seeds}]", f"input_dir={pool}", f"output_dir={tmp_path / 'recall'}", "round=3"],
        register_configs,
    )
    with pytest.raises(ConfigError, match="round=3 needs rounds 1..2 complete; round 1 is not"):
        run_recall(config)


def test_resuming_on_a_different_pool_is_refused(tmp_path):
    pool = tmp_path / "pool"
    (pool / "documents").mkdir(parents=True)
    (pool / "documents" / "part-00000-of-00001.parquet").write_bytes(b"x")
    write_json(str(pool / "summary.json"), {"totals": {"in": 1}})
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("{}\n")
    recorded = pool_fingerprint(str(pool))
    write_json(str(tmp_path / "recall" / "round_1" / "round.json"), {"round": 1, "pool_fingerprint": recorded})
    (pool / "documents" / "part-00000-of-00001.parquet").write_bytes(b"xy")  # the pool was rebuilt
    assert pool_fingerprint(str(pool)) != recorded
    config = compose_config(
        "recall",
        [f"training.seed_positives=[{seeds}]", f"input_dir={pool}", f"output_dir={tmp_path / 'recall'}"],
        register_configs,
    )
    with pytest.raises(ConfigError, match="is not the pool round 1 read"):
        run_recall(config)
