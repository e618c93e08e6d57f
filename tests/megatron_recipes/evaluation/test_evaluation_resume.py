"""Resumption: an evaluation killed with SIGKILL half-way continues where it stopped when the same
command runs again, scores no problem twice, and its final records equal an uninterrupted run's.
(The same with the megatron generator sampling at temperature 1 is in
tests/megatron_recipes/posttraining/test_evaluation_on_checkpoints.py.)"""

import json
import signal
from pathlib import Path

import pytest

from megatron_recipes.evaluation.distributed import Layout
from megatron_recipes.evaluation.harness import RecordStore
from stack_common.errors import ConfigError
from tests.megatron_recipes.evaluation.benchmark_fixtures import write_generations
from tests.support import run_module

DRIVER = "tests.megatron_recipes.evaluation.resume_driver"


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def committed_ids(output: Path) -> list[str]:
    return [r["id"] for part in sorted((output / "progress").glob("rank*.jsonl")) for r in read_records(part)]


def kill_resume_and_compare(tmp_path: Path, overrides: list[str], kill_at: int, chunks: int, chunk_size: int):
    """Run uninterrupted, then killed at generator call `kill_at` and resumed; compare."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    common = [*overrides, f"harness.chunk_size={chunk_size}"]
    finished = run_module(DRIVER, "0", *common, f"output_dir={whole}", timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    killed = run_module(DRIVER, str(kill_at), *common, f"output_dir={cut}", timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (cut / "results.json").exists()
    done_before = committed_ids(cut)
    assert len(done_before) == (kill_at - 1) * chunk_size  # the chunks before the kill were committed
    resumed = run_module(DRIVER, "0", *common, f"output_dir={cut}", timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ids = committed_ids(cut)
    assert len(ids) == len(set(ids)) == chunks * chunk_size  # no problem scored twice
    assert ids[: len(done_before)] == done_before
    assert read_records(cut / "records.jsonl") == read_records(whole / "records.jsonl")
    whole_summary = json.loads((whole / "results.json").read_text())["summary"]
    cut_summary = json.loads((cut / "results.json").read_text())["summary"]
    for counter in ("symbolic_checks", "symbolic_timeouts"):  # work done by this process, not results
        whole_summary.pop(counter), cut_summary.pop(counter)
    assert cut_summary == whole_summary
    return whole_summary


def test_killed_evaluation_resumes_to_the_uninterrupted_records(tmp_path):
    benchmark = tmp_path / "sums.jsonl"  # GSM8K format
    benchmark.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i + 1}?", "answer": f"#### {2 * i + 1}"}) + "\n" for i in range(40)
        )
    )
    rows = [(f"gsm8k-{i + 1}", [f"\\boxed{{{2 * i + 1}}}", "\\boxed{-1}", f"It is {2 * i + 1}."]) for i in range(40)]
    generations = write_generations(tmp_path / "g.jsonl", rows)
    summary = kill_resume_and_compare(
        tmp_path,
        [
            "dataset=gsm8k",
            f"dataset.path={benchmark}",
            "prompt_style=gsm8k_cot_8shot",
            f"generator.path={generations}",
            "sampling.n=3",
            "k_values=[1,3]",
        ],
        kill_at=3,
        chunks=4,
        chunk_size=10,
    )
    assert summary["problems"] == 40 and summary["pass@3"] == 1.0


def test_a_torn_write_and_other_settings(tmp_path):
    fingerprint = {"benchmark": "x", "sampling": {"n": 1}}
    store = RecordStore(tmp_path, fingerprint, resume=True, layout=Layout())
    store.commit([{"id": "a", "chunk": 0}, {"id": "b", "chunk": 0}])
    store.commit([{"id": "c", "chunk": 1}, {"id": "d", "chunk": 1}])
    with store.part.open("a") as handle:  # a kill in the middle of chunk 2's write
        handle.write('{"id": "e", "chunk": 2}\n{"id": "f", "ch')
    assert sorted(store.committed([2, 2, 2])) == [0, 1]
    again = RecordStore(tmp_path, fingerprint, resume=True, layout=Layout())
    again.commit([{"id": "e", "chunk": 2}, {"id": "f", "chunk": 2}])
    assert {c: [r["id"] for r in records] for c, records in again.committed([2, 2, 2]).items()} == {
        0: ["a", "b"],
        1: ["c", "d"],
        2: ["e", "f"],
    }
    with pytest.raises(ConfigError, match=r"holds an evaluation with other settings \(sampling differ\)"):
        RecordStore(tmp_path, {**fingerprint, "sampling": {"n": 4}}, resume=True, layout=Layout())
    fresh = RecordStore(tmp_path, {**fingerprint, "sampling": {"n": 4}}, resume=False, layout=Layout())
    assert fresh.committed([2, 2, 2]) == {}
