"""The generated task the R1 recipes are shown on at CPU scale: sums of two or three one-digit
numbers, asked in English ("Calculate 3 + 4 + 5.") or Chinese ("计算 3 + 4 + 5。"), with every
kind of data the R1 pipeline needs, written by one command:

    python -m megatron_recipes.data.r1_tasks --out DIR [--pretrain-documents 6000 --tag-share 0.1 ...]

Files under DIR (JSONL unless noted; `manifest.json` lists counts, seeds and the checks below):
    pretrain_text.jsonl      {"id", "text"}: the tiny base model's text: worked sums in prose, and
                             question/answer exchanges in the chat format whose answers take several
                             forms; a `tag_share` of the exchanges answers in the R1 tag format
                             ("<think> 3 + 4 = 7 </think> <answer> 7 </answer>"), as web text shows
                             a format now and then; a `noise` share of all sums is wrong by one.
    prompts_train.jsonl      {"id", "question", "answer", "language"}: RL / rejection-sampling questions
    prompts_heldout.jsonl    the held-out questions (evaluation; dataset=jsonl)
    cold_start.jsonl         {"question", "reasoning", "summary"}: long readable chains in the
                             question's language (R1's cold-start data; the SFT reader's
                             reasoning/summary form)
    mixed_language_sft.jsonl {"messages"}: R1-format chains whose sentences mix English and Chinese
                             at random (the policy the language-consistency reward corrects)
    general_sft.jsonl        {"messages"}: general (non-reasoning) requests answered in the R1 format
    general_prompts.jsonl    {"question", "answer": "[general] <reference response>"}
    final_rl_prompts.jsonl   training questions and general prompts, interleaved (R1's final RL)

Held-out questions are disjoint from every training file: a sum is held out when a hash of its
terms falls in `heldout_fraction` (so "3 + 4" is held out in both languages, and in every order
of its terms it is written in), and no training question, cold-start chain, mixed chain or
pretraining document is made from a held-out sum. `manifest.json` records the check.

Cost: linear in the counts; a few seconds for the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from megatron_recipes.data.think_template import THINK_QUESTION_TEMPLATE, think_prompt, think_response
from megatron_recipes.rewards.functions import GENERAL_REFERENCE_PREFIX

LANGUAGES = ("en", "zh")


@dataclass(frozen=True)
class SumQuestion:
    terms: tuple[int, ...]
    language: str

    @property
    def key(self) -> str:
        """The sum itself, independent of language and term order (the held-out unit)."""
        return "+".join(str(t) for t in sorted(self.terms))

    @property
    def id(self) -> str:
        return f"sum-{self.language}-{'-'.join(str(t) for t in self.terms)}"

    @property
    def expression(self) -> str:
        return " + ".join(str(t) for t in self.terms)

    @property
    def answer(self) -> int:
        return sum(self.terms)

    @property
    def text(self) -> str:
        return f"Calculate {self.expression}." if self.language == "en" else f"计算 {self.expression}。"

    def record(self) -> dict:
        return {"id": self.id, "question": self.text, "answer": str(self.answer), "language": self.language}


def is_held_out(question: SumQuestion, fraction: float) -> bool:
    digest = hashlib.sha256(question.key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def random_question(rng: random.Random, language: str | None = None) -> SumQuestion:
    terms = tuple(rng.randint(0, 9) for _ in range(rng.choice((2, 3))))
    return SumQuestion(terms, language or rng.choice(LANGUAGES))


def draw_questions(
    rng: random.Random, count: int, held_out: bool, fraction: float, language=None, distinct: bool = False
) -> list[SumQuestion]:
    """`count` questions on the held-out side (held_out=True) or the training side of the split;
    `distinct`: no question twice (an evaluation set)."""
    questions, seen = [], set()
    while len(questions) < count:
        question = random_question(rng, language)
        if is_held_out(question, fraction) == held_out and not (distinct and question in seen):
            questions.append(question)
            seen.add(question)
    return questions


# ------------------------------------------------------------------------------------------------
# Chains of thought


def partial_sums(terms: Sequence[int], wrong_step: int | None = None) -> list[tuple[int, int, int]]:
    """(running total, next term, new total) per step; `wrong_step` makes that step off by one."""
    steps, total = [], terms[0]
    for index, term in enumerate(terms[1:]):
        new = total + term + (1 if wrong_step == index else 0)
        steps.append((total, term, new))
        total = new
    return steps


def readable_sentences(question: SumQuestion, language: str, result: int | None = None) -> list[str]:
    """A long, readable chain of thought (cold-start style), one sentence per entry; `result` set
    forces a (possibly wrong) final value into the chain."""
    terms = question.terms
    steps = partial_sums(terms)
    if result is not None and steps:
        steps[-1] = (steps[-1][0], steps[-1][1], result)
    final = steps[-1][2]
    listed = ", ".join(str(t) for t in terms[:-1])
    if language == "en":
        sentences = [f"We need the sum of {listed} and {terms[-1]}.", "Add the numbers from left to right."]
        sentences += [f"{a} + {b} = {c}." for a, b, c in steps]
        check = f"{final} - {terms[-1]} = {final - terms[-1]}"
        sentences += [f"Let me check by subtracting the last number: {check}.", f"So the sum is {final}."]
    else:
        listed_zh = "、".join(str(t) for t in terms[:-1])
        sentences = [f"我们需要求 {listed_zh} 和 {terms[-1]} 的和。", "从左到右依次相加。"]
        sentences += [f"{a} + {b} = {c}。" for a, b, c in steps]
        check = f"{final} - {terms[-1]} = {final - terms[-1]}"
        sentences += [f"检查一下，减去最后一个数：{check}。", f"所以和是 {final}。"]
    return sentences


def summary_sentence(question: SumQuestion, language: str, result: int) -> str:
    if language == "en":
        return f"{question.expression} = {result}. The answer is {result}."
    return f"{question.expression} = {result}。答案是 {result}。"


def cold_start_record(question: SumQuestion) -> dict:
    sentences = readable_sentences(question, question.language)
    return {
        "id": question.id,
        "question": question.text,
        "reasoning": "\n".join(sentences),
        "summary": summary_sentence(question, question.language, question.answer),
        "language": question.language,
    }


def mixed_language_response(question: SumQuestion, rng: random.Random, mix: float) -> str:
    """An R1-format response whose chain takes each sentence in a random language (the other
    language than the question's with probability `mix`)."""
    other = "zh" if question.language == "en" else "en"
    chains = {language: readable_sentences(question, language) for language in LANGUAGES}
    chosen = [chains[other if rng.random() < mix else question.language][i] for i in range(len(chains["en"]))]
    separator = " "
    return f"<think> {separator.join(chosen)} </think> <answer> {question.answer} </answer>"


def compact_response(question: SumQuestion, result: int) -> str:
    steps = partial_sums(question.terms)
    steps[-1] = (steps[-1][0], steps[-1][1], result)
    return think_response(", ".join(f"{a} + {b} = {c}" for a, b, c in steps), str(result))


# ------------------------------------------------------------------------------------------------
# Pretraining text and general data

GENERAL_WORDS = {
    "en": ("apple", "river", "garden", "window", "yellow", "music", "planet", "silver", "forest", "candle"),
    "zh": ("苹果", "河流", "花园", "窗户", "黄色", "音乐", "星球", "银色", "森林", "蜡烛"),
}


def general_example(rng: random.Random, language: str) -> tuple[str, str, str]:
    """(request, reasoning, reference response) of a general (non-reasoning) request."""
    word = rng.choice(GENERAL_WORDS[language])
    if language == "en":
        return f"Repeat the word {word}.", f"The word to repeat is {word}.", word
    return f"重复这个词：{word}。", f"要重复的词是{word}。", word


def plain_answer(question: SumQuestion, result: int, rng: random.Random) -> str:
    if question.language == "en":
        return rng.choice([f"{question.expression} = {result}.", f"The answer is {result}.", f"{result}"])
    return rng.choice([f"{question.expression} = {result}。", f"答案是 {result}。", f"{result}"])


def pretraining_documents(
    rng: random.Random, count: int, tag_share: float, noise: float, fraction: float
) -> tuple[list[dict], dict]:
    """Worked sums in prose (about 30%), chat exchanges about sums (65%) and general requests (5%);
    `tag_share` of the exchanges answer in the tag format. Returns the documents and their counts
    by kind."""
    documents, kinds = (
        [],
        {"prose": 0, "chat_plain": 0, "chat_tagged": 0, "general": 0, "general_tagged": 0, "wrong_sums": 0},
    )
    for index in range(count):
        roll = rng.random()
        if roll < 0.05:
            language = rng.choice(LANGUAGES)
            request, reasoning, response = general_example(rng, language)
            tagged = rng.random() < tag_share
            text = think_prompt(request) + " " + (think_response(reasoning, response) if tagged else response)
            kinds["general"] += 1
            kinds["general_tagged"] += tagged
        else:
            question = draw_questions(rng, 1, False, fraction)[0]
            wrong = rng.random() < noise
            result = question.answer + (rng.choice((-1, 1)) if wrong else 0)
            kinds["wrong_sums"] += wrong
            if roll < 0.35:
                text = " ".join(readable_sentences(question, question.language, result))
                kinds["prose"] += 1
            elif rng.random() < tag_share:
                text = think_prompt(question.text) + " " + compact_response(question, result)
                kinds["chat_tagged"] += 1
            else:
                text = think_prompt(question.text) + " " + plain_answer(question, result, rng)
                kinds["chat_plain"] += 1
        documents.append({"id": f"r1-text-{index}", "text": text})
    return documents, kinds


def messages(user: str, assistant: str, kind: str, identifier: str) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
        "kind": kind,
        "id": identifier,
    }


def user_turn(question: str) -> str:
    return THINK_QUESTION_TEMPLATE.replace("{question}", question)


# ------------------------------------------------------------------------------------------------


@dataclass
class TaskSizes:
    pretrain_documents: int = 6000
    train_prompts: int = 2000
    heldout_prompts: int = 64
    cold_start: int = 400
    mixed_language_sft: int = 2000
    general: int = 200
    tag_share: float = 0.1
    noise: float = 0.05
    mix: float = 0.5
    heldout_fraction: float = 0.2
    seed: int = 2025


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    partial.replace(path)


def write_task_files(directory: str | Path, sizes: TaskSizes) -> dict:
    """Write every file of the module docstring; returns the manifest (also written)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(sizes.seed)
    fraction = sizes.heldout_fraction
    documents, kinds = pretraining_documents(rng, sizes.pretrain_documents, sizes.tag_share, sizes.noise, fraction)
    train = draw_questions(rng, sizes.train_prompts, False, fraction)
    heldout = draw_questions(random.Random(sizes.seed + 1), sizes.heldout_prompts, True, fraction, distinct=True)
    cold = draw_questions(rng, sizes.cold_start, False, fraction)
    mixed = draw_questions(rng, sizes.mixed_language_sft, False, fraction)
    general_rows, general_prompts = [], []
    for index in range(sizes.general):
        language = LANGUAGES[index % 2]
        request, reasoning, response = general_example(rng, language)
        general_rows.append(
            messages(user_turn(request), think_response(reasoning, response), "general", f"general-{index}")
        )
        general_prompts.append(
            {
                "id": f"general-{index}",
                "question": request,
                "answer": f"{GENERAL_REFERENCE_PREFIX} {response}",
                "language": language,
            }
        )
    # A training sum may be drawn more than once (RL asks it again); question files need unique ids.
    train_records = [{**q.record(), "id": f"{q.id}-{index}"} for index, q in enumerate(train)]
    files = {
        "pretrain_text": documents,
        "prompts_train": train_records,
        "prompts_heldout": [q.record() for q in heldout],
        "cold_start": [cold_start_record(q) for q in cold],
        "mixed_language_sft": [
            messages(user_turn(q.text), mixed_language_response(q, rng, sizes.mix), "mixed_language", q.id)
            for q in mixed
        ],
        "general_sft": general_rows,
        "general_prompts": general_prompts,
        "final_rl_prompts": _interleave(train_records, general_prompts),
    }
    for name, rows in files.items():
        write_jsonl(out / f"{name}.jsonl", rows)
    training_keys = {q.key for q in (*train, *cold, *mixed)}
    heldout_keys = {q.key for q in heldout}
    manifest = {
        "sizes": vars(sizes),
        "counts": {name: len(rows) for name, rows in files.items()},
        "pretrain_kinds": kinds,
        # Documents whose answer is in the tag format (sums and general requests).
        "pretrain_tagged_share_of_documents": (kinds["chat_tagged"] + kinds["general_tagged"]) / max(1, len(documents)),
        "heldout_questions": len({q.id for q in heldout}),
        "heldout_sums": len(heldout_keys),
        "heldout_overlap_with_training_sums": len(training_keys & heldout_keys),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _interleave(first: list[dict], second: list[dict]) -> list[dict]:
    """`second` spread evenly through `first`."""
    step = max(1, len(first) // max(1, len(second)))
    merged, pending = [], list(second)
    for index, row in enumerate(first):
        merged.append(row)
        if pending and index % step == step - 1:
            merged.append(pending.pop(0))
    return merged + pending


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the R1 CPU task's files (see the module docstring).")
    parser.add_argument("--out", required=True)
    defaults = TaskSizes()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    arguments = vars(parser.parse_args(argv))
    out = arguments.pop("out")
    manifest = write_task_files(out, TaskSizes(**arguments))
    print(
        json.dumps(
            {"out": out, **manifest["counts"], "heldout_overlap": manifest["heldout_overlap_with_training_sums"]}
        )
    )


if __name__ == "__main__":
    main()
