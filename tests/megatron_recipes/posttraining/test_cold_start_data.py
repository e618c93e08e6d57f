"""Cold-start SFT data (DeepSeek-R1): records of a question, a long reasoning and a readable summary
become one assistant turn in the R1 format (reasoning in think tags, summary in answer tags), with
the question put in the R1 prompt, read from files by the SFT reader like any other record; a bad
record gets one clear error."""

from __future__ import annotations

import json

import pytest

from megatron_recipes.data.chat import SftDataError, conversation_from_record
from megatron_recipes.data.config import ChatTemplateConfig, SftDataConfig
from megatron_recipes.data.sft import read_examples
from megatron_recipes.data.think_template import THINK_QUESTION_TEMPLATE, think_prompt
from stack_common.errors import ConfigError

RECORD = {
    "question": "计算 2 + 5。",
    "reasoning": "我们需要求 2 和 5 的和。\n2 + 5 = 7。",
    "summary": "2 + 5 = 7。答案是 7。",
}


def trained_text(example, tokenizer) -> str:
    ids = [int(i) for i, flag in zip(example.ids[1:], example.trained[1:]) if flag]
    return tokenizer.decode(ids)


def test_reasoning_and_summary_become_one_r1_format_turn():
    turns, kind = conversation_from_record(RECORD, "cold.jsonl:1")
    assert kind == "cold_start"
    assert turns == [
        {"role": "user", "content": "计算 2 + 5。"},
        {
            "role": "assistant",
            "content": "<think>\n我们需要求 2 和 5 的和。\n2 + 5 = 7。\n</think>\n"
            "<answer>\n2 + 5 = 7。答案是 7。\n</answer>",
        },
    ]
    turns, kind = conversation_from_record({**RECORD, "kind": "x"}, "w", "|{reasoning}|{summary}|")
    assert kind == "x" and turns[1]["content"] == "|我们需要求 2 和 5 的和。\n2 + 5 = 7。|2 + 5 = 7。答案是 7。|"


def test_the_reader_trains_the_r1_response_to_the_r1_prompt(tmp_path, small_tokenizer):
    path = tmp_path / "cold.jsonl"
    path.write_text(json.dumps(RECORD, ensure_ascii=False) + "\n", encoding="utf-8")
    [example] = read_examples(
        [str(path)], ChatTemplateConfig(), small_tokenizer, question_template=THINK_QUESTION_TEMPLATE
    )
    text = small_tokenizer.decode([int(i) for i in example.ids])
    # The context is exactly the generation prompt RL and evaluation send.
    assert text.startswith(think_prompt(RECORD["question"]))
    assert trained_text(example, small_tokenizer).startswith(" <think>\n我们需要求")
    assert example.kind == "cold_start"


def test_bad_records_and_templates_fail_clearly(tmp_path, small_tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"reasoning": "r", "summary": "s"}) + "\n")
    with pytest.raises(SftDataError, match=r"bad.jsonl:1: a reasoning/summary record needs a string question"):
        read_examples([str(path)], ChatTemplateConfig(), small_tokenizer)
    with pytest.raises(ConfigError, match="sft_data.reasoning_template=.* must contain {summary}"):
        SftDataConfig(paths=["x"], reasoning_template="<think>{reasoning}</think>").validate()
    with pytest.raises(ConfigError, match="sft_data.question_template=.* must contain {question}"):
        SftDataConfig(paths=["x"], question_template="Solve it.").validate()
