"""The evaluation harness end to end: real CHAMP data, MATH/GSM8K files in public formats, real
answer checking and real sandboxed program-of-thought; the entry point as a subprocess."""

import json

import pytest

from megatron_recipes.config import register_configs
from megatron_recipes.evaluation.datasets import load_champ, load_gsm8k, load_math
from megatron_recipes.evaluation.harness import run_evaluation, write_report
from megatron_recipes.evaluation.metrics import majority_index, pass_at_k
from megatron_recipes.evaluation.prompts import PROMPT_STYLES, get_prompt_style
from megatron_recipes.generation.interface import Generation, PrecomputedGenerations, SamplingParams
from megatron_recipes.rewards import AnswerChecker, DeadlineWorkerPool
from megatron_recipes.sandbox import SandboxLimits, SandboxPool
from stack_common.cli import compose_config
from tests.megatron_recipes.evaluation.test_evaluation_datasets import write_gsm8k, write_math_tree
from tests.support import run_module


@pytest.fixture(scope="module")
def checker():
    with DeadlineWorkerPool(num_workers=2, task_timeout_s=3.0) as pool:
        yield AnswerChecker(pool=pool)


def write_generations(path, rows):
    path.write_text("".join(json.dumps({"id": problem_id, "generations": texts}) + "\n" for problem_id, texts in rows))
    return path


def test_pass_at_k_and_majority():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert majority_index(["\\frac12", "3", "0.5", None]) == 0  # 1/2 twice (spellings grouped)
    assert majority_index([None, None]) is None


def test_precomputed_generations_forms(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "id": "a",
                        "generations": [
                            "x1",
                            {"text": "x2", "token_ids": [1, 2], "logprobs": [-0.1, -0.2], "finish_reason": "length"},
                        ],
                    }
                ),
                json.dumps({"id": "b", "text": "y1"}),
                json.dumps({"id": "b", "text": "y2"}),
                json.dumps({"prompt": "free prompt", "generations": ["z"]}),
            ]
        )
        + "\n"
    )
    generator = PrecomputedGenerations(path)
    out = generator.generate(["pa", "pb"], SamplingParams(n=2), request_ids=["a", "b"])
    assert [[g.text for g in row] for row in out] == [["x1", "x2"], ["y1", "y2"]]
    assert out[0][1] == Generation("x2", [1, 2], [-0.1, -0.2], "length")
    assert generator.generate(["free prompt"], SamplingParams())[0][0].text == "z"
    with pytest.raises(ValueError, match="has 1 generations for 'free prompt"):
        generator.generate(["free prompt"], SamplingParams(n=2))
    with pytest.raises(KeyError, match="no generations for 'c'"):
        generator.generate(["?"], SamplingParams(), request_ids=["c"])


def test_champ_with_right_and_wrong_samples(tmp_path, checker):
    problems = load_champ()
    rows = []
    for index, problem in enumerate(problems):
        other = problems[(index + 7) % len(problems)]
        rows.append(
            (
                problem.id,
                [
                    f"Reasoning... so the answer is $\\boxed{{{problem.answers[-1]}}}$.",
                    f"\\boxed{{{other.answers[0]}}}",
                ],
            )
        )
    generator = PrecomputedGenerations(write_generations(tmp_path / "champ.jsonl", rows))
    report = run_evaluation(
        problems, generator, get_prompt_style("zero_shot"), SamplingParams(n=2), checker, k_values=[1, 2]
    )
    summary = report.summary
    assert summary["problems"] == 270 and summary["gradable"] >= 265
    first_sample_correct = [r["samples"][0]["correct"] for r in report.records if r["gradable"]]
    assert all(first_sample_correct)
    assert summary["pass@2"] == 1.0
    # The borrowed answers are right only where two problems share an answer ("No", "0", ...).
    second_correct = sum(r["samples"][1]["correct"] for r in report.records if r["gradable"])
    assert second_correct < 60
    assert summary["accuracy"] == pytest.approx(
        (len(first_sample_correct) + second_correct) / (2 * len(first_sample_correct))
    )
    assert set(report.by_subject) == {"Combinatorics", "Inequality", "Number-Theory", "Polynomial", "Sequence"}


def test_math_breakdown_by_subject_and_level(tmp_path, checker):
    root = write_math_tree(
        tmp_path / "MATH",
        [
            ("Algebra", "Level 1", "Solve $2x = 1$.", "$x = \\boxed{\\frac{1}{2}}$"),
            ("Algebra", "Level 3", "Find $\\sqrt{8}$.", "$\\boxed{2\\sqrt{2}}$"),
            ("Geometry", "Level 3", "Area?", "$\\boxed{9\\pi}$"),
        ],
    )
    problems = load_math(root)
    answers = {"test/algebra/0": "0.5", "test/algebra/1": "\\sqrt{8}", "test/geometry/2": "9"}
    generator = PrecomputedGenerations(
        write_generations(tmp_path / "g.jsonl", [(pid, [f"\\boxed{{{a}}}"]) for pid, a in answers.items()])
    )
    report = run_evaluation(problems, generator, get_prompt_style("math_cot_4shot"), SamplingParams(), checker)
    assert report.summary["accuracy"] == pytest.approx(2 / 3)
    assert report.by_subject == {
        "Algebra": {"samples": 2, "accuracy": 1.0},
        "Geometry": {"samples": 1, "accuracy": 0.0},
    }
    assert report.by_level == {"Level 1": {"samples": 1, "accuracy": 1.0}, "Level 3": {"samples": 2, "accuracy": 0.5}}
    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["results"].read_text())["summary"]["problems"] == 3
    assert len(paths["records"].read_text().splitlines()) == 3
    assert "| Geometry | 1 | 0.0000 |" in paths["table"].read_text()


def test_gsm8k_program_of_thought_runs_in_the_sandbox(tmp_path, checker):
    problems = load_gsm8k(
        write_gsm8k(
            tmp_path / "t.jsonl",
            [("Add 2 and 3.", "2+3=5\n#### 5"), ("Half of 9?", "9/2\n#### 4.5"), ("Loop?", "#### 1")],
        )
    )
    programs = {
        "gsm8k-1": "```python\nprint('thinking')\nprint(2 + 3)\n```",
        "gsm8k-2": "```python\nprint(9 / 2)\n```",
        "gsm8k-3": "```python\nwhile True:\n    pass\n```",
    }
    generator = PrecomputedGenerations(write_generations(tmp_path / "g.jsonl", [(k, [v]) for k, v in programs.items()]))
    # 1 CPU second against 120 wall seconds: the busy loop hits the CPU limit however loaded the machine.
    with SandboxPool(2, SandboxLimits(wall_seconds=120, cpu_seconds=1)) as sandbox:
        report = run_evaluation(
            problems, generator, get_prompt_style("program_of_thought"), SamplingParams(), checker, sandbox
        )
    assert [r["samples"][0]["correct"] for r in report.records] == [True, True, False]
    assert report.records[2]["samples"][0]["execution"]["limit_hit"] == "cpu_time"
    assert "```python" in PROMPT_STYLES["program_of_thought"].build("q")


def test_few_shot_prompts_have_the_standard_shape():
    gsm8k = get_prompt_style("gsm8k_cot_8shot").build("How many apples?")
    assert (
        gsm8k.count("Question:") == 9
        and gsm8k.count("The answer is") == 8
        and gsm8k.endswith("Question: How many apples?\nAnswer:")
    )
    math = get_prompt_style("math_cot_4shot").build("Compute $1+1$.")
    assert math.count("Problem:") == 5 and math.count("\\boxed{") == 4


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["dataset=gsm8k", "dataset.path=/data/test.jsonl", "prompt_style=gsm8k_cot_8shot"],
        [
            "dataset=math",
            "dataset.path=/data/MATH/test",
            "prompt_style=math_cot_4shot",
            "sampling.n=4",
            "k_values=[1,4]",
        ],
    ],
)
def test_config_compositions(overrides):
    config = compose_config("evaluate", ["generator.path=/g.jsonl", *overrides], register_configs)
    assert config.generator.name == "precomputed" and config.output_dir.startswith("outputs/evaluate/")


def test_entry_point_end_to_end_and_one_line_errors(tmp_path):
    problems = load_champ()[:6]
    generations = write_generations(tmp_path / "g.jsonl", [(p.id, [f"\\boxed{{{p.answers[0]}}}"]) for p in problems])
    result = run_module(
        "megatron_recipes.evaluate",
        f"generator.path={generations}",
        "dataset.limit=6",
        f"output_dir={tmp_path / 'out'}",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "results.json").read_text())["summary"]
    assert summary["problems"] == 6 and summary["accuracy"] == 1.0
    assert len((tmp_path / "out" / "records.jsonl").read_text().splitlines()) == 6
    for arguments, message in [
        (["generator=megatron"], "generator=megatron needs generator.checkpoint"),  # the megatron generator exists now
        (["generator.path=/g.jsonl", "prompt_style=nope"], "prompt_style='nope' is not one of"),
        (
            ["generator.path=/g.jsonl", "sampling.n=2", "k_values=[4]"],
            "k_values[0]=4 must lie between 1 and sampling.n=2",
        ),
        (["dataset=gsm8k", "generator.path=/g.jsonl"], "dataset=gsm8k reads local files"),
    ]:
        failed = run_module("megatron_recipes.evaluate", *arguments, timeout=120)
        assert failed.returncode == 2 and message in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, (
            failed.stderr
        )
