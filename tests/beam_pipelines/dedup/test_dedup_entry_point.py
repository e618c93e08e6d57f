"""`python -m beam_pipelines.dedup` as a user runs it (a real subprocess, multi-process runner),
and the compositions of conf/dedup.yaml and conf/decontaminate.yaml."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.config import register_configs
from beam_pipelines.stages.dedup import run_dedup
from stack_common.cli import compose_config
from stack_common.errors import ConfigError
from tests.beam_pipelines.dedup.neardedup_support import read_rows, write_stage
from tests.planted_duplicates import generate_documents
from tests.support import run_module


@pytest.mark.integration
def test_entry_point_runs_as_a_user_runs_it(tmp_path):
    generated = list(
        generate_documents(300, seed=21, duplicate_fraction=0.4, max_edit_rate=0.02, target_characters=800)
    )
    documents = [g.document for g in generated]
    texts = {d.id: d.text for d in documents}
    # Planted copies that really are near-duplicates of their source (5-gram Jaccard >= 0.8).
    near_copies = sum(
        _jaccard(texts[g.document.id], texts[g.copied_from]) >= 0.8 for g in generated if g.copied_from is not None
    )
    assert near_copies >= 5
    write_stage(tmp_path / "pool", documents)
    result = run_module(
        "beam_pipelines.dedup",
        f"corpus.work_dir={tmp_path}",
        "beam=direct_single",  # worker processes are exercised by the decontaminate entry point test
        "keep_work_files=true",
        f"hydra.run.dir={tmp_path}/hydra",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = tmp_path / "pool_near_dedup"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["balanced"] and summary["totals"]["in"] == 300
    components = summary["components"]
    assert components["converged"] and components["history"][-1]["not_star"] == 0
    assert len(components["history"]) == components["rounds"]
    assert summary["totals"]["dropped"] >= 0.9 * near_copies, "planted near-copies must be found"
    assert len(read_rows(output / "documents")) == summary["totals"]["kept"]
    assert len(read_rows(output / "removed" / "07_minhash")) == summary["totals"]["dropped"]
    assert (output / "work" / "nodes").is_dir()  # kept on request, for inspection


def _jaccard(a: str, b: str, n: int = 5) -> float:
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = text.lower().split()
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    left, right = shingles(a), shingles(b)
    return len(left & right) / len(left | right) if left | right else 0.0


def test_bad_values_fail_with_one_line_before_any_work(tmp_path):
    result = run_module("beam_pipelines.dedup", f"corpus.work_dir={tmp_path}", "minhash.bands=30", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: minhash.bands x minhash.rows = 180 exceeds minhash.num_perm = 120"
    ]
    config = compose_config("dedup", [f"corpus.work_dir={tmp_path}"], register_configs)
    with pytest.raises(ConfigError, match=r"no documents match .*\(run python -m beam_pipelines.prepare first"):
        run_dedup(config)


@pytest.mark.parametrize("config_name", ["dedup", "decontaminate"])
@pytest.mark.parametrize("beam_preset", ["direct", "direct_single", "dataflow", "flink", "spark"])
def test_compositions(config_name, beam_preset):
    overrides = [f"beam={beam_preset}", "corpus=commoncrawl"]
    overrides += {
        "dataflow": ["beam.project=p", "beam.region=r", "beam.temp_location=gs://b/tmp"],
        "flink": ["beam.flink_master=localhost:8081"],
        "spark": ["beam.spark_master_url=spark://localhost:7077"],
    }.get(beam_preset, [])
    config = compose_config(config_name, overrides, register_configs)
    work_dir = "gs://YOUR_BUCKET/deepseekmath-corpus"
    if config_name == "dedup":
        assert (config.input_dir, config.output_dir) == (f"{work_dir}/pool", f"{work_dir}/pool_near_dedup")
        assert config.work_dir == f"{work_dir}/pool_near_dedup/work"
    else:
        assert (config.input_dir, config.output_dir) == (f"{work_dir}/recall/final", f"{work_dir}/corpus")
        assert [b.name for b in config.benchmarks] == ["gsm8k", "math", "cmath", "agieval"]
        assert config.benchmarks[0].path == "data/benchmarks/gsm8k"


@pytest.mark.parametrize(
    "config_name, override, message",
    [
        ("dedup", "minhash.survivor_order=[math_score,bogus]", "minhash.survivor_order[1]='bogus' is not one of"),
        ("dedup", "minhash.threshold=0", "minhash.threshold=0.0 must lie in (0, 1]"),
        ("dedup", "input_dir=outputs/x", "output_dir='outputs/x' must differ from input_dir"),
        ("decontaminate", "decontamination.level=page", "decontamination.level='page' is not one of segment, document"),
        ("decontaminate", "decontamination.min_item_ngram=11", "decontamination.min_item_ngram=11 must lie in [1, 10]"),
        ("decontaminate", "benchmarks=[{name: x, path: y, format: csv}]", "benchmarks[0].format='csv'"),
    ],
)
def test_bad_overrides_are_refused(config_name, override, message):
    overrides = [override]
    if override.startswith("input_dir"):
        overrides.append("output_dir=outputs/x")
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace("]", r"\]").replace(")", r"\)")
    ):
        compose_config(config_name, overrides, register_configs)
