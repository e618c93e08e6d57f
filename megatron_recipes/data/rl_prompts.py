"""Questions with verifiable answers for GRPO: generated on the fly by `reasoning-gym` (the
embedded default: arithmetic, GSM-style word problems, algebra...) or read from local GSM8K /
MATH files (or the offline CHAMP set) through the evaluation loader.

    stream = PromptStream(config.prompts, config.chat_template)
    stream.record(i) -> PromptRecord(id, question, answer, prompt, source)   # question i of the run
    stream.take(start, count) -> list[PromptRecord]
    parse_task_spec("chain_sum:min_terms=2,max_terms=3") -> ("chain_sum", {"min_terms": 2, "max_terms": 3})
    sft_records(stream, count, solution_template) -> chat-form SFT records answering with the reference

`prompt` is the generation prompt: the chat template's user turn holding
`question_template` (with `{question}` replaced), then the assistant header, e.g.
"User: What is 3 + 4?\\nPlease reason step by step, and put your final answer within \\boxed{}.\\n\\nAssistant:".
Question i is a pure function of (config, i): reasoning-gym tasks are drawn round-robin and each
task's item k is generated from its seed; files are read once and visited in a seeded order that
changes every pass. So a resumed GRPO run (which stores the consumed question count) sees the
questions the uninterrupted run would have.

Train and held-out questions are split by a rule that cannot overlap: `question_split(question,
fraction)` hashes the normalised question text, so a question lands on the same side whatever
seed, task or file produced it; a source yields the questions of its `split` only. (reasoning-gym
draws item k of seed s from Random(s + k), so seeds s and s + 1 are one sequence shifted by one:
another seed holds nothing out. Each task's generator seed is therefore a hash of (seed, task
position), which keeps the streams of nearby seeds apart.) `drop_overlapping(held_out, training)`
is the check a caller runs on every held-out set against every training set it knows.

Run `python -m megatron_recipes.data.rl_prompts --out sft.jsonl --count 2000 [task specs]` to
write a small SFT file from reasoning-gym questions (answers only: a warm-up for tiny models).

Cost: reasoning-gym generates one item in microseconds to milliseconds (task-dependent), lazily;
a split source generates about 1 / (its side's fraction) items per question it yields. File
sources hold the problem list in memory (an evaluation-sized set). The overlap check hashes each
training question once: O(training + held-out) time, O(training) memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import reasoning_gym
import yaml
from reasoning_gym.factory import DATASETS

from megatron_recipes.data.chat import render_prompt
from megatron_recipes.data.config import ChatTemplateConfig, PromptSourceConfig
from megatron_recipes.evaluation.datasets import DatasetError, load_problems
from stack_common.errors import ConfigError

log = logging.getLogger("rl_prompts")


@dataclass(frozen=True)
class PromptRecord:
    id: str
    question: str
    answer: str  # the reference final answer
    prompt: str  # the rendered generation prompt
    source: str = ""


def _scalar(text: str) -> Any:
    """A YAML-typed scalar ('3' -> 3, 'false' -> False); text that YAML reads as something else
    ('-' is a one-item list to YAML, '[' a syntax error) stays the text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text


def _top_level_parts(text: str) -> list[str]:
    """Split at the commas that are not inside [...]."""
    parts, depth, current = [], 0, []
    for character in text:
        if character == "[":
            depth += 1
        elif character == "]":
            depth = max(depth - 1, 0)
        if character == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(character)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def parse_task_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'name' or 'name:key=value,key=value' -> (name, options) with YAML-typed values. A list is
    `key=[a,b]`, or `key=a,b` (an item without '=' continues the list of the key before it):
    'basic_arithmetic:operators=+,-,min_terms=2' -> operators ['+', '-'], min_terms 2."""
    name, _, rest = spec.partition(":")
    if not name.strip():
        raise ConfigError(f"prompts.tasks entry {spec!r} names no task")
    options: dict[str, Any] = {}
    last_key = None
    for item in _top_level_parts(rest):
        key, separator, value = item.partition("=")
        if not separator:
            if last_key is None:
                raise ConfigError(f"prompts.tasks entry {spec!r}: options are key=value pairs separated by commas")
            previous = options[last_key]
            options[last_key] = [*(previous if isinstance(previous, list) else [previous]), _scalar(item)]
            continue
        if not key.strip():
            raise ConfigError(f"prompts.tasks entry {spec!r}: options are key=value pairs separated by commas")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            options[key.strip()] = [_scalar(part) for part in _top_level_parts(value[1:-1])]
        else:
            options[key.strip()] = _scalar(value)
        last_key = key.strip()
    return name.strip(), options


def _as_lists_where_expected(config_class, options: dict[str, Any]) -> dict[str, Any]:
    """A single value given for a list-typed option of a reasoning-gym task becomes a one-item
    list (`operators=+` -> ['+']): iterating the string '+-' would read two operators."""
    list_typed = {
        item.name
        for item in dataclasses.fields(config_class)
        if str(item.type).split("[")[0].strip().lower().removeprefix("typing.") in ("list", "tuple", "sequence")
    }
    return {
        key: [value] if key in list_typed and not isinstance(value, list) else value for key, value in options.items()
    }


def normalise_question(question: str) -> str:
    """The text the split and the overlap check compare: case-folded, whitespace collapsed."""
    return re.sub(r"\s+", " ", question).strip().casefold()


def question_split(question: str, held_out_fraction: float) -> str:
    """'held_out' when a hash of the normalised question falls below held_out_fraction, else 'train'."""
    digest = hashlib.blake2b(normalise_question(question).encode("utf-8"), digest_size=8).digest()
    return "held_out" if int.from_bytes(digest, "big") / 2**64 < held_out_fraction else "train"


def reasoning_gym_seed(seed: int, task_position: int) -> int:
    """The generator seed of the task at `task_position`: a hash, so that seeds s and s + 1 (and
    the tasks of one source) draw unrelated sequences instead of one sequence shifted by one."""
    digest = hashlib.blake2b(f"{seed}/{task_position}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def distinct_records(records: Sequence["PromptRecord"]) -> list["PromptRecord"]:
    """The first record of every normalised question (an evaluation set counts each question once;
    a small task space repeats questions in a stream)."""
    seen: set[str] = set()
    kept = []
    for record in records:
        key = normalise_question(record.question)
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept


def drop_overlapping(
    held_out: Sequence["PromptRecord"], training: dict[str, Iterable[str]]
) -> tuple[list["PromptRecord"], dict[str, int]]:
    """The held-out records whose normalised question occurs in none of the training sets (name ->
    questions), and how many held-out records each training set removed ('total': all removed)."""
    seen = {name: {normalise_question(question) for question in questions} for name, questions in training.items()}
    kept, removed = [], {name: 0 for name in seen}
    for record in held_out:
        key = normalise_question(record.question)
        hits = [name for name, questions in seen.items() if key in questions]
        for name in hits:
            removed[name] += 1
        if not hits:
            kept.append(record)
    removed["total"] = len(held_out) - len(kept)
    return kept, removed


class PromptStream:
    """Question i of a run as a pure function of the config (see module docstring)."""

    def __init__(self, config: PromptSourceConfig, template: ChatTemplateConfig):
        self.config = config
        self.template = template
        self._tasks: list[tuple[str, Any]] = []
        self._problems: list = []
        self._orders: dict[int, np.ndarray] = {}
        # Candidate positions (round-robin over tasks, or problems in file order) on this split's side.
        self._accepted: list[int] = []
        self._scanned = 0
        if config.source == "reasoning_gym":
            self._load_reasoning_gym()
            self._candidates = config.size * len(self._tasks)
        else:
            try:
                self._problems = load_problems(config.source, config.path, None)
            except DatasetError as error:
                raise ConfigError(str(error)) from None
            if not self._problems:
                raise ConfigError(f"prompts: {config.source} at {config.path} holds no problems")
            self._candidates = len(self._problems)
            # Files are visited in a permuted order from the first pass: their size must be known.
            self._scan(self._candidates)
            self._require_questions()

    def _load_reasoning_gym(self) -> None:
        for index, spec in enumerate(self.config.tasks):
            name, options = parse_task_spec(spec)
            try:
                if name in DATASETS:
                    options = _as_lists_where_expected(DATASETS[name][1], options)
                dataset = reasoning_gym.create_dataset(
                    name, size=self.config.size, seed=reasoning_gym_seed(self.config.seed, index), **options
                )
            except Exception as error:  # unknown task or option: one line naming it
                raise ConfigError(f"prompts.tasks entry {spec!r}: {type(error).__name__}: {error}") from None
            self._tasks.append((name, dataset))

    # ------------------------------------------------------------------ candidates and the split
    def _candidate(self, position: int) -> tuple[str, str, str]:
        """(question, answer, id) of candidate `position`."""
        if self._tasks:
            name, dataset = self._tasks[position % len(self._tasks)]
            entry = dataset[position // len(self._tasks)]
            return entry["question"], str(entry["answer"]), f"{name}-{position // len(self._tasks)}"
        problem = self._problems[position]
        return problem.question, problem.answer, problem.id

    def _wanted(self) -> int:
        """How many questions of the split this source holds at most (its `limit`, else all)."""
        return self.config.limit if self.config.limit is not None else self._candidates

    def _scan(self, count: int) -> None:
        """Extend the accepted candidates to `count` (or until the candidates run out)."""
        split, fraction = self.config.split, self.config.held_out_fraction
        count = min(count, self._wanted())
        while len(self._accepted) < count and self._scanned < self._candidates:
            position = self._scanned
            self._scanned += 1
            if split == "all" or question_split(self._candidate(position)[0], fraction) == split:
                self._accepted.append(position)

    def _exhausted(self) -> bool:
        return len(self._accepted) >= self._wanted() or self._scanned >= self._candidates

    def _require_questions(self) -> None:
        if not self._accepted:
            raise ConfigError(
                f"prompts: {self.describe()} yields no question (held_out_fraction={self.config.held_out_fraction})"
            )

    def __len__(self) -> int:
        """Distinct questions of the stream (a full pass over the candidates unless `limit` is set)."""
        self._scan(self._wanted())
        self._require_questions()
        return len(self._accepted)

    def describe(self) -> str:
        what = (
            f"{self.config.source} {', '.join(self.config.tasks)}"
            if self._tasks
            else f"{self.config.source} {self.config.path}"
        )
        side = (
            ""
            if self.config.split == "all"
            else f", {self.config.split} split (held_out_fraction {self.config.held_out_fraction})"
        )
        return what + side

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng((self.config.seed, epoch)).permutation(len(self._accepted))}
        return self._orders[epoch]

    def record(self, index: int) -> PromptRecord:
        self._scan(index + 1)
        if self._tasks and index < len(self._accepted):
            # reasoning-gym items are already random draws: the first pass keeps their order.
            position = self._accepted[index]
        else:
            self._require_questions()
            # Past the end of the distinct questions (scanned to the end): another pass, reshuffled.
            epoch, offset = divmod(index, len(self._accepted))
            position = self._accepted[int(self._order(epoch)[offset]) if self.config.shuffle else offset]
        question, answer, identifier = self._candidate(position)
        user_turn = self.config.question_template.replace("{question}", question)
        return PromptRecord(identifier, question, answer, render_prompt(user_turn, self.template), self.config.source)

    def take(self, start: int, count: int) -> list[PromptRecord]:
        return [self.record(index) for index in range(start, start + count)]


DEFAULT_SOLUTION_TEMPLATE = "The answer is $\\boxed{{answer}}$."


def sft_records(
    stream: PromptStream, count: int, solution_template: str = DEFAULT_SOLUTION_TEMPLATE, start: int = 0
) -> list[dict]:
    """Chat-form SFT records whose assistant turn states the reference answer (`{answer}` in
    `solution_template` is replaced: "\\boxed{{answer}}" -> "\\boxed{42}")."""
    records = []
    for record in stream.take(start, count):
        solution = solution_template.replace("{answer}", record.answer)
        user_turn = stream.config.question_template.replace("{question}", record.question)
        records.append(
            {
                "messages": [{"role": "user", "content": user_turn}, {"role": "assistant", "content": solution}],
                "kind": "cot",
                "id": record.id,
            }
        )
    return records


def _main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="Write chat-form SFT records from reasoning-gym questions.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=PromptSourceConfig.seed)
    parser.add_argument("--split", default=PromptSourceConfig.split, help="train (default), held_out or all")
    parser.add_argument("--held-out-fraction", type=float, default=PromptSourceConfig.held_out_fraction)
    parser.add_argument("--question-template", default=PromptSourceConfig.question_template)
    parser.add_argument("--solution-template", default=DEFAULT_SOLUTION_TEMPLATE)
    parser.add_argument("tasks", nargs="*", default=["basic_arithmetic"])
    arguments = parser.parse_args(argv)
    config = PromptSourceConfig(
        tasks=list(arguments.tasks),
        seed=arguments.seed,
        split=arguments.split,
        held_out_fraction=arguments.held_out_fraction,
        question_template=arguments.question_template,
    )
    try:
        config.validate()
        stream = PromptStream(config, ChatTemplateConfig())
    except ConfigError as error:
        parser.exit(2, f"error: {error}\n")
    with open(arguments.out, "w", encoding="utf-8") as handle:
        for record in sft_records(stream, arguments.count, arguments.solution_template):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    log.info("wrote %d records (%s) to %s", arguments.count, stream.describe(), arguments.out)


if __name__ == "__main__":
    _main()
