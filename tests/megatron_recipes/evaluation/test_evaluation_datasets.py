"""Dataset loaders on files the tests write in the public formats, and the real CHAMP data."""

import json

import pytest

from megatron_recipes.evaluation.datasets import (
    DatasetError,
    champ_answers,
    load_champ,
    load_gsm8k,
    load_math,
    load_problems,
)


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
