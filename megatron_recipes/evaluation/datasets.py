"""Evaluation benchmarks read from local files in their public layouts, and the offline CHAMP set.

None of these can be downloaded here: the user keeps a copy (see README, "Evaluation") and names
the file or directory (`dataset.path`), or lays them out under one directory for the suite
runner (`suite.benchmarks_dir`, where each benchmark's usual paths, `BenchmarkSpec.layouts`, are
tried in order). Free-form answers (this module):

  gsm8k        JSONL/Parquet {"question", "answer": "...reasoning...\\n#### 72"} (openai/gsm8k), or
               DeepSeekMath's {"question", "cot", "answer": "72"}
  math         the per-problem JSON tree (<split>/<subject>/<n>.json: "problem", "solution" with
               \\boxed{}, "level": "Level 3", "type": "Algebra"), or JSONL/Parquet of such records
  math500      JSONL {"problem", "solution", "answer", "subject", "level": 3, "unique_id"}
  aime         JSONL/Parquet {"id", "problem", "solution", "answer", "year"} (HuggingFaceH4/aime_2024),
               field names in any case ({"ID", "Problem", "Answer"} as Maxwell-Jia/AIME_2024 has them)
  ocw          JSONL {"id", "problem", "solution", "answer"} (OCW Courses, as DeepSeekMath ships it)
  cmath        JSONL {"id", "question", "golden", "grade", "reasoning_step"} (CMATH)
  mgsm_zh      TSV without header (question, answer number; the MGSM release), or JSONL/Parquet
               {"question", "answer"} / {"question", "answer_number"}
  gaokao_mathcloze  AGIEval JSONL {"passage", "question", "options", "label", "answer": "a;b"}
               (several blanks separated by ';': a sample must give every one)
  champ        CHAMP (PyPI `champ-dataset`, MIT): 270 competition problems, offline on any machine
Multiple choice (choice.py): sat, mmlu_stem, gaokao_mathqa, gpqa_diamond. Code (code_problems.py):
livecodebench, codeforces.

    load_problems(name, path=None, limit=None, subjects=(), levels=(), ...) -> list[Problem]
    DATASETS: name -> BenchmarkSpec (title, kind, reader, layouts, default prompt style, language)

Every unreadable record raises DatasetError with one line naming the file and the record.

Cost: reads the files once; memory is the evaluation set (thousands of problems at most).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import champ_dataset

from megatron_recipes.evaluation.choice import load_gaokao_mathqa, load_gpqa, load_mmlu_stem, load_sat
from megatron_recipes.evaluation.code_problems import load_codeforces, load_livecodebench
from megatron_recipes.evaluation.problems import (
    KIND_ANSWER,
    KIND_CHOICE,
    KIND_CODE,
    DatasetError,
    Problem,
    data_files,
    field,
    read_rows,
    require_text,
)
from megatron_recipes.rewards.extraction import extract_boxed

__all__ = ["DATASETS", "BenchmarkSpec", "DatasetError", "Problem", "load_problems", "reads_local_files"]


def gsm8k_final_answer(solution: str) -> str:
    match = re.search(r"####\s*(.+?)\s*$", solution.strip())
    if match is None:
        raise DatasetError("no '#### answer' line")
    return match.group(1).replace(",", "").strip()


def _records(path: str | Path, suffixes=(".jsonl", ".json", ".parquet")):
    for file in data_files(path, suffixes):
        yield from read_rows(file)


def load_jsonl(path: str | Path) -> list[Problem]:
    """Any question set as JSONL: {"question": ..., "answer": "7" or ["7", "seven"], optional "id",
    "subject", "level"} (generated sets: the R1 chain's bilingual questions, general prompts)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"question file {path} not found (JSONL with 'question' and 'answer')")
    problems = []
    for number, (where, record) in enumerate(_records(path), 1):
        answers = record.get("answer")
        answers = answers if isinstance(answers, list) else [answers]
        if not isinstance(record.get("question"), str) or not answers or not all(isinstance(a, str) for a in answers):
            raise DatasetError(f"{where}: a record needs a string 'question' and an 'answer' (string or list)")
        problems.append(
            Problem(
                id=str(record.get("id", f"{path.stem}-{number}")),
                question=record["question"],
                answers=list(answers),
                subject=str(record.get("subject", "")),
                level=str(record.get("level", "")),
                source="jsonl",
            )
        )
    return problems


def load_gsm8k(path: str | Path) -> list[Problem]:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"GSM8K file {path} not found (JSONL with 'question' and 'answer')")
    problems = []
    for number, (where, record) in enumerate(_records(path), 1):
        try:
            question = require_text(record, where, "question")
            raw = require_text(record, where, "answer")
            if "####" in raw:
                answer = gsm8k_final_answer(raw)
            elif "cot" in record:  # DeepSeekMath's copy: reasoning in "cot", the bare answer in "answer"
                answer = raw.replace(",", "").strip()
            else:
                raise DatasetError("no '#### answer' line")
        except DatasetError as error:
            raise DatasetError(f"{where}: not a GSM8K record ({error})") from None
        problems.append(
            Problem(
                id=str(record.get("id", f"gsm8k-{number}")),
                question=question,
                answers=[answer],
                source="gsm8k",
                solution=str(record.get("cot") or raw),
            )
        )
    return problems


def _math_problem(record: dict, identifier: str, where: str, source: str = "math") -> Problem:
    question = require_text(record, where, "problem")
    solution = str(record.get("solution") or "")
    answer = record.get("answer") or (extract_boxed(solution, "last") if solution else None)
    if answer is None or not str(answer).strip():
        raise DatasetError(f"{where}: no 'answer' and no \\boxed{{}} in the solution")
    return Problem(
        id=str(record.get("unique_id") or record.get("id") or identifier),
        question=question,
        answers=[str(answer)],
        subject=str(record.get("type") or record.get("subject") or ""),
        level=str(record.get("level") or ""),
        source=source,
        solution=solution,
    )


def load_math(path: str | Path, source: str = "math") -> list[Problem]:
    path = Path(path)
    if path.is_dir() and any(path.rglob("*.json")) and not any(path.rglob("*.jsonl")):
        problems = []
        for file in sorted(path.rglob("*.json")):
            try:
                record = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise DatasetError(f"{file}: not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{file}: a MATH problem file must hold one JSON object")
            identifier = file.relative_to(path).with_suffix("").as_posix()
            problems.append(_math_problem(record, identifier, str(file), source))
        return problems
    if path.exists():
        return [
            _math_problem(record, f"{source}-{number}", where, source)
            for number, (where, record) in enumerate(_records(path), 1)
        ]
    raise DatasetError(f"MATH path {path} not found (a directory of per-problem JSON files, or JSONL)")


def load_math500(path: str | Path) -> list[Problem]:
    return load_math(path, source="math500")


def _simple_answer_problems(
    path: str | Path,
    source: str,
    question_fields: tuple[str, ...],
    answer_fields: tuple[str, ...],
    language: str = "en",
    subject_fields: tuple[str, ...] = (),
    fieldnames: tuple[str, ...] | None = None,
) -> list[Problem]:
    """Records with one question and one final answer (strings or numbers)."""
    problems = []
    files = data_files(path, (".jsonl", ".json", ".parquet", ".tsv", ".csv"))
    for file in files:
        for number, (where, record) in enumerate(read_rows(file, fieldnames if file.suffix == ".tsv" else None), 1):
            question = require_text(record, where, *question_fields)
            answer = str(require_text(record, where, *answer_fields)).strip()
            if answer.endswith(".0") and answer[:-2].lstrip("-").isdigit():  # 72.0 from a float column
                answer = answer[:-2]
            prefix = f"{file.stem}-" if len(files) > 1 else ""
            problems.append(
                Problem(
                    id=str(field(record, "id", "unique_id", "problem_id", default=f"{source}-{prefix}{number}")),
                    question=question,
                    answers=[answer],
                    subject=str(field(record, *subject_fields, default="")) if subject_fields else "",
                    source=source,
                    solution=str(field(record, "solution", "cot", "reasoning", default="")),
                    language=language,
                )
            )
    return problems


def load_aime(path: str | Path) -> list[Problem]:
    return _simple_answer_problems(path, "aime", ("problem", "question"), ("answer",), subject_fields=("year",))


def load_ocw(path: str | Path) -> list[Problem]:
    return _simple_answer_problems(path, "ocw", ("problem", "question"), ("answer",))


def load_cmath(path: str | Path) -> list[Problem]:
    problems = _simple_answer_problems(path, "cmath", ("question",), ("golden",), "zh", ("grade",))
    for problem in problems:
        problem.answers = [problem.answer.replace(",", "")]
        problem.subject = f"grade {problem.subject}" if problem.subject else ""
    return problems


def load_mgsm_zh(path: str | Path) -> list[Problem]:
    problems = _simple_answer_problems(
        path, "mgsm_zh", ("question",), ("answer_number", "answer"), "zh", fieldnames=("question", "answer_number")
    )
    for problem in problems:
        problem.answers = [problem.answer.replace(",", "")]
    return problems


def _strip_dollars(text: str) -> str:
    text = text.strip()
    return text[1:-1].strip() if len(text) > 1 and text.startswith("$") and text.endswith("$") else text


def load_gaokao_mathcloze(path: str | Path) -> list[Problem]:
    problems = []
    for number, (where, record) in enumerate(_records(path), 1):
        question = require_text(record, where, "question")
        raw = require_text(record, where, "answer")
        blanks = [_strip_dollars(part) for part in re.split(r"[;；]", raw) if part.strip()]
        if not blanks:
            raise DatasetError(f"{where}: empty 'answer'")
        problems.append(
            Problem(
                id=str(field(record, "id", default=f"gaokao_mathcloze-{number}")),
                question=_with_passage(record, question),
                answers=[blanks[0]] if len(blanks) == 1 else ["; ".join(blanks)],
                blanks=blanks if len(blanks) > 1 else [],
                source="gaokao_mathcloze",
                language="zh",
            )
        )
    return problems


def _with_passage(record: dict, question: str) -> str:
    passage = record.get("passage")
    return f"{passage.strip()}\n{question}" if isinstance(passage, str) and passage.strip() else question


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


def load_champ(path: str | Path | None = None) -> list[Problem]:
    """The champ-dataset package's v0.json (or a copy of it at `path`)."""
    if path is None:
        path = Path(champ_dataset.__file__).parent / "dataset_files" / "v0.json"
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not CHAMP's JSON ({error})") from None
    problems = []
    for identifier, record in data.get("problems", {}).items():
        where = f"{path}: problem {identifier}"
        steps = " ".join(step["_text"] for step in record.get("solution", {}).get("steps", []))
        problems.append(
            Problem(
                id=identifier,
                question=require_text(record, where, "_text"),
                answers=champ_answers(require_text(record, where, "_answer")),
                subject=record.get("category", ""),
                source="champ",
                solution=steps,
                extra={"raw_answer": record["_answer"]},
            )
        )
    return problems


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: how to read it and how the papers evaluate it."""

    name: str
    title: str  # the column header of the papers' tables
    kind: str
    reader: Callable[[Path], list[Problem]]
    # Paths tried, in order, under the suite's benchmarks directory (the public releases' names).
    layouts: tuple[str, ...]
    default_style: str
    language: str = "en"
    # Shipped inside a package (offline, any machine): no path needed.
    bundled: bool = False


DATASETS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "champ", "CHAMP", KIND_ANSWER, lambda path: load_champ(path), ("champ/v0.json",), "zero_shot", bundled=True
        ),
        BenchmarkSpec(
            "gsm8k",
            "GSM8K",
            KIND_ANSWER,
            load_gsm8k,
            ("gsm8k/test.jsonl", "gsm8k/main/test-00000-of-00001.parquet", "gsm8k/test.parquet"),
            "gsm8k_cot_8shot",
        ),
        BenchmarkSpec(
            "math", "MATH", KIND_ANSWER, load_math, ("MATH/test", "math/test.jsonl", "math/test"), "math_cot_4shot"
        ),
        BenchmarkSpec(
            "math500", "MATH-500", KIND_ANSWER, load_math500, ("math500/test.jsonl", "MATH-500/test.jsonl"), "r1"
        ),
        BenchmarkSpec(
            "aime",
            "AIME 2024",
            KIND_ANSWER,
            load_aime,
            ("aime_2024", "aime2024.jsonl", "aime_2024.jsonl", "aime_2024.parquet"),
            "r1",
        ),
        BenchmarkSpec("jsonl", "Question file (JSONL)", KIND_ANSWER, load_jsonl, ("questions.jsonl",), "zero_shot"),
        BenchmarkSpec("ocw", "OCW", KIND_ANSWER, load_ocw, ("ocw/test.jsonl",), "math_cot_4shot"),
        BenchmarkSpec("cmath", "CMATH", KIND_ANSWER, load_cmath, ("cmath/test.jsonl",), "zh_cot_4shot", "zh"),
        BenchmarkSpec(
            "mgsm_zh",
            "MGSM-zh",
            KIND_ANSWER,
            load_mgsm_zh,
            ("mgsm_zh/mgsm_zh.jsonl", "mgsm/mgsm_zh.tsv", "mgsm_zh.tsv"),
            "zh_cot_4shot",
            "zh",
        ),
        BenchmarkSpec(
            "gaokao_mathcloze",
            "Gaokao-MathCloze",
            KIND_ANSWER,
            load_gaokao_mathcloze,
            ("agieval/gaokao-mathcloze.jsonl", "gaokao-mathcloze.jsonl"),
            "zh_cot_4shot",
            "zh",
        ),
        BenchmarkSpec("sat", "SAT", KIND_CHOICE, load_sat, ("sat/test.jsonl",), "mc_cot_4shot"),
        BenchmarkSpec(
            "mmlu_stem",
            "MMLU-STEM",
            KIND_CHOICE,
            load_mmlu_stem,
            ("mmlu_stem/test.jsonl", "mmlu/data/test", "mmlu/test"),
            "mc_cot_4shot",
        ),
        BenchmarkSpec(
            "gaokao_mathqa",
            "Gaokao-MathQA",
            KIND_CHOICE,
            load_gaokao_mathqa,
            ("agieval/gaokao-mathqa.jsonl", "gaokao-mathqa.jsonl"),
            "zh_mc_cot_4shot",
            "zh",
        ),
        BenchmarkSpec(
            "gpqa_diamond",
            "GPQA Diamond",
            KIND_CHOICE,
            load_gpqa,
            ("gpqa/gpqa_diamond.csv", "gpqa_diamond.csv"),
            "r1",
        ),
        BenchmarkSpec(
            "livecodebench",
            "LiveCodeBench",
            KIND_CODE,
            load_livecodebench,
            ("livecodebench", "code_generation_lite"),
            "r1",
        ),
        BenchmarkSpec("codeforces", "Codeforces", KIND_CODE, load_codeforces, ("codeforces",), "r1"),
    )
}
# Shipped inside a package (offline, any machine); every other dataset reads local files.
BUNDLED_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.bundled)


def reads_local_files(name: str) -> bool:
    """Whether dataset `name` needs a path to the user's copy of its files."""
    return name in DATASETS and not DATASETS[name].bundled


def find_benchmark_path(name: str, directory: str | Path) -> Path | None:
    """The first of the benchmark's usual paths that exists under `directory` (None: absent)."""
    for layout in DATASETS[name].layouts:
        candidate = Path(directory) / layout
        if candidate.exists():
            return candidate
    return None


def load_problems(
    name: str,
    path: str | None = None,
    limit: int | None = None,
    subjects: Iterable[str] = (),
    levels: Iterable[str] = (),
    choice_seed: int = 0,
    date_from: str = "",
    date_to: str = "",
) -> list[Problem]:
    """Problems of dataset `name` (a DATASETS key) filtered by subject, level and (for dated
    problems: LiveCodeBench, Codeforces) date, then the first `limit`. `choice_seed` orders the
    choices of benchmarks that ask for shuffled choices (GPQA)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if not path and not spec.bundled:
        raise DatasetError(
            f"dataset={name} reads a local file: set dataset.path=/path/to/{name} (no dataset hub is reached)"
        )
    if spec.kind == KIND_CHOICE:
        problems = spec.reader(Path(path), seed=choice_seed)  # type: ignore[call-arg]
    else:
        problems = spec.reader(Path(path) if path else None)  # type: ignore[arg-type]
    seen: set[str] = set()
    for problem in problems:
        problem.source = name
        if problem.id in seen:
            raise DatasetError(f"{path or name}: problem id {problem.id!r} appears twice")
        seen.add(problem.id)
    subjects, levels = set(subjects), {str(level) for level in levels}
    if subjects:
        problems = [p for p in problems if p.subject in subjects]
    if levels:
        problems = [p for p in problems if p.level in levels or p.level.replace("Level ", "") in levels]
    if date_from or date_to:
        problems = [
            p
            for p in problems
            if p.extra.get("date") and (date_from or "") <= p.extra["date"][:10] <= (date_to or "9999-12-31")
        ]
    return problems[:limit] if limit else problems
