"""The suite runner through the entry point, on the fixtures we wrote (laid out as a benchmarks
directory) with precomputed generations for two rows: one answering rightly, one wrongly. The
paper-shaped table (Markdown, JSON, HTML), the skipped benchmarks, per-problem records. (The suite
on real base / SFT / GRPO checkpoints: tests/megatron_recipes/posttraining/test_evaluation_on_checkpoints.py.)"""

import json
import shutil

from megatron_recipes.config import register_configs
from megatron_recipes.evaluation.datasets import load_problems
from megatron_recipes.evaluation.prompts import PROMPT_STYLES
from megatron_recipes.evaluation.suite import plan_entries
from stack_common.cli import compose_config
from tests.megatron_recipes.evaluation.benchmark_fixtures import FIXTURES, sample_text, write_generations
from tests.support import run_module


def write_row(directory, entries, right: bool, right_share: float = 1.0):
    """<directory>/<column key>.jsonl for every entry: n samples per problem, the first
    round(right_share x n) right when `right` (code: no program at all when wrong)."""
    for entry in entries:
        style = PROMPT_STYLES[entry.style_name]
        rows = []
        for problem in load_problems(entry.spec.name, str(entry.path) if entry.path else None):
            n = entry.params.n
            good = round(right_share * n) if right else 0
            texts = [sample_text(problem, style, True) for _ in range(good)]
            bad = "I cannot solve this." if problem.kind == "code" else sample_text(problem, style, False)
            rows.append((problem.id, texts + [bad] * (n - good)))
        write_generations(directory / f"{entry.key}.jsonl", rows)


def plan(suite: str, benchmarks_dir):
    config = compose_config("evaluate", [f"suite={suite}", "suite.checkpoints=[x]"], register_configs)
    return plan_entries(config.suite.benchmarks, str(benchmarks_dir), config.sampling, [])


def run_suite(suite: str, benchmarks_dir, rows: dict, output, *extra):
    result = run_module(
        "megatron_recipes.evaluate",
        f"suite={suite}",
        f"suite.benchmarks_dir={benchmarks_dir}",
        f"suite.checkpoints=[{','.join(str(path) for path in rows.values())}]",
        f"suite.names=[{','.join(rows)}]",
        f"output_dir={output}",
        *extra,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((output / "suite.json").read_text())


def test_r1_suite_table_with_pass_at_1_and_cons_at_64(tmp_path):
    entries, missing = plan("r1", FIXTURES)
    assert missing == [] and [e.title for e in entries] == [
        "AIME 2024",
        "MATH-500",
        "GPQA Diamond",
        "LiveCodeBench",
        "Codeforces",
    ]
    write_row(tmp_path / "right", entries, True, right_share=0.75)  # 48 of AIME's 64 samples, 3 of 4, 6 of 8
    write_row(tmp_path / "wrong", entries, False)
    table = run_suite("r1", FIXTURES, {"right": tmp_path / "right", "wrong": tmp_path / "wrong"}, tmp_path / "out")
    titles = [c["title"] for c in table["columns"]]
    assert titles == [
        "AIME 2024 pass@1",
        "AIME 2024 cons@64",
        "MATH-500 pass@1",
        "GPQA Diamond pass@1",
        "LiveCodeBench pass@1",
        "Codeforces pass@1",
    ]
    right, wrong = (row["cells"] for row in table["rows"])
    assert right == {title: 0.75 for title in titles} | {"AIME 2024 cons@64": 1.0}
    assert wrong == {title: 0.0 for title in titles}
    aime = table["rows"][0]["details"]["aime_2024"]["summary"]
    assert aime["samples_per_problem"] == 64 and aime["temperature"] == 0.6 and aime["problems"] == 3
    assert table["benchmarks"][0]["sampling"]["top_p"] == 0.95
    markdown = (tmp_path / "out" / "suite.md").read_text().splitlines()
    assert markdown[2] == "| model | " + " | ".join(titles) + " |"
    assert markdown[4] == "| right | 75.0 | 100.0 | 75.0 | 75.0 | 75.0 | 75.0 |"
    html = (tmp_path / "out" / "suite.html").read_text()
    assert "GPQA Diamond: accuracy by subject" in html and html.count("<tr>") == 3
    records = (tmp_path / "out" / table["rows"][0]["details"]["livecodebench"]["records"]).read_text().splitlines()
    assert len(records) == 3 and len(json.loads(records[0])["samples"]) == 8


def test_deepseekmath_suites_skip_and_list_missing_benchmarks(tmp_path):
    benchmarks = tmp_path / "benchmarks"
    shutil.copytree(FIXTURES, benchmarks, ignore=shutil.ignore_patterns("ocw", "cmath"))
    entries, missing = plan("deepseekmath", benchmarks)
    assert [m["benchmark"] for m in missing] == ["ocw", "cmath"]
    write_row(tmp_path / "right", entries, True)
    write_row(tmp_path / "wrong", entries, False)
    table = run_suite(
        "deepseekmath", benchmarks, {"base": tmp_path / "right", "instruct": tmp_path / "wrong"}, tmp_path / "out"
    )
    titles = [c["title"] for c in table["columns"]]
    assert titles == [
        "GSM8K",
        "MATH",
        "SAT",
        "MMLU-STEM",
        "Gaokao-MathCloze",
        "Gaokao-MathQA",
        "GSM8K+Python",
        "MATH+Python",
    ]
    assert table["rows"][0]["cells"] == dict.fromkeys(titles, 1.0)
    assert table["rows"][1]["cells"] == dict.fromkeys(titles, 0.0)
    assert [(m["column"], m["tried"]) for m in table["missing"]] == [
        ("OCW", [str(benchmarks / "ocw" / "test.jsonl")]),
        ("CMATH", [str(benchmarks / "cmath" / "test.jsonl")]),
    ]
    assert "Skipped (files not found):" in (tmp_path / "out" / "suite.md").read_text()
    math = table["rows"][0]["details"]["math"]
    assert set(math["by_subject"]) == {"Algebra", "Number Theory", "Geometry"} and math["summary"]["problems"] == 4
    # The instruct suite: zero-shot chain-of-thought and tool-integrated columns.
    entries, _ = plan("deepseekmath_instruct", benchmarks)
    write_row(tmp_path / "instruct", entries, True)
    table = run_suite("deepseekmath_instruct", benchmarks, {"rl": tmp_path / "instruct"}, tmp_path / "instruct_out")
    assert table["rows"][0]["cells"] == {
        "GSM8K": 1.0,
        "MATH": 1.0,
        "MGSM-zh": 1.0,
        "GSM8K+Python": 1.0,
        "MATH+Python": 1.0,
    }
    assert [m["column"] for m in table["missing"]] == ["CMATH"]


def test_a_second_run_reads_finished_cells_back(tmp_path):
    entries, _ = plan("r1", FIXTURES)
    entries = [e for e in entries if e.spec.name == "math500"]
    write_row(tmp_path / "right", entries, True)
    first = run_suite("r1", FIXTURES, {"m": tmp_path / "right"}, tmp_path / "out", "suite.only=[math500]")
    records = (tmp_path / "out" / "m" / "math-500" / "records.jsonl").read_text()
    second = run_suite("r1", FIXTURES, {"m": tmp_path / "right"}, tmp_path / "out", "suite.only=[math500]")
    assert first["rows"] == second["rows"] and [c["title"] for c in first["columns"]] == ["MATH-500 pass@1"]
    assert (tmp_path / "out" / "m" / "math-500" / "records.jsonl").read_text() == records


def test_a_bad_suite_fails_with_one_line():
    result = run_module("megatron_recipes.evaluate", "suite=r1", timeout=120)
    assert result.returncode == 2 and "a suite needs the rows to evaluate" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
