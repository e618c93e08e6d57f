"""A synthetic multi-step task whose every step can be checked: chains of additions and
subtractions, one step per line, for training and measuring reward models (ORM, PRM,
Math-Shepherd labels) and RL with them on the CPU.

    question:  "Start at 8, subtract 6, add 3, subtract 2."
    solution:  "8 - 6 = 2\\n2 + 3 = 5\\n5 - 2 = 3\\nThe answer is $\\boxed{3}$."

Steps are separated by STEP_SEPARATOR ("\\n"); the last step states the answer the way the
answer checker grades it (\\boxed{}). Solutions used for SFT carry *systematic* slips: with
probability `subtract_slip` a subtraction step writes a result one too large (a borrow slip),
with probability `add_slip` an addition does; the chain then continues correctly from the
written value, so every slip shifts the final answer by +1. A policy SFT'd on such data is
imperfect in a structured way: on questions with several subtractions its most frequent answer
can be the wrong one (so majority voting fails there, while a verifier that checks each step
does not), and its accuracy at temperature 1 leaves room for RL.

Ground truth (Math-Shepherd's notion of a good step: the correct answer is still reachable):
`true_step_labels(question, response)` labels step k 1.0 when the value written at that step
equals the true running value after k operations (the answer step: when the boxed answer equals
the true result), else 0.0. Lines that are neither an equation nor the answer keep the label
of the step before them.

Splits: a question belongs to the held-out split when a hash of its text says so
(`is_heldout`), so training questions and held-out questions can never coincide whatever seed
or count draws them; `check_disjoint` verifies it for any two files before a run uses them.

    python -m megatron_recipes.data.step_chains --out DIR [--sft 20000 --train 1000 --heldout 200]
    python -m megatron_recipes.data.step_chains annotate LABEL_DIR
The first writes DIR/sft.jsonl (chat records with slips), DIR/train_questions.jsonl and
DIR/heldout_questions.jsonl (GSM8K format: question + "...\\n#### answer", readable by
`prompts.source=gsm8k`) and prints a JSON summary; `annotate` adds the ground-truth step labels
to label_steps' output (`true_step_labels`, a PRM can train on them) and prints how well the
Math-Shepherd labels there agree with them (`annotate_true_labels`).

Cost: each question and solution is O(steps) to generate and to check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from megatron_recipes.reward_models.objectives import roc_auc
from stack_common.errors import ConfigError

STEP_SEPARATOR = "\n"
ANSWER_STEP = "The answer is $\\boxed{{{answer}}}$."
QUESTION_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
# One question in HELD_OUT_EVERY (by text hash) is held out.
HELD_OUT_EVERY = 5
_QUESTION = re.compile(r"^Start at (\d+)((?:, (?:add|subtract) \d+)+)\.$")
_OPERATION = re.compile(r", (add|subtract) (\d+)")
_EQUATION = re.compile(r"^\s*(-?\d+)\s*([+-])\s*(\d+)\s*=\s*(-?\d+)\s*$")
_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


@dataclass(frozen=True)
class ChainTask:
    """The shape of the questions: a start value, then `min_steps`..`max_steps` operations with
    operands 1..9, every running value kept within [0, max_value]."""

    min_steps: int = 2
    max_steps: int = 4
    max_start: int = 9
    max_value: int = 9


@dataclass(frozen=True)
class Chain:
    start: int
    operations: tuple[tuple[str, int], ...]  # ("add" | "subtract", operand)

    @property
    def question(self) -> str:
        return f"Start at {self.start}" + "".join(f", {name} {operand}" for name, operand in self.operations) + "."

    def running_values(self) -> list[int]:
        values, value = [], self.start
        for name, operand in self.operations:
            value = value + operand if name == "add" else value - operand
            values.append(value)
        return values

    @property
    def answer(self) -> int:
        return self.running_values()[-1]


def parse_question(question: str) -> Chain | None:
    """The chain a question states (its first line), or None when it is not one of this task's."""
    match = _QUESTION.match(question.strip().split("\n", 1)[0])
    if match is None:
        return None
    operations = tuple((name, int(operand)) for name, operand in _OPERATION.findall(match.group(2)))
    return Chain(int(match.group(1)), operations)


def is_heldout(question: str) -> bool:
    digest = hashlib.sha1(question.strip().encode("utf-8")).digest()
    return digest[0] % HELD_OUT_EVERY == 0


def random_chain(rng: random.Random, task: ChainTask = ChainTask()) -> Chain:
    start = rng.randint(1, task.max_start)
    value, operations = start, []
    for _ in range(rng.randint(task.min_steps, task.max_steps)):
        name = rng.choice(("add", "subtract"))
        allowed = [d for d in range(1, 10) if 0 <= (value + d if name == "add" else value - d) <= task.max_value]
        if not allowed:  # e.g. nothing to subtract from 0: the other operation always fits
            name = "subtract" if name == "add" else "add"
            allowed = [d for d in range(1, 10) if 0 <= (value + d if name == "add" else value - d) <= task.max_value]
        operand = rng.choice(allowed)
        value = value + operand if name == "add" else value - operand
        operations.append((name, operand))
    return Chain(start, tuple(operations))


def draw_chains(count: int, seed: int, heldout: bool, task: ChainTask = ChainTask()) -> list[Chain]:
    """`count` distinct chains of one split (held-out or training), drawn from `seed`."""
    rng = random.Random(seed)
    chains: dict[str, Chain] = {}
    attempts = 0
    while len(chains) < count:
        attempts += 1
        if attempts > 200 * count + 1000:
            raise ConfigError(f"step_chains: cannot draw {count} distinct questions of this task shape")
        chain = random_chain(rng, task)
        if is_heldout(chain.question) == heldout:
            chains.setdefault(chain.question, chain)
    return list(chains.values())


def solution_steps(chain: Chain, slips: Sequence[int] = ()) -> list[str]:
    """The solution's steps; each operation index in `slips` writes a result one too large, and
    the chain continues from the written value."""
    steps, value = [], chain.start
    for index, (name, operand) in enumerate(chain.operations):
        result = value + operand if name == "add" else value - operand
        if index in slips:
            result += 1
        steps.append(f"{value} {'+' if name == 'add' else '-'} {operand} = {result}")
        value = result
    steps.append(ANSWER_STEP.format(answer=value))
    return steps


def sample_slips(chain: Chain, rng: random.Random, subtract_slip: float, add_slip: float) -> list[int]:
    return [
        index
        for index, (name, _) in enumerate(chain.operations)
        if rng.random() < (subtract_slip if name == "subtract" else add_slip)
    ]


def split_steps(response: str, separator: str = STEP_SEPARATOR) -> list[tuple[str, int]]:
    """(step text, character offset where it ends) for each non-empty step of a response."""
    steps, offset = [], 0
    for piece in response.split(separator):
        end = offset + len(piece)
        if piece.strip():
            steps.append((piece, end))
        offset = end + len(separator)
    return steps


def true_step_labels(question: str, response: str, separator: str = STEP_SEPARATOR) -> list[float] | None:
    """Ground-truth label of each step (module docstring); None when the question is not a chain."""
    chain = parse_question(question)
    if chain is None:
        return None
    truth = chain.running_values()
    labels: list[float] = []
    equations = 0
    for text, _ in split_steps(response, separator):
        equation = _EQUATION.match(text)
        boxed = _BOXED.search(text)
        if equation is not None:
            written = int(equation.group(4))
            labels.append(float(equations < len(truth) and written == truth[equations]))
            equations += 1
        elif boxed is not None:
            labels.append(float(int(boxed.group(1)) == chain.answer))
        else:
            labels.append(labels[-1] if labels else 1.0)
    return labels


def gsm8k_record(chain: Chain) -> dict:
    steps = solution_steps(chain)
    return {"question": chain.question, "answer": "\n".join(steps[:-1]) + f"\n#### {chain.answer}"}


def sft_record(chain: Chain, slips: Sequence[int]) -> dict:
    solution = STEP_SEPARATOR.join(solution_steps(chain, slips))
    return {
        "messages": [
            {"role": "user", "content": QUESTION_TEMPLATE.replace("{question}", chain.question)},
            {"role": "assistant", "content": solution},
        ],
        "kind": "cot",
        "slips": len(slips),
    }


def read_questions(path: str | Path) -> list[str]:
    """The question texts of a GSM8K-format file (or any JSONL with a "question" field)."""
    questions = []
    with Path(path).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                questions.append(json.loads(line)["question"].strip())
    return questions


def check_disjoint(heldout: Iterable[str], *training_sets: Iterable[str]) -> None:
    """Raise ConfigError when a held-out question also occurs in a training set (question text)."""
    held = {question.strip() for question in heldout}
    for index, training in enumerate(training_sets):
        shared = held & {question.strip() for question in training}
        if shared:
            example = next(iter(shared))
            raise ConfigError(
                f"{len(shared)} held-out question(s) also occur in training set {index}, e.g. {example!r}"
            )


def _write_jsonl(path: Path, records: Iterable[dict]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_task(
    out: str | Path,
    sft: int = 20000,
    train: int = 1000,
    heldout: int = 200,
    seed: int = 0,
    subtract_slip: float = 0.3,
    add_slip: float = 0.05,
    task: ChainTask = ChainTask(),
) -> dict:
    """Write the task's files (module docstring) and return the summary. SFT and RL training
    questions come from the training split, the held-out file from the held-out split."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sft_chains = draw_chains(sft, seed * 3 + 1, heldout=False, task=task)
    train_chains = draw_chains(train, seed * 3 + 2, heldout=False, task=task)
    heldout_chains = draw_chains(heldout, seed * 3 + 3, heldout=True, task=task)
    check_disjoint(
        [c.question for c in heldout_chains], [c.question for c in sft_chains], [c.question for c in train_chains]
    )
    sft_records = [sft_record(chain, sample_slips(chain, rng, subtract_slip, add_slip)) for chain in sft_chains]
    _write_jsonl(out / "sft.jsonl", sft_records)
    _write_jsonl(out / "train_questions.jsonl", (gsm8k_record(chain) for chain in train_chains))
    _write_jsonl(out / "heldout_questions.jsonl", (gsm8k_record(chain) for chain in heldout_chains))
    return {
        "sft_examples": len(sft_records),
        "sft_with_slip": sum(1 for record in sft_records if record["slips"]) / max(len(sft_records), 1),
        "train_questions": len(train_chains),
        "heldout_questions": len(heldout_chains),
        "directory": str(out),
    }


TRUE_LABEL_FIELD = "true_step_labels"


def annotate_true_labels(directory: str | Path) -> dict:
    """Add the ground-truth step labels (`true_step_labels`) to every record of label_steps'
    output in `directory` (its shard files are rewritten in place, atomically) and measure how
    well the automatic Math-Shepherd labels agree with them, over every step of every record:
    hard_agreement (hard label == truth), soft_agreement ((soft >= 0.5) == truth), soft_auc (the
    soft label as a score of the truth), and the same for the outcome label of the last step."""
    truth_all: list[float] = []
    hard_all: list[float] = []
    soft_all: list[float] = []
    records = 0
    for shard in sorted(Path(directory).glob("shard_*.jsonl")):
        rows = [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines() if line.strip()]
        for row in rows:
            labels = true_step_labels(row["question"], row["response"])
            row[TRUE_LABEL_FIELD] = labels
            records += 1
            if labels is not None and "hard_step_labels" in row and len(row["hard_step_labels"]) == len(labels):
                truth_all += labels
                hard_all += row["hard_step_labels"]
                soft_all += row["soft_step_labels"]
        temporary = shard.with_name(shard.name + ".tmp")
        temporary.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        temporary.replace(shard)
    steps = len(truth_all)
    return {
        "records": records,
        "steps": steps,
        "true_positive_fraction": sum(truth_all) / steps if steps else None,
        "hard_agreement": sum(h == t for h, t in zip(hard_all, truth_all)) / steps if steps else None,
        "soft_agreement": sum((s >= 0.5) == (t >= 0.5) for s, t in zip(soft_all, truth_all)) / steps if steps else None,
        "soft_auc": roc_auc(soft_all, truth_all) if steps else None,
        "hard_false_positive_rate": (
            sum(1 for h, t in zip(hard_all, truth_all) if h and not t) / max(1, sum(1 for t in truth_all if not t))
        )
        if steps
        else None,
    }


def _main(argv: Sequence[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "annotate":
        # python -m megatron_recipes.data.step_chains annotate LABEL_DIR
        print(json.dumps(annotate_true_labels(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description="Write the step-chain task: SFT data and question files.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--sft", type=int, default=20000)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subtract-slip", type=float, default=0.3)
    parser.add_argument("--add-slip", type=float, default=0.05)
    arguments = parser.parse_args(argv)
    summary = write_task(
        arguments.out,
        arguments.sft,
        arguments.train,
        arguments.heldout,
        arguments.seed,
        arguments.subtract_slip,
        arguments.add_slip,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    _main()
