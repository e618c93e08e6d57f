"""Every benchmark format end to end on the fixtures we wrote in its public layout: read, prompted,
scored with the real answer checker and the real sandbox (programs and code tests), and tabled. A
generator returning the reference answers (precomputed generations) scores 100%, one returning
wrong answers 0%."""

import json

import pytest

from megatron_recipes.evaluation.code_problems import judge_program_source, read_judge_output
from megatron_recipes.evaluation.datasets import DATASETS, find_benchmark_path, load_problems
from megatron_recipes.evaluation.harness import run_evaluation, write_report
from megatron_recipes.evaluation.problems import KIND_CHOICE, KIND_CODE
from megatron_recipes.evaluation.prompts import PROMPT_STYLES
from megatron_recipes.generation.interface import PrecomputedGenerations, SamplingParams
from megatron_recipes.rewards import AnswerChecker, DeadlineWorkerPool
from megatron_recipes.sandbox import SandboxLimits, SandboxPool
from tests.megatron_recipes.evaluation.benchmark_fixtures import FIXTURES, PROGRAMS, sample_text, write_generations

# Every benchmark in its default style, plus the other styles the papers use on some of them.
CASES = [(name, spec.default_style) for name, spec in DATASETS.items()] + [
    ("gsm8k", "pal_4shot"),
    ("math", "program_of_thought"),
    ("math500", "zero_shot"),
    ("cmath", "zero_shot"),
    ("mmlu_stem", "zero_shot"),
    ("gpqa_diamond", "zero_shot"),
    ("livecodebench", "zero_shot"),
]


@pytest.fixture(scope="module")
def tools():
    with (
        DeadlineWorkerPool(num_workers=2, task_timeout_s=5.0) as pool,
        SandboxPool(2, SandboxLimits()) as sandbox,
        SandboxPool(2, SandboxLimits(wall_seconds=60)) as code_sandbox,
    ):
        yield AnswerChecker(pool=pool), sandbox, code_sandbox


def fixture_problems(name):
    path = find_benchmark_path(name, FIXTURES)
    assert DATASETS[name].bundled or path is not None, f"no fixture for {name}"
    problems = load_problems(name, str(path) if path else None)
    return problems[:6] if name == "champ" else problems


def test_every_benchmark_has_a_fixture_case():
    assert {name for name, _ in CASES} == set(DATASETS)


@pytest.mark.parametrize("name, style_name", CASES)
def test_reference_answers_score_100_and_wrong_answers_0(name, style_name, tools, tmp_path):
    checker, sandbox, code_sandbox = tools
    problems = fixture_problems(name)
    style = PROMPT_STYLES[style_name]
    assert len(problems) >= 2 and {p.kind for p in problems} == {DATASETS[name].kind}
    # Prompted: the question is in the prompt with what the kind needs, after the exemplars.
    for problem in problems:
        prompt = style.build(problem)
        assert problem.question in prompt
        if problem.kind == KIND_CHOICE:
            assert all(f"({letter}) {choice}" in prompt for letter, choice in zip("ABCDEFGHIJ", problem.choices))
        if problem.kind == KIND_CODE and problem.starter_code:
            assert problem.starter_code.rstrip() in prompt
        for exemplar in style.default_exemplars:
            assert exemplar.question in prompt
    reports = {}
    for right in (True, False):
        generations = write_generations(
            tmp_path / f"{right}.jsonl", [(p.id, [sample_text(p, style, right)]) for p in problems]
        )
        reports[right] = run_evaluation(
            problems,
            PrecomputedGenerations(generations),
            style,
            SamplingParams(),
            checker,
            sandbox,
            code_sandbox=code_sandbox,
        )
    right, wrong = reports[True].summary, reports[False].summary
    assert right["gradable"] == wrong["gradable"] == len(problems)
    assert right["accuracy"] == right["pass@1"] == right["cons@1" if "cons@1" in right else "pass@1"] == 1.0
    assert wrong["accuracy"] == 0.0
    assert right["samples_without_answer"] == 0 and right["samples_timed_out"] == 0
    for record in reports[True].records:
        (sample,) = record["samples"]
        assert sample["correct"] and sample["answer"] is not None
        if DATASETS[name].kind == KIND_CODE:
            assert sample["judge"]["tests_passed"] == sample["judge"]["tests_total"] > 0
    # Tabled: results, records and the readable table.
    paths = write_report(reports[True], tmp_path / "report", title=f"{name} / {style_name}")
    results = json.loads(paths["results"].read_text())
    assert results["summary"]["problems"] == len(problems) and results["summary"]["accuracy"] == 1.0
    assert len(paths["records"].read_text().splitlines()) == len(problems)
    assert "| accuracy | 1.0000 |" in paths["table"].read_text()


def test_breakdowns_by_subject_level_and_language(tools, tmp_path):
    checker, sandbox, code_sandbox = tools
    problems = fixture_problems("gpqa_diamond")
    style = PROMPT_STYLES["r1"]
    texts = {p.id: sample_text(p, style, p.subject != "Physics") for p in problems}
    generator = PrecomputedGenerations(write_generations(tmp_path / "g.jsonl", [(k, [v]) for k, v in texts.items()]))
    report = run_evaluation(problems, generator, style, SamplingParams(), checker)
    assert report.by_subject == {
        "Biology": {"problems": 1, "samples": 1, "accuracy": 1.0},
        "Chemistry": {"problems": 1, "samples": 1, "accuracy": 1.0},
        "Physics": {"problems": 1, "samples": 1, "accuracy": 0.0},
    }
    assert set(report.by_level) == {"General Chemistry", "Quantum Mechanics", "Molecular Biology"}
    chinese = fixture_problems("cmath")
    style = PROMPT_STYLES["zh_cot_4shot"]
    generator = PrecomputedGenerations(
        write_generations(tmp_path / "zh.jsonl", [(p.id, [sample_text(p, style, True)]) for p in chinese])
    )
    report = run_evaluation(chinese, generator, style, SamplingParams(), checker)
    assert report.by_language == {"zh": {"problems": 3, "samples": 3, "accuracy": 1.0}}
    assert report.by_subject == {
        "grade 3": {"problems": 2, "samples": 2, "accuracy": 1.0},
        "grade 4": {"problems": 1, "samples": 1, "accuracy": 1.0},
    }


def test_fill_in_problems_need_every_blank(tools, tmp_path):
    checker, _, _ = tools
    problems = [p for p in fixture_problems("gaokao_mathcloze") if p.blanks]
    assert [p.blanks for p in problems] == [["2", "3"]]
    style = PROMPT_STYLES["zh_cot_4shot"]
    texts = [
        "两根为 $\\boxed{2}$ 和 $\\boxed{3}$。",  # both blanks
        "所以答案是2；3。",  # one answer, split at the separator
        "两根为 $\\boxed{2}$ 和 $\\boxed{4}$。",  # one blank wrong
        "所以答案是2。",  # one blank missing
    ]
    generator = PrecomputedGenerations(write_generations(tmp_path / "g.jsonl", [(problems[0].id, texts)]))
    report = run_evaluation(problems, generator, style, SamplingParams(n=4), checker, k_values=[4])
    assert [s["correct"] for s in report.records[0]["samples"]] == [True, True, False, False]
    assert report.summary["pass@1"] == 0.5 and report.summary["pass@4"] == 1.0


def test_code_samples_that_loop_or_crash_fail_and_timeouts_are_counted(tools, tmp_path):
    checker, sandbox, code_sandbox = tools
    problems = fixture_problems("codeforces")[:1]
    style = PROMPT_STYLES["zero_shot"]
    texts = [
        sample_text(problems[0], style, True),
        "```python\nwhile True:\n    pass\n```",
        "```python\nraise SystemExit(3)\n```",
        "I cannot write this program.",
    ]
    generator = PrecomputedGenerations(write_generations(tmp_path / "g.jsonl", [(problems[0].id, texts)]))
    report = run_evaluation(
        problems, generator, style, SamplingParams(n=4), checker, sandbox, k_values=[4], code_sandbox=code_sandbox
    )
    samples = report.records[0]["samples"]
    assert [s["correct"] for s in samples] == [True, False, False, False]
    assert samples[1]["timed_out"] and samples[1]["judge"]["detail"].startswith("timeout")
    assert samples[2]["judge"]["detail"] == "error: exit status 3"
    assert samples[3]["answer"] is None  # no program
    summary = report.summary
    assert summary["samples_timed_out"] == 1 and summary["samples_without_answer"] == 1
    assert summary["pass@1"] == 0.25 and summary["pass@4"] == 1.0 and "cons@1" not in summary


def test_the_judge_runs_tests_in_its_own_process_where_fork_is_refused(tools):
    """A per-user process limit can refuse the judge's forks: each test then runs inside the judge,
    with the same redirections and a wall timer."""
    _, _, code_sandbox = tools
    problems = {p.id: p for p in fixture_problems("livecodebench")}
    refuse_fork = "\n\ndef _refused(*_):\n    raise BlockingIOError(11, 'fork refused')\n\n\nos.fork = _refused\n"
    cases = [
        ("abc900_a", PROGRAMS["livecodebench"]["abc900_a"]["right"], True, False),
        ("9001", PROGRAMS["livecodebench"]["9001"]["right"], True, False),
        ("9001", PROGRAMS["livecodebench"]["9001"]["wrong"], False, False),
        ("abc900_a", "while True:\n    pass\n", False, True),
    ]
    for problem_id, program, passes, times_out in cases:
        source = judge_program_source(problems[problem_id], program, 1.0)
        head, call = source.rsplit("\n\njudge(", 1)
        result = code_sandbox.run(f"{head}{refuse_fork}\n\njudge({call}")
        report = read_judge_output(result, len(problems[problem_id].tests))
        assert (report.passed, report.timed_out) == (passes, times_out), (problem_id, report)
