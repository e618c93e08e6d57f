"""The R1 CPU task (megatron_recipes/data/r1_tasks.py): every file it writes, held-out sums absent
from every training file (checked here by reading the files back, not by trusting the manifest),
both languages, the pretraining text's share of tag-format documents, and the mixed chains mixing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from megatron_recipes.data.r1_tasks import TaskSizes, write_task_files
from megatron_recipes.rewards import get_reward
from megatron_recipes.rewards.language import consistency_score

SUM = re.compile(r"(\d(?: \+ \d)+)")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def sums_in(text: str) -> set[str]:
    """Every sum written in `text`, as its sorted terms (the unit of the held-out split)."""
    return {"+".join(sorted(match.split(" + "))) for match in SUM.findall(text)}


def test_task_files_keep_held_out_sums_out_of_every_training_file(tmp_path):
    sizes = TaskSizes(
        pretrain_documents=1500, train_prompts=400, heldout_prompts=48, cold_start=80, mixed_language_sft=300
    )
    manifest = write_task_files(tmp_path, sizes)
    files = {name: rows(tmp_path / f"{name}.jsonl") for name in manifest["counts"]}
    assert {name: len(items) for name, items in files.items()} == manifest["counts"]
    heldout = files["prompts_heldout"]
    assert len(heldout) == 48 and len({row["id"] for row in heldout}) == 48
    assert {row["language"] for row in heldout} == {"en", "zh"}
    heldout_sums = set().union(*(sums_in(row["question"]) for row in heldout))
    training_text = [
        *(row["text"] for row in files["pretrain_text"]),
        *(row["question"] for row in files["prompts_train"]),
        *(row["question"] + row["reasoning"] + row["summary"] for row in files["cold_start"]),
        *(json.dumps(row["messages"], ensure_ascii=False) for row in files["mixed_language_sft"]),
        *(json.dumps(row["messages"], ensure_ascii=False) for row in files["general_sft"]),
    ]
    # Partial sums inside chains are training sums too ("3 + 4 = 7, 7 + 5"): only question-level
    # sums (the whole expression) are the split's unit, so compare whole questions' sums.
    training_questions = [row["question"] for row in files["prompts_train"]] + [
        row["question"] for row in files["cold_start"]
    ]
    training_sums = set().union(*(sums_in(question) for question in training_questions))
    assert heldout_sums and not heldout_sums & training_sums
    assert manifest["heldout_overlap_with_training_sums"] == 0
    # No pretraining document asks a held-out question.
    heldout_questions = {row["question"] for row in heldout}
    assert not any(question in text for text in training_text for question in heldout_questions)
    # The base model's text shows the tag format now and then, as web text would.
    tagged = sum("<think>" in row["text"].split("Assistant:")[-1] for row in files["pretrain_text"])
    assert tagged / len(files["pretrain_text"]) == manifest["pretrain_tagged_share_of_documents"]
    assert 0.02 < manifest["pretrain_tagged_share_of_documents"] < 0.15


def test_reference_responses_score_as_designed(tmp_path):
    write_task_files(tmp_path, TaskSizes(pretrain_documents=50, train_prompts=20, cold_start=20, mixed_language_sft=60))
    cold = rows(tmp_path / "cold_start.jsonl")
    for row in cold:  # readable chains in the question's language, ending in the answer
        assert consistency_score(row["reasoning"], row["language"]) == 1.0
    mixed = rows(tmp_path / "mixed_language_sft.jsonl")
    responses = [row["messages"][1]["content"] for row in mixed]
    questions = [row["messages"][0]["content"].splitlines()[-1] for row in mixed]
    scores = get_reward("language_consistency")(responses, None, questions=questions)
    assert 0.3 < sum(scores) / len(scores) < 0.8  # half the sentences in the other language
    answers = [str(eval(SUM.search(question).group(1))) for question in questions]
    assert get_reward("think_accuracy")(responses, answers) == [1.0] * len(mixed)
    assert get_reward("think_format")(responses) == [1.0] * len(mixed)
