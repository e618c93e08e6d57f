"""Reward-model data: labelled responses from JSONL -> token ids with the positions the loss
reads -> global batches (with the replay of earlier data of iterative RL).

Record (one JSON object per line; files, or directories of *.jsonl files):

    {"prompt": "User: Start at 8, add 3.\\n...\\n\\nAssistant:",   the generation prompt as the policy saw it
     "response": " 8 + 3 = 11\\nThe answer is $\\\\boxed{11}$.",  the sampled response (no end-of-document)
     "correct": true,               ORM label (outcome_field): true/false, 1/0 or a probability
     "step_labels": [1.0, 1.0],     PRM labels (step_label_field): one per step, each in [0, 1]
     "question": "...", "id": "..."}   optional; the question (else the prompt) names the record's
                                       question for the held-out split and the disjointness check

Steps (PRM): the response is split at the step separator (`reward_model.step_separator`,
default "\\n"); every non-empty piece is a step, and its label is read at the token that
completes the piece (the first token whose decoded prefix reaches the piece's last character;
rl/step_rewards.step_end_tokens, the same mapping GRPO's process supervision uses). So a solution
"8 + 3 = 11\\nThe answer is $\\\\boxed{11}$." has two steps; a trailing separator adds none.
ORM: the score is read at the response's last token; with outcome_pooling=step_product at every
step end (as a PRM), each holding the outcome label, and the loss pools them per record
(objectives.pooled_outcome_loss). The end-of-document token is never part of
the input (as in Hugging Face's sequence classifiers, which pool the last non-padding token).
Input ids are encode(prompt) + encode(response), the way a rollout's prompt and response ids
are concatenated.

Bad records never stop a run silently: a record that is not JSON or lacks a field, whose labels
do not match its steps or lie outside [0, 1], or that is longer than seq_length, is dropped,
counted by reason and written to `<output_dir>/dead_letter.jsonl` with the reason.

Batches (`RewardBatches.global_batch(step)`): global batch `step` (0-based) holds B - r records
of the training data and r = replay_fraction x B of the replay data, each stream read in a
seeded order that changes every epoch, positions B - r and r per step (so a resumed run reads
what the uninterrupted run would have); the B records are shuffled together (seeded by step) and
split over data-parallel ranks and micro-batches. A micro-batch is padded to the global batch's
longest record (rounded up to `multiple`, e.g. 8 x TP), so every micro-batch of a step has one
sequence length (pipeline parallelism needs it).

Micro-batch tensors: tokens / position_ids [b, s] int64, score_mask [b, s] float (1 at scored
positions), targets [b, s] float (labels at scored positions), replayed [b] bool.

Cost: reading and tokenizing is linear in the data, held in memory once (token ids as int32
arrays); a global batch costs O(B x s).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from megatron_recipes.reward_models.kinds import get_reward_model_kind
from megatron_recipes.rl.step_rewards import split_steps, step_end_tokens
from stack_common.errors import ConfigError

log = logging.getLogger(__name__)

DEAD_LETTER_FILE = "dead_letter.jsonl"


@dataclass
class RewardExample:
    tokens: np.ndarray  # int32 [n]: prompt + response ids
    positions: np.ndarray  # int64 [k]: scored positions (indices into tokens)
    targets: np.ndarray  # float32 [k]: their labels
    question: str


@dataclass
class ReadSummary:
    records: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    scored_positions: int = 0
    positive_positions: float = 0.0

    def as_dict(self) -> dict:
        return {
            "records": self.records,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "scored_positions": self.scored_positions,
            "positive_fraction": self.positive_positions / self.scored_positions if self.scored_positions else 0.0,
        }


def jsonl_files(paths: Sequence[str], key: str) -> list[Path]:
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found = sorted(path.rglob("*.jsonl"))
            if not found:
                raise ConfigError(f"{key}: {path} holds no .jsonl file")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{key}: {path} does not exist")
    return files


def _label(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
        return float(value)
    return None


def question_of(record: dict) -> str:
    return str(record.get("question") or record.get("prompt") or "").strip()


def scored_positions(
    kind: str,
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    response: str,
    separator: str,
    decode,
    outcome_pooling: str = "last_token",
) -> list[int]:
    """Positions (in prompt + response ids) whose scores a reward model of `kind` reads (an ORM
    with outcome_pooling=step_product reads the step ends, as a PRM does)."""
    if not response_ids:
        return []
    if not get_reward_model_kind(kind).per_step and outcome_pooling == "last_token":
        return [len(prompt_ids) + len(response_ids) - 1]
    steps = split_steps(response, separator)
    return [len(prompt_ids) + index for index in step_end_tokens(steps, list(response_ids), decode)]


def example_from_record(
    record: dict,
    kind: str,
    tokenizer,
    separator: str,
    seq_length: int,
    outcome_field: str,
    step_field: str,
    outcome_pooling: str = "last_token",
) -> RewardExample | str:
    """The example of one record, or the reason it is dropped."""
    prompt, response = record.get("prompt"), record.get("response")
    if not isinstance(prompt, str) or not isinstance(response, str):
        return "missing_prompt_or_response"
    if not response.strip():
        return "empty_response"
    prompt_ids, response_ids = tokenizer.encode(prompt), tokenizer.encode(response)
    if len(prompt_ids) + len(response_ids) > seq_length:
        return "too_long"
    if get_reward_model_kind(kind).per_step:
        raw = record.get(step_field)
        if not isinstance(raw, list):
            return f"missing_{step_field}"
        labels = [_label(value) for value in raw]
        if any(label is None for label in labels):
            return "label_out_of_range"
        if len(labels) != len(split_steps(response, separator)):
            return "labels_do_not_match_steps"
    else:
        label = _label(record.get(outcome_field))
        if label is None:
            return f"missing_{outcome_field}" if outcome_field not in record else "label_out_of_range"
        labels = [label]
    positions = scored_positions(kind, prompt_ids, response_ids, response, separator, tokenizer.decode, outcome_pooling)
    if outcome_pooling == "step_product" and not get_reward_model_kind(kind).per_step:
        if not positions:
            return "no_step_end"
        labels = labels * len(positions)  # the outcome label at every step end; the loss pools them
    return RewardExample(
        np.asarray(prompt_ids + response_ids, dtype=np.int32),
        np.asarray(positions, dtype=np.int64),
        np.asarray(labels, dtype=np.float32),
        question_of(record),
    )


def read_examples(
    paths: Sequence[str],
    key: str,
    kind: str,
    tokenizer,
    separator: str,
    seq_length: int,
    outcome_field: str,
    step_field: str,
    dead_letters: list[dict] | None = None,
    outcome_pooling: str = "last_token",
) -> tuple[list[RewardExample], ReadSummary]:
    """Every usable record of the files; the others counted (and appended to `dead_letters`)."""
    examples: list[RewardExample] = []
    summary = ReadSummary()
    for file in jsonl_files(paths, key):
        with file.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                summary.records += 1
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record, result = None, "not_json"
                else:
                    result = (
                        example_from_record(
                            record, kind, tokenizer, separator, seq_length, outcome_field, step_field, outcome_pooling
                        )
                        if isinstance(record, dict)
                        else "not_an_object"
                    )
                if isinstance(result, str):
                    summary.dropped[result] += 1
                    if dead_letters is not None:
                        dead_letters.append({"file": str(file), "line": number, "reason": result})
                    continue
                examples.append(result)
                summary.kept += 1
                summary.scored_positions += len(result.positions)
                summary.positive_positions += float(result.targets.sum())
    return examples, summary


def is_validation_question(question: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha1(f"{seed}:{question}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_by_question(
    examples: Sequence[RewardExample], fraction: float, seed: int
) -> tuple[list[RewardExample], list[RewardExample]]:
    """(training, validation): every record of a question on the same side."""
    training, validation = [], []
    for example in examples:
        (validation if is_validation_question(example.question, fraction, seed) else training).append(example)
    return training, validation


def check_no_shared_questions(validation: Sequence[RewardExample], *training: Sequence[RewardExample]) -> None:
    held = {example.question for example in validation}
    for index, examples in enumerate(training):
        shared = held & {example.question for example in examples}
        if shared:
            raise ConfigError(
                f"{len(shared)} validation question(s) also occur in the training data (set {index}),"
                f" e.g. {next(iter(shared))[:80]!r}: the held-out split must be disjoint"
            )


class _Stream:
    """Records of one source in a seeded order that changes every epoch."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self._orders: dict[int, np.ndarray] = {}

    def take(self, start: int, count: int) -> list[int]:
        indices = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, self.size)
            if epoch not in self._orders:
                self._orders = {epoch: np.random.default_rng((self.seed, epoch)).permutation(self.size)}
            indices.append(int(self._orders[epoch][offset]))
        return indices


class RewardBatches:
    """Global batches of new and replayed records (module docstring)."""

    def __init__(
        self,
        train: Sequence[RewardExample],
        replay: Sequence[RewardExample],
        global_batch_size: int,
        replayed_per_batch: int,
        seed: int,
    ):
        if not train:
            raise ConfigError("reward_model.train_paths hold no usable record")
        if replayed_per_batch and not replay:
            raise ConfigError("reward_model.replay_paths hold no usable record")
        self.train, self.replay = list(train), list(replay)
        self.global_batch_size = global_batch_size
        self.replayed = replayed_per_batch
        self.fresh = global_batch_size - replayed_per_batch
        self.seed = seed
        self._train_stream = _Stream(len(self.train), seed)
        self._replay_stream = _Stream(len(self.replay), seed + 1) if self.replay else None

    def global_batch(self, step: int) -> list[tuple[RewardExample, bool]]:
        """(example, replayed) for the B records of global batch `step`, shuffled together."""
        chosen = [(self.train[i], False) for i in self._train_stream.take(step * self.fresh, self.fresh)]
        if self.replayed:
            chosen += [(self.replay[i], True) for i in self._replay_stream.take(step * self.replayed, self.replayed)]
        order = np.random.default_rng((self.seed, 7, step)).permutation(len(chosen))
        return [chosen[i] for i in order]


def collate(items: Sequence[tuple[RewardExample, bool]], pad_id: int, length: int) -> dict[str, torch.Tensor]:
    """Micro-batch tensors (module docstring), every row padded to `length`."""
    count = len(items)
    tokens = torch.full((count, length), pad_id, dtype=torch.long)
    score_mask = torch.zeros(count, length)
    targets = torch.zeros(count, length)
    for row, (example, _) in enumerate(items):
        tokens[row, : len(example.tokens)] = torch.from_numpy(example.tokens.astype(np.int64))
        positions = torch.from_numpy(example.positions)
        score_mask[row, positions] = 1.0
        targets[row, positions] = torch.from_numpy(example.targets)
    return {
        "tokens": tokens,
        "position_ids": torch.arange(length).unsqueeze(0).expand(count, -1).contiguous(),
        "score_mask": score_mask,
        "targets": targets,
        "replayed": torch.tensor([replayed for _, replayed in items], dtype=torch.bool),
    }


def padded_length(items: Sequence[tuple[RewardExample, bool]], multiple: int) -> int:
    longest = max(len(example.tokens) for example, _ in items)
    return max(multiple, -(-longest // multiple) * multiple)


def micro_batches(
    items: Sequence[tuple[RewardExample, bool]],
    micro_batch_size: int,
    rank: int,
    ranks: int,
    pad_id: int,
    multiple: int,
) -> list[dict[str, torch.Tensor]]:
    """This data-parallel rank's micro-batches of a global batch (one padded length for all)."""
    length = padded_length(items, multiple)
    share = len(items) // ranks
    mine = list(items[rank * share : (rank + 1) * share])
    return [collate(mine[i : i + micro_batch_size], pad_id, length) for i in range(0, len(mine), micro_batch_size)]


def evaluation_batches(
    examples: Sequence[RewardExample], micro_batch_size: int, rank: int, ranks: int, pad_id: int, multiple: int
) -> Iterator[list[dict[str, torch.Tensor]]]:
    """This rank's share of a held-out set, in groups of micro-batches of one padded length each.
    Rows are dealt round-robin over data-parallel ranks; every rank yields the same number of
    groups and micro-batches (padding rows without scored positions fill the last ones)."""
    items = [(example, False) for example in examples]
    per_group = micro_batch_size * ranks * 8
    for start in range(0, len(items), per_group):
        group = items[start : start + per_group]
        while len(group) % (micro_batch_size * ranks):
            group.append(
                (RewardExample(group[0][0].tokens[:1], np.zeros(0, np.int64), np.zeros(0, np.float32), ""), False)
            )
        length = padded_length(group, multiple)
        mine = group[rank::ranks]
        yield [collate(mine[i : i + micro_batch_size], pad_id, length) for i in range(0, len(mine), micro_batch_size)]
