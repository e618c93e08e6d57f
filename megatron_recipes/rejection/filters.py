"""The rules of rejection sampling, pure: which of one prompt's samples are kept, and why the
others are not.

    judge_prompt_samples(texts, rewards, question, acceptance, filters) -> list[str]
        one verdict per sample: KEPT or the reason it was dropped (DROP_REASONS, in order)
    paragraphs(text), holds_code_block(text), normalized(text), mixes_languages(text, target, languages, minimum)
    Tally: counts that add up (samples = kept + dropped by reason) and the accepted-per-prompt histogram

Cost: linear in the samples' text (the language rule labels each script span once, cached).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from megatron_recipes.rejection.config import AcceptanceConfig, FilterConfig
from megatron_recipes.rewards.language import chain_of_thought, language_shares, question_language

KEPT = "kept"
DROP_REASONS = ("ungradable", "incorrect", "mixed_language", "long_paragraph", "code_block", "duplicate", "over_cap")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SPACE = re.compile(r"\s+")
_FENCED_CODE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)


def paragraphs(text: str) -> list[str]:
    return [part.strip() for part in _BLANK_LINE.split(text) if part.strip()]


def holds_code_block(text: str) -> bool:
    return "```" in text


def normalized(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def mixes_languages(text: str, target: str, languages: Sequence[str], minimum: float) -> bool:
    """Whether the chain of thought of `text` has less than `minimum` of its words in `target`. A
    chain without words ("3 + 4 = 7") mixes nothing: unlike the reward, the filter does not
    punish brevity. Fenced code is no natural language and is left out (the code rule judges it)."""
    shares = language_shares(_FENCED_CODE.sub(" ", chain_of_thought(text)), languages)
    total = sum(shares.values())
    return total > 0 and shares.get(target, 0) / total < minimum


def judge_prompt_samples(
    texts: Sequence[str],
    rewards: Sequence[float | None],
    question: str,
    acceptance: AcceptanceConfig,
    filters: FilterConfig,
) -> list[str]:
    """Verdicts for the samples of one prompt, in sample order (the first rule broken names it)."""
    languages = tuple(filters.languages)
    target = question_language(question, languages) if filters.min_language_consistency > 0 else None
    seen: set[str] = set()
    kept = 0
    verdicts = []
    for text, reward in zip(texts, rewards):
        if acceptance.reward is not None and reward is None:
            verdict = "ungradable"
        elif acceptance.reward is not None and reward < acceptance.threshold:
            verdict = "incorrect"
        elif target is not None and mixes_languages(  # a question without words sets no language
            text, target, languages, filters.min_language_consistency
        ):
            verdict = "mixed_language"
        elif filters.max_paragraph_chars is not None and any(
            len(part) > filters.max_paragraph_chars for part in paragraphs(text)
        ):
            verdict = "long_paragraph"
        elif filters.drop_code_blocks and holds_code_block(text):
            verdict = "code_block"
        elif filters.deduplicate and normalized(text) in seen:
            verdict = "duplicate"
        elif filters.max_per_prompt is not None and kept >= filters.max_per_prompt:
            verdict = "over_cap"
        else:
            verdict = KEPT
        if verdict == KEPT:
            kept += 1
        if verdict in (KEPT, "over_cap"):
            seen.add(normalized(text))
        verdicts.append(verdict)
    return verdicts


@dataclass
class Tally:
    """Counts over prompts; `merge` adds another tally (shards, ranks)."""

    prompts: int = 0
    samples: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {reason: 0 for reason in DROP_REASONS})
    # accepted samples per prompt -> number of prompts
    accepted_per_prompt: dict[str, int] = field(default_factory=dict)
    reward_sum: float = 0.0
    graded: int = 0

    def add_prompt(self, verdicts: Sequence[str], rewards: Sequence[float | None]) -> None:
        counts = Counter(verdicts)
        self.prompts += 1
        self.samples += len(verdicts)
        self.kept += counts[KEPT]
        for reason in DROP_REASONS:
            self.dropped[reason] += counts[reason]
        key = str(counts[KEPT])
        self.accepted_per_prompt[key] = self.accepted_per_prompt.get(key, 0) + 1
        graded = [r for r in rewards if r is not None]
        self.reward_sum += sum(graded)
        self.graded += len(graded)

    def merge(self, other: dict) -> None:
        self.prompts += other["prompts"]
        self.samples += other["samples"]
        self.kept += other["kept"]
        for reason, count in other["dropped"].items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        for key, count in other["accepted_per_prompt"].items():
            self.accepted_per_prompt[key] = self.accepted_per_prompt.get(key, 0) + count
        self.reward_sum += other["reward_sum"]
        self.graded += other["graded"]

    def as_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "samples": self.samples,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "accepted_per_prompt": dict(sorted(self.accepted_per_prompt.items(), key=lambda item: int(item[0]))),
            "reward_sum": self.reward_sum,
            "graded": self.graded,
        }
