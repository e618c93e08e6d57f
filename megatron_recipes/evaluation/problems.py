"""The evaluation problem record and the table readers every benchmark reader shares.

    Problem            one benchmark item: question, reference answers, kind (answer | choice |
                       code), breakdown keys (subject, level, language), choices or tests
    CodeTest           one test of a code problem (stdin text or call arguments, expected output)
    read_rows(path)    (where, record) for every record of a JSONL / JSON / Parquet / CSV / TSV
                       file; `where` names the file and record for one-line errors
    field(record, *names)   the first present field among names, case-insensitively
    DatasetError       a missing or malformed benchmark file (entry points: one line, exit 2)

Cost: one pass over each file; memory is one evaluation set (thousands of problems at most).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Iterator, Sequence

import pyarrow.parquet as parquet

from stack_common.errors import ConfigError

# What a problem asks for, and so how its samples are scored.
KIND_ANSWER = "answer"  # a final answer compared with the references by the answer checker
KIND_CHOICE = "choice"  # a letter among the choices
KIND_CODE = "code"  # a program run on every test in the sandbox
KINDS = (KIND_ANSWER, KIND_CHOICE, KIND_CODE)

# How a code problem's tests talk to the program.
TEST_STDIN = "stdin"  # the input on standard input, the expected text on standard output
TEST_FUNCTIONAL = "functional"  # JSON arguments (one per line) to a method of `class Solution`

CHOICE_LETTERS = "ABCDEFGHIJ"


class DatasetError(ConfigError):
    """A benchmark file that is missing or unreadable (entry points: one line, exit status 2)."""


@dataclass
class CodeTest:
    input: str
    output: str
    mode: str = TEST_STDIN


@dataclass
class Problem:
    id: str
    question: str
    # Acceptable reference answers (the first is the canonical one). Choice problems: the letter
    # of the correct choice in the order shown. Code problems: empty (the tests decide).
    answers: list[str]
    subject: str = ""
    level: str = ""
    source: str = ""
    solution: str = ""
    extra: dict = dataclass_field(default_factory=dict)
    kind: str = KIND_ANSWER
    language: str = "en"
    # Fill-in-the-blank problems with several blanks (Gaokao-MathCloze): every blank's answer,
    # in order; a sample is right when it gives each of them.
    blanks: list[str] = dataclass_field(default_factory=list)
    choices: list[str] = dataclass_field(default_factory=list)
    tests: list[CodeTest] = dataclass_field(default_factory=list)
    starter_code: str = ""
    # Functional code tests call this method of `class Solution` (LeetCode style).
    entry_point: str = ""
    time_limit_s: float | None = None

    @property
    def answer(self) -> str:
        return self.answers[0] if self.answers else ""

    def text(self) -> str:
        """The problem as a prompt shows it: choices listed under the question, starter code
        for functional code problems."""
        if self.kind == KIND_CHOICE:
            options = "\n".join(f"({CHOICE_LETTERS[i]}) {choice}" for i, choice in enumerate(self.choices))
            return f"{self.question}\n{options}"
        if self.kind == KIND_CODE and self.starter_code:
            return f"{self.question}\n\n```python\n{self.starter_code.rstrip()}\n```"
        return self.question


def field(record: dict, *names: str, default: Any = None) -> Any:
    """The value of the first of `names` present in record (exact name first, then any case)."""
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    lowered = {str(key).lower(): value for key, value in record.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None:
            return value
    return default


def require_text(record: dict, where: str, *names: str) -> str:
    value = field(record, *names)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DatasetError(f"{where}: no {' / '.join(repr(n) for n in names)} field")
    return str(value)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: a record must be a JSON object")
            yield f"{path}:{number}", record


def _json_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(data, dict):
        # {"data": [...]}, a single record, or {id: record}
        listed = next(
            (data[key] for key in ("data", "examples", "problems", "rows") if isinstance(data.get(key), list)), None
        )
        if listed is not None:
            data = listed
        elif all(isinstance(value, dict) for value in data.values()) and data:
            data = [{"id": key, **value} for key, value in data.items()]
        else:
            data = [data]
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of records")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: record {index} is not a JSON object")
        yield f"{path}: record {index}", record


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise DatasetError(f"{path}: not a Parquet file ({type(error).__name__}: {error})") from None
    for index, record in enumerate(table.to_pylist()):
        yield f"{path}: row {index}", record


def _delimited_rows(path: Path, delimiter: str, fieldnames: Sequence[str] | None) -> Iterator[tuple[str, dict]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, fieldnames=list(fieldnames) if fieldnames else None, delimiter=delimiter)
        try:
            for record in reader:
                if None in record:  # more cells than columns
                    raise DatasetError(f"{path}:{reader.line_num}: {len(record[None])} more cells than columns")
                if any(value is None for value in record.values()):
                    raise DatasetError(f"{path}:{reader.line_num}: fewer cells than columns")
                yield f"{path}:{reader.line_num}", record
        except csv.Error as error:
            raise DatasetError(f"{path}:{reader.line_num}: not CSV ({error})") from None


def read_rows(path: str | Path, fieldnames: Sequence[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Records of a benchmark file by its suffix: .jsonl, .json, .parquet, .csv or .tsv.
    `fieldnames`: column names for header-less CSV/TSV files (MMLU's, MGSM's)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path)
    if suffix == ".json":
        return _json_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    if suffix in (".csv", ".tsv"):
        return _delimited_rows(path, "\t" if suffix == ".tsv" else ",", fieldnames)
    raise DatasetError(f"{path}: unknown file type {suffix!r} (JSONL, JSON, Parquet, CSV or TSV)")


def data_files(path: str | Path, suffixes: Sequence[str] = (".jsonl", ".json", ".parquet")) -> list[Path]:
    """A file, or the data files of a directory (recursively, sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not found:
            raise DatasetError(f"{path} holds no {' / '.join(suffixes)} files")
        return found
    raise DatasetError(f"{path} not found")
