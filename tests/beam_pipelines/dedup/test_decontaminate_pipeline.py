"""Decontamination as a Beam pipeline and as `python -m beam_pipelines.decontaminate`."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.config import register_configs
from beam_pipelines.document import Document
from beam_pipelines.stages.decontaminate import run_decontaminate
from beam_pipelines.transforms.config import BenchmarkSource
from stack_common.cli import compose_config
from tests.beam_pipelines.dedup.decontamination_fixtures import (
    CLEAN,
    EXACT_GSM8K,
    FULLWIDTH_CMATH,
    NEAR_MISS_GSM8K,
    REFORMATTED_MATH,
    write_benchmarks,
)
from tests.beam_pipelines.dedup.neardedup_support import read_jsonl, read_rows, write_stage
from tests.planted_duplicates import generate_documents
from tests.support import run_module

FORMATS = {"gsm8k": "gsm8k", "math": "math", "cmath": "cmath", "agieval": "agieval", "extra": "auto"}


def _documents() -> list[Document]:
    prose = [g.document.text for g in generate_documents(40, seed=4, duplicate_fraction=0.0, target_characters=700)]
    documents = [Document(id=f"clean-{i:02d}", text=text) for i, text in enumerate(prose)]
    documents += [
        Document(id="exact", text=f"{prose[0]}\n\n{EXACT_GSM8K}\n\n{CLEAN}"),
        Document(id="reformatted", text=f"{REFORMATTED_MATH}\n\n{prose[1]}"),
        Document(id="near-miss", text=f"{NEAR_MISS_GSM8K}\n\n{prose[2]}"),
        Document(id="only-contamination", text=f"{FULLWIDTH_CMATH}\n\n{EXACT_GSM8K}"),
        Document(id="two-benchmarks", text=f"{EXACT_GSM8K}\n\n{prose[3]}\n\n{FULLWIDTH_CMATH}"),
    ]
    return documents


def _config(root, benchmarks, *overrides):
    config = compose_config(
        "decontaminate",
        [f"corpus.work_dir={root}", f"input_dir={root}/final", "beam=direct_single", *overrides],
        register_configs,
    )
    config.benchmarks = [BenchmarkSource(name=n, path=str(p), format=FORMATS[n]) for n, p in benchmarks.items()]
    config.benchmarks.append(BenchmarkSource(name="missing", path=str(root / "nowhere"), format="gsm8k"))
    return config


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("decontaminate")
    benchmarks = write_benchmarks(root / "benchmarks")
    write_stage(root / "final", _documents())
    return root, benchmarks


def test_segment_level_removal_counts_changes_and_reports_per_benchmark(stage):
    root, benchmarks = stage
    summary = run_decontaminate(_config(root, benchmarks))
    output = root / "corpus"
    assert summary["balanced"] and summary["totals"] == {"in": 45, "kept": 44, "dropped": 1, "dead_lettered": 0}
    assert summary["documents_modified"] == 3 and summary["segments_removed"] == 4
    kept = {row["id"]: row["text"] for row in read_rows(output / "documents")}
    by_id = {d.id: d.text for d in _documents()}
    assert EXACT_GSM8K not in kept["exact"] and CLEAN in kept["exact"]
    assert kept["reformatted"] == by_id["reformatted"].split("\n\n", 1)[1]
    assert kept["near-miss"] == by_id["near-miss"]
    assert all(kept[f"clean-{i:02d}"] == by_id[f"clean-{i:02d}"] for i in range(40))
    [removed] = read_rows(output / "removed" / "08_decontaminate")
    assert (removed["id"], removed["removed_reason"]) == ("only-contamination", "empty_after_decontamination")
    assert json.loads(removed["removed_detail"])["benchmark"] == "cmath"
    matches = read_jsonl(output / "contamination" / "matches")
    assert sorted((m["document_id"], m["benchmark"], m["item_id"]) for m in matches) == [
        ("exact", "gsm8k", "test.jsonl:1"),
        ("only-contamination", "cmath", "cmath-3-17"),
        ("only-contamination", "gsm8k", "test.jsonl:1"),
        ("reformatted", "math", "test/algebra/101.json"),
        ("two-benchmarks", "cmath", "cmath-3-17"),
        ("two-benchmarks", "gsm8k", "test.jsonl:1"),
    ]
    report = json.loads((output / "contamination_report.json").read_text())
    assert report["gsm8k"]["segments_matched"] == 3 and report["gsm8k"]["documents_touched"] == 3
    assert report["gsm8k"]["documents_dropped"] == 1 and report["gsm8k"]["items_matched"] == 1
    assert report["gsm8k"]["top_items"] == [{"item": "test.jsonl:1", "field": "question", "segments": 3}]
    assert report["cmath"]["documents_touched"] == 2 and report["math"]["segments_matched"] == 1
    assert report["agieval"]["segments_matched"] == 0 and report["agieval"]["items_read"] == 1
    assert report["missing"] == {**report["missing"], "missing": True, "files": [], "items_read": 0}
    assert summary["contamination"]["missing"]["items_read"] == 0


def test_document_level_removal_drops_every_contaminated_document(stage):
    root, benchmarks = stage
    config = _config(root, benchmarks, "decontamination.level=document", f"output_dir={root}/corpus_docs")
    summary = run_decontaminate(config)
    removed = read_rows(root / "corpus_docs" / "removed" / "08_decontaminate")
    assert sorted(r["id"] for r in removed) == ["exact", "only-contamination", "reformatted", "two-benchmarks"]
    assert {r["removed_reason"] for r in removed} == {"benchmark_contamination"}
    assert summary["totals"]["kept"] == 41 and summary["documents_modified"] == 0 and summary["balanced"]


@pytest.mark.integration
def test_entry_point_and_its_one_line_errors(stage, tmp_path):
    root, benchmarks = stage
    result = run_module(
        "beam_pipelines.decontaminate",
        f"corpus.work_dir={tmp_path}",
        f"input_dir={root}/final",
        f"benchmarks_dir={root}/benchmarks",
        "beam.direct_num_workers=2",  # real worker processes: the side input travels to them
        f"hydra.run.dir={tmp_path}/hydra",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "corpus" / "summary.json").read_text())
    # The default benchmark list (gsm8k, math, cmath, agieval) under benchmarks_dir.
    assert set(summary["contamination"]) == {"gsm8k", "math", "cmath", "agieval"}
    assert summary["documents_modified"] == 3 and summary["balanced"]

    none_found = run_module(
        "beam_pipelines.decontaminate",
        f"corpus.work_dir={tmp_path}",
        f"input_dir={root}/final",
        f"benchmarks_dir={tmp_path}/empty",
        f"hydra.run.dir={tmp_path}/hydra2",
        timeout=300,
    )
    assert none_found.returncode == 2
    assert none_found.stderr.strip().splitlines()[-1].startswith("error: no benchmark files found at ")
