"""Dataset loaders on files the tests write in the public formats, and the real CHAMP data."""

import base64
import json
import pickle
import zlib
from datetime import date

import pyarrow
import pyarrow.parquet as parquet
import pytest

from megatron_recipes.evaluation.datasets import (
    DatasetError,
    champ_answers,
    load_champ,
    load_gsm8k,
    load_math,
    load_problems,
)
from tests.megatron_recipes.evaluation.benchmark_fixtures import FIXTURES


def write_gsm8k(path, rows):
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    return path


def write_math_tree(root, problems):
    """MATH's public layout: <split>/<subject dir>/<n>.json with problem, level, type, solution."""
    for index, (subject, level, problem, solution) in enumerate(problems):
        directory = root / "test" / subject.lower().replace(" ", "_")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{index}.json").write_text(
            json.dumps({"problem": problem, "level": level, "type": subject, "solution": solution})
        )
    return root


def test_gsm8k_jsonl(tmp_path):
    path = write_gsm8k(
        tmp_path / "test.jsonl", [("How many?", "2 + 3 = 5\n#### 5"), ("Money?", "It costs 1,200\n#### 1,200")]
    )
    problems = load_gsm8k(path)
    assert [p.answer for p in problems] == ["5", "1200"]
    assert problems[0].id == "gsm8k-1" and problems[0].source == "gsm8k"
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q", "answer": "no hashes"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: not a GSM8K record"):
        load_gsm8k(tmp_path / "bad.jsonl")


def test_math_tree_and_jsonl(tmp_path):
    root = write_math_tree(
        tmp_path / "MATH",
        [
            ("Algebra", "Level 2", "Solve $x+1=3$.", "So $x = \\boxed{2}$."),
            ("Number Theory", "Level 5", "Compute.", "It is $\\boxed{\\frac{1}{2}}$."),
        ],
    )
    problems = load_math(root)
    assert sorted((p.subject, p.level, p.answer) for p in problems) == [
        ("Algebra", "Level 2", "2"),
        ("Number Theory", "Level 5", "\\frac{1}{2}"),
    ]
    assert problems[0].id == "test/algebra/0"
    jsonl = tmp_path / "math500.jsonl"
    jsonl.write_text(
        json.dumps(
            {
                "problem": "p",
                "solution": "s \\boxed{3}",
                "answer": "3",
                "subject": "Geometry",
                "level": 3,
                "unique_id": "u1",
            }
        )
        + "\n"
    )
    (only,) = load_math(jsonl)
    assert (only.id, only.subject, only.level, only.answer) == ("u1", "Geometry", "3", "3")
    filtered = load_problems("math", str(root), subjects=["Algebra"], levels=["2"])
    assert [p.subject for p in filtered] == ["Algebra"]


def test_champ_is_real_and_complete():
    problems = load_champ()
    assert len(problems) == 270
    assert {p.subject for p in problems} == {"Combinatorics", "Inequality", "Number-Theory", "Polynomial", "Sequence"}
    assert all(p.question and p.answers for p in problems)
    by_id = {p.id: p for p in problems}
    assert by_id["P_Combinatorics_2"].answers == ["C(10, 5)", "252"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("C(n, 4), or an equivalent form such as n(n-1)(n-2)(n-3)/4!", ["C(n, 4)", "n(n-1)(n-2)(n-3)/4!"]),
        ("100 (i.e., all values)", ["100"]),
        ("3 is the only possible value", ["3"]),
        ("The limit exists and is equal to 2/3", ["2/3"]),
        ("No integer solutions", ["No integer solutions"]),
    ],
)
def test_champ_answer_cleanup(raw, expected):
    assert champ_answers(raw) == expected


def test_missing_local_files_are_one_line_errors(tmp_path):
    with pytest.raises(DatasetError, match="set dataset.path"):
        load_problems("gsm8k")
    with pytest.raises(DatasetError, match="not found"):
        load_problems("math", str(tmp_path / "nope"))


# ---------------------------------------------------------------------------------------------
# The other published layouts of the same benchmarks, and malformed files.


def test_parquet_and_other_published_layouts(tmp_path):
    # AIME as HuggingFaceH4/aime_2024 publishes it: Parquet, lower-case fields, numeric answers.
    aime_rows = [json.loads(line) for line in (FIXTURES / "aime_2024" / "aime_2024.jsonl").read_text().splitlines()]
    table = pyarrow.table(
        {
            "id": [r["ID"] for r in aime_rows],
            "problem": [r["Problem"] for r in aime_rows],
            "solution": [r["Solution"] for r in aime_rows],
            "answer": [str(r["Answer"]) for r in aime_rows],
            "year": ["2024"] * len(aime_rows),
        }
    )
    (tmp_path / "aime" / "data").mkdir(parents=True)
    parquet.write_table(table, tmp_path / "aime" / "data" / "train-00000-of-00001.parquet")
    from_parquet = load_problems("aime", str(tmp_path / "aime"))
    from_jsonl = load_problems("aime", str(FIXTURES / "aime_2024"))
    assert [(p.id, p.question, p.answer) for p in from_parquet] == [(p.id, p.question, p.answer) for p in from_jsonl]
    assert [p.answer for p in from_jsonl] == ["66", "986", "20"]
    # GSM8K as openai/gsm8k's Parquet.
    gsm_rows = [json.loads(line) for line in (FIXTURES / "gsm8k" / "test.jsonl").read_text().splitlines()]
    parquet.write_table(pyarrow.Table.from_pylist(gsm_rows), tmp_path / "gsm8k.parquet")
    assert [p.answer for p in load_problems("gsm8k", str(tmp_path / "gsm8k.parquet"))] == ["46", "2000", "30"]
    # MMLU: the release's CSV directory keeps the STEM subjects only; cais/mmlu's Parquet likewise.
    from_csv = load_problems("mmlu_stem", str(FIXTURES / "mmlu" / "data" / "test"))
    assert [(p.subject, p.answer, len(p.choices)) for p in from_csv] == [
        ("college_mathematics", "C", 4),
        ("college_mathematics", "B", 4),
        ("high_school_physics", "C", 4),
    ]
    parquet.write_table(
        pyarrow.Table.from_pylist(
            [
                {
                    "question": "2 + 2?",
                    "subject": "elementary_mathematics",
                    "choices": ["3", "4", "5", "6"],
                    "answer": 1,
                },
                {"question": "A treaty?", "subject": "us_foreign_policy", "choices": ["a", "b", "c", "d"], "answer": 0},
            ]
        ),
        tmp_path / "mmlu.parquet",
    )
    (only,) = load_problems("mmlu_stem", str(tmp_path / "mmlu.parquet"))
    assert (only.subject, only.answer, only.choices) == ("elementary_mathematics", "B", ["3", "4", "5", "6"])
    # MGSM as JSONL (DeepSeekMath's copy) reads like the release's TSV.
    tsv = load_problems("mgsm_zh", str(FIXTURES / "mgsm" / "mgsm_zh.tsv"))
    (tmp_path / "mgsm_zh.jsonl").write_text(
        "".join(json.dumps({"question": p.question, "answer": p.answer}, ensure_ascii=False) + "\n" for p in tsv)
    )
    assert [(p.question, p.answer) for p in load_problems("mgsm_zh", str(tmp_path / "mgsm_zh.jsonl"))] == [
        (p.question, p.answer) for p in tsv
    ]
    assert [p.language for p in tsv] == ["zh"] * 3
    # Codeforces problems in DeepMind's code_contests layout.
    (contest,) = load_problems("codeforces", str(FIXTURES / "code_contests"))
    assert (contest.level, contest.time_limit_s, len(contest.tests)) == ("800", 1.5, 3)


def test_livecodebench_tests_decode_and_interactive_codeforces_problems_are_skipped():
    problems = {p.id: p for p in load_problems("livecodebench", str(FIXTURES / "livecodebench"))}
    stdin, functional = problems["abc900_a"], problems["9001"]
    assert [t.mode for t in stdin.tests] == ["stdin"] * 3 and stdin.tests[2].output == "30\n0\n15\n"
    assert functional.entry_point == "longestRun" and functional.tests[0].mode == "functional"
    assert functional.starter_code.startswith("class Solution:") and functional.level == "medium"
    assert [p.id for p in load_problems("livecodebench", str(FIXTURES / "livecodebench"), date_from="2024-08")] == [
        "abc900_a",
        "9001",
    ]
    assert [p.id for p in load_problems("codeforces", str(FIXTURES / "codeforces"))] == ["2001A", "2001B"]


def test_gpqa_choices_are_shuffled_by_seed_and_reproducible():
    path = str(FIXTURES / "gpqa" / "gpqa_diamond.csv")
    first, again = load_problems("gpqa_diamond", path), load_problems("gpqa_diamond", path)
    assert [(p.choices, p.answer) for p in first] == [(p.choices, p.answer) for p in again]
    for problem in first:
        assert sorted(problem.choices) == sorted(
            {"recA1": ["Nitrogen", "Oxygen", "Argon", "Carbon dioxide"], "recB2": ["2E", "E/2", "4E", "E"]}.get(
                problem.id, ["The nucleus", "The ribosome", "The Golgi apparatus", "The lysosome"]
            )
        )
    correct = {"recA1": "Nitrogen", "recB2": "2E", "recC3": "The nucleus"}
    assert all(p.choices["ABCD".index(p.answer)] == correct[p.id] for p in first)
    positions = {
        seed: tuple(p.answer for p in load_problems("gpqa_diamond", path, choice_seed=seed)) for seed in range(8)
    }
    assert len(set(positions.values())) > 1  # the release's order (correct first) is not kept


def _compressed(value) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(value))).decode()


MALFORMED = [
    ("gsm8k", "test.jsonl", '{"question": "q", "answer": "1\\n#### 1"}\n{"question": \n', "test.jsonl:2: not JSON"),
    ("gsm8k", "test.jsonl", '{"question": "q", "answer": "no final line"}\n', "test.jsonl:1: not a GSM8K record"),
    ("math500", "test.jsonl", '{"problem": "p", "solution": "no box"}\n', "test.jsonl:1: no 'answer' and no \\boxed{}"),
    ("aime", "aime.parquet", "not parquet at all", "aime.parquet: not a Parquet file"),
    (
        "ocw",
        "test.jsonl",
        '{"id": 1, "problem": "p", "answer": "1"}\n{"id": 2, "problem": "p"}\n',
        "test.jsonl:2: no 'answer' field",
    ),
    ("cmath", "test.jsonl", '{"id": "c", "question": "q"}\n', "test.jsonl:1: no 'golden' field"),
    ("mgsm_zh", "mgsm_zh.tsv", "q\t1\textra\n", "mgsm_zh.tsv:1: 1 more cells than columns"),
    ("gaokao_mathcloze", "c.jsonl", '{"question": "q", "answer": " ; "}\n', "c.jsonl:1: empty 'answer'"),
    ("sat", "test.jsonl", '{"id": 0, "question": "q", "options": "1, 2, 3", "Answer": "A"}\n', "'options' is neither"),
    (
        "mmlu_stem",
        "test.jsonl",
        '{"question": "q", "options": ["a", "b", "c", "d"], "answer": "E", "topic": "anatomy"}\n',
        "test.jsonl:1: answer 'E' is not one of the 4 choices",
    ),
    (
        "gaokao_mathqa",
        "q.jsonl",
        '{"question": "q", "options": "(A)1 (B)2", "label": "A"}\n',
        "'options' must be a list",
    ),
    (
        "gpqa_diamond",
        "gpqa.csv",
        "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2\nq,a,b,c\n",
        "gpqa.csv:2: no 'Incorrect Answer 3' field",
    ),
    (
        "livecodebench",
        "test.jsonl",
        json.dumps({"question_id": "x", "question_content": "c", "public_test_cases": "[]", "private_test_cases": "!!"})
        + "\n",
        "test.jsonl:1: test cases are neither JSON nor the compressed form",
    ),
    (
        "livecodebench",
        "test.jsonl",
        # A pickle that names a class (here `datetime.date`) is refused: reading a file never runs its code.
        json.dumps({"question_id": "x", "question_content": "c", "private_test_cases": _compressed(date(2024, 1, 1))})
        + "\n",
        "test.jsonl:1: test cases are neither JSON nor the compressed form (UnpicklingError)",
    ),
    ("codeforces", "p.jsonl", '{"id": "1A", "description": "d", "official_tests": []}\n', "p.jsonl:1: no tests"),
]


@pytest.mark.parametrize("name, filename, content, message", MALFORMED)
def test_malformed_files_fail_with_one_line_naming_the_file_and_record(name, filename, content, message, tmp_path):
    path = tmp_path / filename
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as error:
        load_problems(name, str(path))
    text = str(error.value)
    assert message in text and str(tmp_path) in text and "\n" not in text, text


def test_a_malformed_math_tree_file_and_duplicate_ids(tmp_path):
    root = write_math_tree(tmp_path / "MATH", [("Algebra", "Level 1", "p", "\\boxed{1}")])
    (root / "test" / "algebra" / "1.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"algebra/1.json: not JSON"):
        load_problems("math", str(root))
    (tmp_path / "dup.jsonl").write_text('{"id": 1, "problem": "p", "answer": "1"}\n' * 2)
    with pytest.raises(DatasetError, match="problem id '1' appears twice"):
        load_problems("ocw", str(tmp_path / "dup.jsonl"))
