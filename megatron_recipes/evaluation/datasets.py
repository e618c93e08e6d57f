"""Evaluation problems from local files in their public formats, and the offline CHAMP set.

    load_gsm8k(path)   GSM8K JSONL: {"question": ..., "answer": "...reasoning...\\n#### 72"}
    load_math(path)    MATH: a directory tree of one JSON per problem (<split>/<subject>/<n>.json
                       with "problem", "solution" (answer in \\boxed{}), "level": "Level 3",
                       "type": "Algebra"), or a JSONL file of such records (an "answer" field,
                       as in MATH-500, is used when present)
    load_champ()       CHAMP (PyPI `champ-dataset`, MIT): 270 competition problems with answers;
                       the default that works on any machine
    load_problems(name, path=None, limit=None, subjects=(), levels=()) -> list[Problem]

A `Problem` carries one or more acceptable reference answers (`answers`): CHAMP writes
"C(10, 5), or equivalently 252"; both spellings are references. Unreadable records raise a
one-line error naming the file and line.

Cost: reads the files once; memory is the evaluation set (thousands of problems at most).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import champ_dataset

from megatron_recipes.rewards.extraction import extract_boxed
from stack_common.errors import ConfigError

DATASETS = ("champ", "gsm8k", "math")
# Shipped inside a package (offline, any machine); every other dataset reads local files.
BUNDLED_DATASETS = ("champ",)


@dataclass
class Problem:
    id: str
    question: str
    answers: list[str]  # acceptable reference answers (the first is the canonical one)
    subject: str = ""
    level: str = ""
    source: str = ""
    solution: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return self.answers[0] if self.answers else ""


class DatasetError(ConfigError):
    """A benchmark file that is missing or unreadable (entry points: one line, exit status 2)."""


def gsm8k_final_answer(solution: str) -> str:
    match = re.search(r"####\s*(.+?)\s*$", solution.strip())
    if match is None:
        raise DatasetError("no '#### answer' line")
    return match.group(1).replace(",", "").strip()


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: not JSON ({error.msg})") from None


def load_gsm8k(path: str | Path) -> list[Problem]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"GSM8K file {path} not found (JSONL with 'question' and 'answer')")
    problems = []
    for number, record in _read_jsonl(path):
        try:
            answer = gsm8k_final_answer(record["answer"])
            question = record["question"]
        except (KeyError, DatasetError) as error:
            raise DatasetError(f"{path}:{number}: not a GSM8K record ({error})") from None
        problems.append(
            Problem(
                id=str(record.get("id", f"gsm8k-{number}")),
                question=question,
                answers=[answer],
                source="gsm8k",
                solution=record["answer"],
            )
        )
    return problems


def _math_problem(record: dict, identifier: str, where: str) -> Problem:
    try:
        question = record["problem"]
    except KeyError:
        raise DatasetError(f"{where}: no 'problem' field") from None
    solution = record.get("solution", "")
    answer = record.get("answer") or (extract_boxed(solution, "last") if solution else None)
    if not answer:
        raise DatasetError(f"{where}: no 'answer' and no \\boxed{{}} in the solution")
    return Problem(
        id=str(record.get("unique_id", identifier)),
        question=question,
        answers=[str(answer)],
        subject=str(record.get("type", record.get("subject", ""))),
        level=str(record.get("level", "")),
        source="math",
        solution=solution,
    )


def load_math(path: str | Path) -> list[Problem]:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json"))
        if not files:
            raise DatasetError(f"MATH directory {path} has no .json problem files")
        problems = []
        for file in files:
            try:
                record = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise DatasetError(f"{file}: not JSON ({error.msg})") from None
            problems.append(_math_problem(record, file.relative_to(path).with_suffix("").as_posix(), str(file)))
        return problems
    if path.is_file():
        return [_math_problem(record, f"math-{number}", f"{path}:{number}") for number, record in _read_jsonl(path)]
    raise DatasetError(f"MATH path {path} not found (a directory of per-problem JSON files, or JSONL)")


_CHAMP_ALTERNATIVES = re.compile(r",?\s*or (?:equivalently|an equivalent form such as)\s+", re.IGNORECASE)
_CHAMP_PHRASES = (
    re.compile(r"^(.+?) is the only possible value$", re.IGNORECASE),
    re.compile(r"^the limit exists and is equal to (.+)$", re.IGNORECASE),
    re.compile(r"^the only possible value for the limit is (.+)$", re.IGNORECASE),
)


def champ_answers(raw: str) -> list[str]:
    """CHAMP's free-form answer -> acceptable reference answers.

    "C(10, 5), or equivalently 252" -> ["C(10, 5)", "252"]; "100 (i.e., all values)" -> ["100"];
    "3 is the only possible value" -> ["3"]; "The limit exists and is equal to 2/3" -> ["2/3"];
    word answers ("No integer solutions", "Yes") stay as they are.
    """
    text = raw.strip().rstrip(".")
    text = re.sub(r"\s*\((?:i\.e\.|e\.g\.|none of|no such|no )[^()]*\)\s*$", "", text, flags=re.IGNORECASE)
    answers = []
    for part in _CHAMP_ALTERNATIVES.split(text):
        part = part.strip().rstrip(",").strip()
        for pattern in _CHAMP_PHRASES:
            match = pattern.match(part)
            if match:
                part = match.group(1).strip()
        if part:
            answers.append(part)
    return answers or [text]


def load_champ() -> list[Problem]:
    path = Path(champ_dataset.__file__).parent / "dataset_files" / "v0.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for identifier, record in data["problems"].items():
        steps = " ".join(step["_text"] for step in record.get("solution", {}).get("steps", []))
        problems.append(
            Problem(
                id=identifier,
                question=record["_text"],
                answers=champ_answers(record["_answer"]),
                subject=record.get("category", ""),
                source="champ",
                solution=steps,
                extra={"raw_answer": record["_answer"]},
            )
        )
    return problems


def reads_local_files(name: str) -> bool:
    """Whether dataset `name` needs a path to the user's copy of its files."""
    return name in DATASETS and name not in BUNDLED_DATASETS


def load_problems(
    name: str,
    path: str | None = None,
    limit: int | None = None,
    subjects: Iterable[str] = (),
    levels: Iterable[str] = (),
) -> list[Problem]:
    """Problems of dataset `name` (champ | gsm8k | math), filtered by subject/level, first `limit`."""
    if name == "champ":
        problems = load_champ()
    elif reads_local_files(name):
        if not path:
            raise DatasetError(
                f"dataset={name} reads a local file: set dataset.path=/path/to/{name} (no dataset hub is reached)"
            )
        problems = load_gsm8k(path) if name == "gsm8k" else load_math(path)
    else:
        raise DatasetError(f"unknown dataset {name!r}; one of {', '.join(DATASETS)}")
    subjects, levels = set(subjects), {str(level) for level in levels}
    if subjects:
        problems = [p for p in problems if p.subject in subjects]
    if levels:
        problems = [p for p in problems if p.level in levels or p.level.replace("Level ", "") in levels]
    return problems[:limit] if limit else problems
