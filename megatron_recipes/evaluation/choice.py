"""Multiple-choice benchmarks: readers, choice shuffling, and the letter a generation chose.

Layouts read (JSONL unless said otherwise; Parquet with the same fields works too):
  sat            DeepSeekMath's SAT file {"id", "question", "options": "A) 1 B) 2 C) 3 D) 4", "Answer": "B"}
  mmlu_stem      DeepSeekMath's {"question", "options": [4 texts], "answer": "B", "topic"}; or MMLU's
                 release, a directory of header-less CSVs <subject>_test.csv (question, A, B, C, D,
                 answer letter); or cais/mmlu Parquet {"question", "subject", "choices", "answer": 1}.
                 Only the STEM subjects are kept from the full MMLU release.
  gaokao_mathqa  AGIEval {"passage", "question", "options": ["(A)...", ...], "label": "A"}
  gpqa_diamond   GPQA's CSV: "Question", "Correct Answer", "Incorrect Answer 1..3", "Record ID",
                 "High-level domain"; the four answers are shuffled with a seed (the release keeps
                 the correct one first), per problem from (seed, record id), so a run is reproducible.

    extract_choice_letter(text, count) -> "A".."J" or None

Cost: linear in the file size; the letter search is one scan of the generation's answer region.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from megatron_recipes.evaluation.problems import (
    CHOICE_LETTERS,
    KIND_CHOICE,
    DatasetError,
    Problem,
    data_files,
    field,
    read_rows,
    require_text,
)
from megatron_recipes.rewards.extraction import answer_region

# MMLU's STEM group (the subjects of its "STEM" category in the release's categories list).
MMLU_STEM_SUBJECTS = frozenset(
    (
        "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
        "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
        "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
        "high_school_mathematics high_school_physics high_school_statistics machine_learning"
    ).split()
)
_MMLU_COLUMNS = ("question", "A", "B", "C", "D", "answer")


def _letter(value, count: int, where: str) -> str:
    """A reference answer given as a letter ("B", "(B)") or a 0-based index -> "B"."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
    else:
        text = str(value).strip().strip("()").strip().upper()
        index = CHOICE_LETTERS.find(text) if len(text) == 1 else -1
    if not 0 <= index < count:
        raise DatasetError(f"{where}: answer {value!r} is not one of the {count} choices")
    return CHOICE_LETTERS[index]


def _choice_problem(identifier: str, question: str, choices: list[str], correct: str, where: str, **extra) -> Problem:
    if len(choices) < 2 or len(choices) > len(CHOICE_LETTERS):
        raise DatasetError(f"{where}: {len(choices)} choices (2 to {len(CHOICE_LETTERS)} expected)")
    return Problem(
        id=identifier,
        question=question,
        answers=[_letter(correct, len(choices), where)],
        choices=[str(choice).strip() for choice in choices],
        kind=KIND_CHOICE,
        **extra,
    )


_INLINE_OPTION = re.compile(r"(?:^|\s)\(?([A-J])\)\s*")


def split_inline_options(text: str) -> list[str]:
    """ "A) 12 B) 15 C) 18" -> ["12", "15", "18"] (letters must run A, B, C... in order)."""
    pieces = _INLINE_OPTION.split(text.strip())
    letters, bodies = pieces[1::2], pieces[2::2]
    if not letters or list(letters) != list(CHOICE_LETTERS[: len(letters)]):
        return []
    return [body.strip() for body in bodies]


def load_sat(path: str | Path, seed: int = 0) -> list[Problem]:
    problems = []
    for file in data_files(path):
        for number, (where, record) in enumerate(read_rows(file), 1):
            options = field(record, "options", "choices")
            choices = split_inline_options(options) if isinstance(options, str) else list(options or [])
            if not choices:
                raise DatasetError(f"{where}: 'options' is neither a list nor 'A) .. B) ..' text")
            problems.append(
                _choice_problem(
                    str(field(record, "id", default=f"sat-{number}")),
                    require_text(record, where, "question"),
                    choices,
                    require_text(record, where, "Answer", "answer", "label"),
                    where,
                )
            )
    return problems


def load_mmlu_stem(path: str | Path, seed: int = 0) -> list[Problem]:
    path = Path(path)
    problems = []
    csv_files = sorted(path.rglob("*.csv")) if path.is_dir() else ([path] if path.suffix == ".csv" else [])
    if csv_files:
        for file in csv_files:
            subject = re.sub(r"_(test|dev|val)$", "", file.stem)
            if subject not in MMLU_STEM_SUBJECTS:
                continue
            for number, (where, record) in enumerate(read_rows(file, _MMLU_COLUMNS), 1):
                choices = [record[letter] for letter in "ABCD"]
                problems.append(
                    _choice_problem(
                        f"{subject}-{number}", record["question"], choices, record["answer"], where, subject=subject
                    )
                )
        if not problems:
            raise DatasetError(f"{path}: no <subject>_test.csv of an MMLU STEM subject")
        return problems
    for file in data_files(path):
        for number, (where, record) in enumerate(read_rows(file), 1):
            subject = str(field(record, "topic", "subject", default=""))
            if "topic" not in record and subject and subject not in MMLU_STEM_SUBJECTS:
                continue  # the whole MMLU (cais/mmlu "all"): keep its STEM subjects
            choices = field(record, "options", "choices")
            if not isinstance(choices, list):
                raise DatasetError(f"{where}: 'options' / 'choices' must be a list")
            problems.append(
                _choice_problem(
                    str(field(record, "id", default=f"mmlu_stem-{number}")),
                    require_text(record, where, "question"),
                    choices,
                    field(record, "answer", "label", default=""),
                    where,
                    subject=subject,
                )
            )
    return problems


_LABELLED_OPTION = re.compile(r"^\s*\(?([A-J])[)）.:：]\s*", re.DOTALL)


def load_gaokao_mathqa(path: str | Path, seed: int = 0) -> list[Problem]:
    problems = []
    for file in data_files(path):
        for number, (where, record) in enumerate(read_rows(file), 1):
            options = field(record, "options")
            if not isinstance(options, list) or not options:
                raise DatasetError(f"{where}: 'options' must be a list like ['(A)...', '(B)...']")
            choices = [_LABELLED_OPTION.sub("", str(option), count=1) for option in options]
            question = require_text(record, where, "question")
            passage = record.get("passage")
            if isinstance(passage, str) and passage.strip():
                question = f"{passage.strip()}\n{question}"
            problems.append(
                _choice_problem(
                    str(field(record, "id", default=f"gaokao_mathqa-{number}")),
                    question,
                    choices,
                    field(record, "label", "answer", default=""),
                    where,
                    language="zh",
                )
            )
    return problems


def load_gpqa(path: str | Path, seed: int = 0) -> list[Problem]:
    problems = []
    for file in data_files(path, (".csv", ".jsonl", ".json", ".parquet")):
        for number, (where, record) in enumerate(read_rows(file), 1):
            correct = require_text(record, where, "Correct Answer").strip()
            wrong = [require_text(record, where, f"Incorrect Answer {i}").strip() for i in (1, 2, 3)]
            identifier = str(field(record, "Record ID", default=f"gpqa-{number}"))
            order = [correct, *wrong]
            random.Random(f"{seed}:{identifier}").shuffle(order)
            problems.append(
                _choice_problem(
                    identifier,
                    require_text(record, where, "Question").strip(),
                    order,
                    order.index(correct),
                    where,
                    subject=str(field(record, "High-level domain", default="")),
                    level=str(field(record, "Subdomain", default="")),
                )
            )
    return problems


# Where a generation states its choice, most explicit first; the last match of the first
# pattern that matches wins. `{L}` is the set of valid letters.
_CHOICE_PATTERNS = (
    r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*\(?\s*([{L}])\s*\)?\s*\}?\s*\}",
    r"(?i:answer)(?:\s+(?i:is))?\s*[:：]?\s*\**\s*\(?\s*([{L}])\s*\)?(?![A-Za-z])",
    r"(?:答案|选项|故选|应选|选)\s*(?:是|为)?\s*[:：]?\s*\(?\s*([{L}])(?![A-Za-z])",
    r"^[ \t*]*\(?([{L}])\)?[ \t]*[.)）。]?[ \t*]*$",
    r"\(([{L}])\)",
)


def extract_choice_letter(text: str | None, count: int) -> str | None:
    """The letter (A.. for `count` choices) a generation chose, or None when it names none."""
    if not text or count < 1:
        return None
    region = answer_region(text)
    letters = CHOICE_LETTERS[: min(count, len(CHOICE_LETTERS))]
    for template in _CHOICE_PATTERNS:
        matches = re.findall(template.replace("{L}", letters), region, re.MULTILINE)
        if matches:
            return matches[-1].upper()
    return None
