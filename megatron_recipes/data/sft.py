"""SFT data: chat-form JSONL -> token ids with a loss mask -> sequences packed to the context length.

Record forms (one JSON object per line; unreadable lines raise one error naming file and line):

    {"messages": [{"role": "system", "content": ...},            # optional
                  {"role": "user", "content": "question"},
                  {"role": "assistant", "content": "reasoning ... ```python\\ncode\\n```"},
                  {"role": "tool", "content": "the program's output"},   # tool-integrated reasoning
                  {"role": "assistant", "content": "... \\boxed{42}"}],
     "kind": "cot" | "pot" | "tool"}                             # optional, counted in the summary
    {"prompt": "question", "response": "solution"}               # also question/answer, problem/solution

Chain-of-thought and program-of-thought solutions are one assistant turn (a program-of-thought
turn holds a ```python block); tool-integrated solutions alternate assistant turns that end with
a code block and tool turns holding the block's output (roles `tool`, `ipython` or `output`).

Rendering (data/chat.py `render_conversation`, template in data/config.py ChatTemplateConfig): each
turn becomes a piece of text marked trained (assistant turns, and the end-of-document token after the last one) or not
(system, user, the assistant header, tool outputs). Each piece is tokenized on its own, so a
generation prompt (rendered context + assistant header) has exactly the training tokens.

Training sequences (`SftDataset[i]`, numpy arrays of length seq_length):
    tokens, labels (next token), loss_mask (1.0 where the label is a trained token),
    segment_ids (1, 2, ... per packed example, 0 for padding), position_ids (restart at 0 per example).
An example of n tokens fills n - 1 positions (inputs ids[:-1], labels ids[1:]), so no label ever
crosses into the next example. Packing is first-fit over `packing_bins` open sequences, after a
seeded shuffle; examples longer than seq_length + 1 tokens are truncated or dropped (counted).

Attention stays inside each example (`attention_inputs`): for megatron-core's local layer spec
(CPU, or GPUs without Transformer Engine) an explicit block-diagonal causal mask [b, 1, s, s]
(True = masked); for the Transformer Engine spec, `PackedSeqParams` in the `thd` format with the
examples' cumulative lengths (micro-batch size 1, megatron's own packed-sequence path; RoPE then
restarts per example). With the local spec RoPE positions continue across examples, which
changes nothing: rotary attention scores depend only on the distance between query and key, and
no query sees a key of another example.

Sample order: sequence index i of the run (resumable at any consumed count) reads packed
sequence permutation_e[i mod S] with e = i // S (a new seeded permutation per epoch).

Cost: reading and tokenizing is linear in the data; memory holds every example's ids (int32) and
flags once (the packed sequences are lists of example indices); the dense mask of the local spec
is micro_batch x seq_length^2 booleans per micro-batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from megatron.core.packed_seq_params import PackedSeqParams

from megatron_recipes.data.chat import Piece, SftDataError, conversation_from_record, render_conversation
from megatron_recipes.data.config import ChatTemplateConfig, SftDataConfig
from megatron_recipes.data.pretraining import DataParallelSampler
from stack_common.errors import ConfigError


@dataclass
class Example:
    ids: np.ndarray  # int32 [n]
    trained: np.ndarray  # bool [n]: the token is a response token (it carries loss as a label)
    kind: str = ""


def tokenize_pieces(pieces: Sequence[Piece], tokenizer, append_eod: bool, kind: str = "") -> Example:
    """Each run of consecutive context pieces is tokenized as one string: that string is exactly
    what generation encodes as its prompt (`render_prompt`, a rollout's tool output), and BPE
    merges across the pieces' boundaries ("\n\n" + "Assistant:"), so encoding them one by one
    would train the model on prompt tokens it never sees when it generates."""
    merged: list[Piece] = []
    for piece in pieces:
        if merged and not piece.trained and not merged[-1].trained:
            merged[-1] = Piece(merged[-1].text + piece.text, False)
        else:
            merged.append(piece)
    ids: list[int] = []
    trained: list[bool] = []
    for piece in merged:
        piece_ids = tokenizer.encode(piece.text)
        ids.extend(piece_ids)
        trained.extend([piece.trained] * len(piece_ids))
    if append_eod:
        ids.append(tokenizer.eod)
        trained.append(True)
    return Example(np.asarray(ids, dtype=np.int32), np.asarray(trained, dtype=bool), kind)


def jsonl_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found = sorted(path.rglob("*.jsonl"))
            if not found:
                raise ConfigError(f"sft_data.paths: {path} holds no .jsonl file")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"sft_data.paths: {path} does not exist")
    return files


def read_examples(
    paths: Sequence[str], template: ChatTemplateConfig, tokenizer, max_examples: int | None = None
) -> list[Example]:
    """Every record of the JSONL files, rendered and tokenized."""
    examples: list[Example] = []
    for file in jsonl_files(paths):
        with file.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{file}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise SftDataError(f"{where}: not JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise SftDataError(f"{where}: a record must be a JSON object")
                turns, kind = conversation_from_record(record, where)
                pieces = render_conversation(turns, template, where)
                examples.append(tokenize_pieces(pieces, tokenizer, template.append_eod, kind))
                if max_examples is not None and len(examples) >= max_examples:
                    return examples
    if not examples:
        raise ConfigError(f"sft_data.paths {list(paths)} hold no examples")
    return examples


@dataclass
class PackingSummary:
    examples: int = 0
    sequences: int = 0
    truncated: int = 0
    dropped: int = 0
    no_trained_tokens: int = 0
    trained_tokens: int = 0
    filled_positions: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def fill_rate(self, seq_length: int) -> float:
        return self.filled_positions / (self.sequences * seq_length) if self.sequences else 0.0


def pack_examples(lengths: Sequence[int], seq_length: int, bins: int, pack: bool = True) -> list[list[int]]:
    """Group example indices into sequences: first-fit over at most `bins` open sequences (each
    example occupies lengths[i] - 1 positions). Deterministic; O(examples x bins)."""
    if not pack:
        return [[index] for index in range(len(lengths))]
    sequences: list[list[int]] = []
    open_bins: list[tuple[int, list[int]]] = []  # (free positions, example indices)
    for index, length in enumerate(lengths):
        need = length - 1
        for slot, (free, members) in enumerate(open_bins):
            if need <= free:
                members.append(index)
                open_bins[slot] = (free - need, members)
                break
        else:
            if len(open_bins) >= bins:
                fullest = min(range(len(open_bins)), key=lambda slot: open_bins[slot][0])
                sequences.append(open_bins.pop(fullest)[1])
            open_bins.append((seq_length - need, [index]))
    sequences.extend(members for _, members in open_bins)
    return sequences


class SftDataset:
    """Packed SFT sequences (see module docstring); `dataset[i]` is a dict of numpy arrays."""

    def __init__(
        self,
        examples: Sequence[Example],
        seq_length: int,
        pack: bool = True,
        bins: int = 16,
        long_examples: str = "truncate",
        seed: int = 1234,
        pad_id: int = 0,
    ):
        self.seq_length = seq_length
        self.seed = seed
        self.pad_id = pad_id
        self.summary = PackingSummary()
        kept: list[Example] = []
        for example in examples:
            self.summary.examples += 1
            self.summary.kinds[example.kind or "unlabelled"] = (
                self.summary.kinds.get(example.kind or "unlabelled", 0) + 1
            )
            if len(example.ids) > seq_length + 1:
                if long_examples == "drop":
                    self.summary.dropped += 1
                    continue
                example = Example(example.ids[: seq_length + 1], example.trained[: seq_length + 1], example.kind)
                self.summary.truncated += 1
            if len(example.ids) < 2 or not example.trained[1:].any():
                self.summary.no_trained_tokens += 1
                continue
            kept.append(example)
        if not kept:
            raise ConfigError("no SFT example has a response token left (all dropped, or sequences too short)")
        order = np.random.default_rng(seed).permutation(len(kept))
        self.examples = [kept[i] for i in order]
        self.sequences = pack_examples([len(e.ids) for e in self.examples], seq_length, bins, pack)
        self.summary.sequences = len(self.sequences)
        self.summary.trained_tokens = int(sum(e.trained[1:].sum() for e in self.examples))
        self.summary.filled_positions = int(sum(len(e.ids) - 1 for e in self.examples))

    def __len__(self) -> int:
        return len(self.sequences)

    def packed(self, sequence_index: int) -> dict[str, np.ndarray]:
        """Packed sequence `sequence_index` (no epoch shuffling)."""
        length = self.seq_length
        tokens = np.full(length, self.pad_id, dtype=np.int64)
        labels = np.full(length, self.pad_id, dtype=np.int64)
        loss_mask = np.zeros(length, dtype=np.float32)
        segment_ids = np.zeros(length, dtype=np.int64)
        position_ids = np.zeros(length, dtype=np.int64)
        start = 0
        for segment, example_index in enumerate(self.sequences[sequence_index], 1):
            example = self.examples[example_index]
            count = len(example.ids) - 1
            tokens[start : start + count] = example.ids[:-1]
            labels[start : start + count] = example.ids[1:]
            loss_mask[start : start + count] = example.trained[1:]
            segment_ids[start : start + count] = segment
            position_ids[start : start + count] = np.arange(count)
            start += count
        position_ids[start:] = np.arange(length - start)
        return {
            "tokens": tokens,
            "labels": labels,
            "loss_mask": loss_mask,
            "segment_ids": segment_ids,
            "position_ids": position_ids,
        }

    def sequence_for_sample(self, sample_index: int) -> int:
        epoch, offset = divmod(sample_index, len(self.sequences))
        permutation = np.random.default_rng((self.seed, epoch)).permutation(len(self.sequences))
        return int(permutation[offset])

    def __getitem__(self, sample_index: int) -> dict[str, np.ndarray]:
        return self.packed(self.sequence_for_sample(sample_index))


def block_causal_mask(segment_ids):
    """[b, s] segment ids -> [b, 1, s, s] bool attention mask, True = masked: a query sees the keys
    of its own segment at or before it (padding, segment 0, only sees padding)."""
    length = segment_ids.shape[1]
    same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    return ~(same & causal).unsqueeze(1)


def packed_seq_params(segment_ids):
    """megatron PackedSeqParams (`thd`) for one packed sequence [1, s]: the cumulative lengths of
    its segments, padding counted as a last segment (Transformer Engine attention path)."""
    if segment_ids.shape[0] != 1:
        raise ConfigError("packed SFT with Transformer Engine attention needs trainer.micro_batch_size=1")
    row = segment_ids[0]
    boundaries = torch.nonzero(row[1:] != row[:-1]).flatten() + 1
    cumulative = torch.cat([row.new_zeros(1), boundaries, row.new_tensor([row.numel()])]).to(torch.int32)
    longest = int((cumulative[1:] - cumulative[:-1]).max())
    return PackedSeqParams(
        qkv_format="thd", cu_seqlens_q=cumulative, cu_seqlens_kv=cumulative, max_seqlen_q=longest, max_seqlen_kv=longest
    )


def collate(samples: Sequence[dict[str, np.ndarray]], attention: str = "mask") -> dict:
    """Stack samples into a micro-batch of tensors; `attention`: mask (local spec: add the
    block-causal attention_mask), packed (TE: keep segment_ids for packed_seq_params), none."""
    batch = {key: torch.from_numpy(np.stack([sample[key] for sample in samples])) for key in samples[0]}
    if attention == "mask":
        batch["attention_mask"] = block_causal_mask(batch["segment_ids"])
    return batch


def sft_batches(
    dataset: SftDataset,
    micro_batch_size: int,
    data_parallel_rank: int,
    data_parallel_size: int,
    consumed_samples: int,
    total_samples: int,
    attention: str = "mask",
) -> Iterator[dict]:
    """Micro-batches of this data-parallel rank from sample `consumed_samples` to `total_samples`."""
    for indices in DataParallelSampler(
        total_samples, consumed_samples, micro_batch_size, data_parallel_rank, data_parallel_size
    ):
        yield collate([dataset[i] for i in indices], attention)


def build_sft_datasets(
    config: SftDataConfig, template: ChatTemplateConfig, tokenizer
) -> tuple[SftDataset, SftDataset | None]:
    """Train (and optional validation) datasets from the config."""
    examples = read_examples(config.paths, template, tokenizer, config.max_examples)
    validation = None
    if config.validation_fraction > 0:
        order = np.random.default_rng(config.seed + 1).permutation(len(examples))
        held = max(1, int(round(len(examples) * config.validation_fraction)))
        if held >= len(examples):
            raise ConfigError("sft_data.validation_fraction leaves no training example")
        validation = SftDataset(
            [examples[i] for i in order[:held]],
            config.seq_length,
            config.pack,
            config.packing_bins,
            config.long_examples,
            config.seed,
            tokenizer.eod,
        )
        examples = [examples[i] for i in order[held:]]
    train = SftDataset(
        examples, config.seq_length, config.pack, config.packing_bins, config.long_examples, config.seed, tokenizer.eod
    )
    return train, validation
