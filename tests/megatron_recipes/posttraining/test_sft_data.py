"""SFT data: chat rendering and loss masks (prompt and tool-output tokens carry no loss), packing
that respects example boundaries, the block-causal attention mask, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from megatron_recipes.data.chat import SftDataError, conversation_from_record, render_conversation, render_prompt
from megatron_recipes.data.config import ChatTemplateConfig, SftDataConfig
from megatron_recipes.data.sft import (
    SftDataset,
    block_causal_mask,
    build_sft_datasets,
    collate,
    pack_examples,
    read_examples,
    sft_batches,
    tokenize_pieces,
)
from megatron_recipes.generation.tokenizer import TextTokenizer
from stack_common.errors import ConfigError
from tests.megatron_recipes.posttraining.arithmetic import train_small_tokenizer

TEMPLATE = ChatTemplateConfig()

CHAIN_OF_THOUGHT = {
    "messages": [
        {"role": "system", "content": "You are a careful mathematician."},
        {"role": "user", "content": "What is 6 * 7?"},
        {"role": "assistant", "content": "6 * 7 = 42. The answer is $\\boxed{42}$."},
    ],
    "kind": "cot",
}
PROGRAM_OF_THOUGHT = {
    "prompt": "What is 5 factorial?",
    "response": "```python\nimport math\nprint(math.factorial(5))\n```",
    "kind": "pot",
}
TOOL_INTEGRATED = {
    "messages": [
        {"role": "user", "content": "What is 6 * 7 + 1?"},
        {"role": "assistant", "content": "Let me compute it.\n```python\nprint(6 * 7 + 1)\n```"},
        {"role": "tool", "content": "43"},
        {"role": "assistant", "content": "So the answer is $\\boxed{43}$."},
    ],
    "kind": "tool",
}


def trained_text(example, tokenizer) -> str:
    """The text of the tokens that carry loss as labels (what the model is taught to write)."""
    ids = [int(i) for i, flag in zip(example.ids[1:], example.trained[1:]) if flag]
    return tokenizer.decode(ids)


def context_text(example, tokenizer) -> str:
    return tokenizer.decode([int(i) for i, flag in zip(example.ids, example.trained) if not flag])


@pytest.mark.parametrize(
    "record,taught",
    [
        (CHAIN_OF_THOUGHT, " 6 * 7 = 42. The answer is $\\boxed{42}$."),
        (PROGRAM_OF_THOUGHT, " ```python\nimport math\nprint(math.factorial(5))\n```"),
        (TOOL_INTEGRATED, " Let me compute it.\n```python\nprint(6 * 7 + 1)\n```So the answer is $\\boxed{43}$."),
    ],
)
def test_only_response_tokens_carry_loss(record, taught, small_tokenizer):
    turns, kind = conversation_from_record(record, "test")
    example = tokenize_pieces(render_conversation(turns, TEMPLATE), small_tokenizer, append_eod=True, kind=kind)
    assert trained_text(example, small_tokenizer) == taught  # EOD is trained too but decodes to nothing
    assert example.ids[-1] == small_tokenizer.eod and example.trained[-1]
    context = context_text(example, small_tokenizer)
    assert "What is" in context and context.endswith("Assistant:") or "```output" in context
    if record is TOOL_INTEGRATED:
        # The program's output is context, never a target.
        assert context.endswith("\n```output\n43\n```\n") and "43\n```" not in taught
        assert "You are" not in context
    if record is CHAIN_OF_THOUGHT:
        assert context.startswith("You are a careful mathematician.\n\nUser: What is 6 * 7?\n\nAssistant:")


def test_generation_prompt_tokens_are_the_training_prefix(small_tokenizer):
    turns, _ = conversation_from_record({"prompt": "Calculate 3 + 4.", "response": "The answer is $\\boxed{7}$."}, "t")
    example = tokenize_pieces(render_conversation(turns, TEMPLATE), small_tokenizer, True)
    prompt_ids = small_tokenizer.encode(render_prompt("Calculate 3 + 4.", TEMPLATE))
    assert list(example.ids[: len(prompt_ids)]) == prompt_ids
    assert not example.trained[: len(prompt_ids)].any() and example.trained[len(prompt_ids) :].all()


def test_prompt_tokens_match_generation_where_bpe_merges_across_pieces(tmp_path):
    # A byte-level BPE that learned "\n\n" encodes the user turn's trailing "\n\n" as one token
    # when the turn is encoded alone, but as two before "Assistant:" (pre-tokenization splits
    # whitespace followed by a letter). Generation encodes the whole prompt string, so training
    # must too: otherwise the model learns its answers after a prompt it never sees again.

    texts = ["Some paragraph.\n\n\n\nAnother one.\n\n"] * 200 + [
        "User: Calculate 3 + 4.\n\nAssistant: The answer is 7."
    ] * 50
    tokenizer = TextTokenizer(str(train_small_tokenizer(tmp_path / "tok", texts, vocab_size=300)))
    user = "User: Calculate 3 + 4.\n\n"
    assert tokenizer.encode(user) + tokenizer.encode("Assistant:") != tokenizer.encode(
        user + "Assistant:"
    )  # the trap exists
    turns, _ = conversation_from_record({"prompt": "Calculate 3 + 4.", "response": "The answer is $\\boxed{7}$."}, "t")
    example = tokenize_pieces(render_conversation(turns, TEMPLATE), tokenizer, True)
    prompt_ids = tokenizer.encode(render_prompt("Calculate 3 + 4.", TEMPLATE))
    assert list(example.ids[: len(prompt_ids)]) == prompt_ids
    assert not example.trained[: len(prompt_ids)].any() and example.trained[len(prompt_ids) :].all()


@pytest.mark.parametrize(
    "record,message",
    [
        ({"messages": [{"role": "user", "content": "q"}]}, "no assistant turn"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "tool", "content": "1"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "must follow an assistant turn",
        ),
        (
            {"messages": [{"role": "narrator", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "unknown role 'narrator'",
        ),
        ({"text": "just text"}, "needs 'messages' or a prompt/response pair"),
    ],
)
def test_bad_conversations_fail_with_one_line(record, message):
    with pytest.raises(SftDataError, match=message):
        render_conversation(conversation_from_record(record, "f.jsonl:3")[0], TEMPLATE, "f.jsonl:3")


def test_unreadable_line_names_file_and_line(tmp_path, small_tokenizer):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(CHAIN_OF_THOUGHT) + "\n{not json\n")
    with pytest.raises(SftDataError, match=f"{path}:2: not JSON"):
        read_examples([str(path)], TEMPLATE, small_tokenizer)
    with pytest.raises(ConfigError, match="does not exist"):
        read_examples([str(tmp_path / "missing.jsonl")], TEMPLATE, small_tokenizer)


def test_first_fit_packing_keeps_every_example_once_within_the_length():
    lengths = [5, 9, 3, 7, 2, 9, 4, 6, 8, 3]
    sequences = pack_examples(lengths, seq_length=12, bins=2)
    assert sorted(i for sequence in sequences for i in sequence) == list(range(len(lengths)))
    assert all(sum(lengths[i] - 1 for i in sequence) <= 12 for sequence in sequences)
    assert len(sequences) < len(lengths)  # several examples share sequences
    assert pack_examples(lengths, 12, 2, pack=False) == [[i] for i in range(len(lengths))]


def make_dataset(small_tokenizer, records, seq_length, **options) -> SftDataset:
    examples = []
    for record in records:
        turns, kind = conversation_from_record(record, "t")
        examples.append(tokenize_pieces(render_conversation(turns, TEMPLATE), small_tokenizer, True, kind))
    return SftDataset(examples, seq_length, pad_id=small_tokenizer.eod, **options)


def test_packed_sequences_never_cross_example_boundaries(small_tokenizer):
    records = [CHAIN_OF_THOUGHT, PROGRAM_OF_THOUGHT, TOOL_INTEGRATED] * 4
    dataset = make_dataset(small_tokenizer, records, seq_length=160, bins=4)
    assert len(dataset) < len(records) and dataset.summary.examples == 12
    seen_trained = 0
    for index in range(len(dataset)):
        sample = dataset.packed(index)
        segments = sample["segment_ids"]
        assert len(set(segments[segments > 0].tolist())) >= 1
        for segment in set(segments.tolist()) - {0}:
            positions = np.flatnonzero(segments == segment)
            assert (np.diff(positions) == 1).all()  # contiguous
            assert sample["position_ids"][positions].tolist() == list(range(len(positions)))  # restart per example
            example = dataset.examples[dataset.sequences[index][segment - 1]]
            # Within the segment: inputs are the example's ids[:-1], labels its ids[1:] (no label
            # ever comes from the next example) and the loss mask its trained flags shifted by one.
            assert sample["tokens"][positions].tolist() == example.ids[:-1].tolist()
            assert sample["labels"][positions].tolist() == example.ids[1:].tolist()
            assert sample["loss_mask"][positions].tolist() == example.trained[1:].astype(np.float32).tolist()
        assert sample["loss_mask"][segments == 0].sum() == 0
        seen_trained += int(sample["loss_mask"].sum())
    assert seen_trained == dataset.summary.trained_tokens


def test_long_examples_are_truncated_or_dropped_and_counted(small_tokenizer):
    records = [CHAIN_OF_THOUGHT, TOOL_INTEGRATED]
    prompts = [
        len(
            small_tokenizer.encode(
                "".join(p.text for p in render_conversation(conversation_from_record(r, "t")[0], TEMPLATE)[:2])
            )
        )
        for r in records
    ]
    length = max(prompts) + 3  # room for a few response tokens of each
    truncated = make_dataset(small_tokenizer, records, seq_length=length, long_examples="truncate")
    assert truncated.summary.truncated == 2 and len(truncated) == 2
    assert all(len(e.ids) == length + 1 and e.trained[1:].any() for e in truncated.examples)
    with pytest.raises(ConfigError, match="no SFT example"):
        make_dataset(small_tokenizer, records, seq_length=length, long_examples="drop")
    # A sequence too short for any response token: counted, and an error when nothing is left.
    with pytest.raises(ConfigError, match="no SFT example"):
        make_dataset(small_tokenizer, records, seq_length=min(prompts) - 2)


def test_block_causal_mask_blocks_other_examples_and_the_future():
    segments = torch.tensor([[1, 1, 1, 2, 2, 0]])
    mask = block_causal_mask(segments)[0, 0]
    allowed = ~mask
    assert allowed[2].tolist() == [True, True, True, False, False, False]
    assert allowed[4].tolist() == [False, False, False, True, True, False]
    assert allowed[3].tolist() == [False, False, False, True, False, False]
    assert allowed[5].tolist() == [False] * 5 + [True]


def test_epochs_reshuffle_and_batches_resume_at_any_sample(tmp_path, small_tokenizer):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [CHAIN_OF_THOUGHT, PROGRAM_OF_THOUGHT, TOOL_INTEGRATED] * 5))
    train, validation = build_sft_datasets(
        SftDataConfig(paths=[str(path)], seq_length=96, validation_fraction=0.2), TEMPLATE, small_tokenizer
    )
    assert validation is not None and validation.summary.examples == 3 and train.summary.examples == 12
    epoch_orders = [[train.sequence_for_sample(e * len(train) + i) for i in range(len(train))] for e in range(2)]
    assert sorted(epoch_orders[0]) == sorted(epoch_orders[1]) == list(range(len(train)))
    whole = list(sft_batches(train, 2, 0, 1, 0, 10))
    resumed = list(sft_batches(train, 2, 0, 1, 4, 10))
    assert all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(whole[2:], resumed))
    # Two data-parallel ranks split every global batch between them.
    rank0, rank1 = list(sft_batches(train, 1, 0, 2, 0, 4)), list(sft_batches(train, 1, 1, 2, 0, 4))
    assert [torch.equal(b["tokens"], whole[i // 2]["tokens"][i % 2 : i % 2 + 1]) for i, b in zip((0, 2), rank0)] == [
        True,
        True,
    ] and len(rank1) == 2
    batch = collate([train[0], train[1]])
    assert batch["attention_mask"].shape == (2, 1, 96, 96) and batch["attention_mask"].dtype == torch.bool
