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

Run `python -m megatron_recipes.data.rl_prompts --out sft.jsonl --count 2000 [task specs]` to
write a small SFT file from reasoning-gym questions (answers only: a warm-up for tiny models).

Cost: reasoning-gym generates one item in microseconds to milliseconds (task-dependent), lazily;
file sources hold the problem list in memory (an evaluation-sized set).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import reasoning_gym
import yaml

from megatron_recipes.data.chat import render_prompt
from megatron_recipes.data.config import ChatTemplateConfig, PromptSourceConfig
from megatron_recipes.evaluation.datasets import DatasetError, load_problems
from stack_common.errors import ConfigError


@dataclass(frozen=True)
class PromptRecord:
    id: str
    question: str
    answer: str  # the reference final answer
    prompt: str  # the rendered generation prompt
    source: str = ""


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_task_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'name' or 'name:key=value,key=value' -> (name, options) with YAML-typed values."""
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"prompts.tasks entry {spec!r}: options are key=value pairs separated by commas")
        options[key.strip()] = _scalar(value.strip())
    if not name.strip():
        raise ConfigError(f"prompts.tasks entry {spec!r} names no task")
    return name.strip(), options


class PromptStream:
    """Question i of a run as a pure function of the config (see module docstring)."""

    def __init__(self, config: PromptSourceConfig, template: ChatTemplateConfig):
        self.config = config
        self.template = template
        self._render = render_prompt
        self._tasks: list[tuple[str, Any]] = []
        self._problems: list = []
        self._orders: dict[int, np.ndarray] = {}
        if config.source == "reasoning_gym":
            self._load_reasoning_gym()
        else:
            try:
                self._problems = load_problems(config.source, config.path, None)
            except DatasetError as error:
                raise ConfigError(str(error)) from None
            if not self._problems:
                raise ConfigError(f"prompts: {config.source} at {config.path} holds no problems")
        self.distinct = len(self._problems) if self._problems else config.size * len(self._tasks)
        if config.limit is not None:
            self.distinct = min(self.distinct, config.limit)

    def _load_reasoning_gym(self) -> None:
        for index, spec in enumerate(self.config.tasks):
            name, options = parse_task_spec(spec)
            try:
                dataset = reasoning_gym.create_dataset(
                    name, size=self.config.size, seed=self.config.seed + index, **options
                )
            except Exception as error:  # unknown task or option: one line naming it
                raise ConfigError(f"prompts.tasks entry {spec!r}: {type(error).__name__}: {error}") from None
            self._tasks.append((name, dataset))

    def __len__(self) -> int:
        return self.distinct

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng((self.config.seed, epoch)).permutation(self.distinct)}
        return self._orders[epoch]

    def record(self, index: int) -> PromptRecord:
        epoch, offset = divmod(index, self.distinct)
        # reasoning-gym items are already random draws: the first pass keeps their order.
        item = offset if epoch == 0 and self._tasks else int(self._order(epoch)[offset])
        if self._tasks:
            name, dataset = self._tasks[item % len(self._tasks)]
            entry = dataset[item // len(self._tasks)]
            question, answer, identifier = entry["question"], str(entry["answer"]), f"{name}-{item // len(self._tasks)}"
        else:
            problem = self._problems[item]
            question, answer, identifier = problem.question, problem.answer, problem.id
        user_turn = self.config.question_template.replace("{question}", question)
        return PromptRecord(identifier, question, answer, self._render(user_turn, self.template), self.config.source)

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
    parser = argparse.ArgumentParser(description="Write chat-form SFT records from reasoning-gym questions.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--question-template", default=PromptSourceConfig.question_template)
    parser.add_argument("--solution-template", default=DEFAULT_SOLUTION_TEMPLATE)
    parser.add_argument("tasks", nargs="*", default=["basic_arithmetic"])
    arguments = parser.parse_args(argv)
    config = PromptSourceConfig(
        tasks=list(arguments.tasks), seed=arguments.seed, question_template=arguments.question_template
    )
    stream = PromptStream(config, ChatTemplateConfig())
    with open(arguments.out, "w", encoding="utf-8") as handle:
        for record in sft_records(stream, arguments.count, arguments.solution_template):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {arguments.count} records to {arguments.out}")


if __name__ == "__main__":
    _main()
