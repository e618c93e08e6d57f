"""The rejection sampler's `acceptance` and `filters` sections (filters.py applies them). The
recipe's schema, RejectionSampleConfig, is in megatron_recipes/config.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from megatron_recipes.rewards.functions import REWARD_FUNCTIONS
from megatron_recipes.rewards.language import DEFAULT_LANGUAGES
from stack_common.checks import require_at_least, require_choice, require_range
from stack_common.errors import ConfigError


@dataclass
class AcceptanceConfig:
    """Which samples count as correct: reward `reward` (a registered name: an accuracy checker,
    or a learned reward model registered under its own name) at least `threshold`. null = accept
    every sample (the unfiltered baseline)."""

    reward: str | None = "think_accuracy"
    threshold: float = 1.0
    # Keyword options of the reward (as rl.reward_options).
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.reward is not None:
            require_choice("acceptance.reward", self.reward, sorted(REWARD_FUNCTIONS))


@dataclass
class FilterConfig:
    """R1's readability rules for the new SFT data, each switchable. A sample is dropped for the
    first rule it breaks, in this order: incorrect, mixed_language, long_paragraph, code_block,
    duplicate, over_cap."""

    # Drop chains whose share of words in the question's language is below this (0 = off).
    min_language_consistency: float = 0.95
    languages: list[str] = field(default_factory=lambda: list(DEFAULT_LANGUAGES))
    # Drop samples with a paragraph (text between blank lines) longer than this many characters; null = off.
    max_paragraph_chars: int | None = 2000
    # Drop samples holding a fenced code block (```).
    drop_code_blocks: bool = True
    # Keep one copy of samples whose text (whitespace collapsed) repeats within a prompt.
    deduplicate: bool = True
    # Keep at most this many samples per prompt (in sample order); null = all.
    max_per_prompt: int | None = 4

    def validate(self) -> None:
        require_range("filters.min_language_consistency", self.min_language_consistency, 0, 1)
        if self.min_language_consistency > 0 and not self.languages:
            raise ConfigError("filters.languages must name the candidate languages, e.g. [en, zh]")
        if self.max_paragraph_chars is not None:
            require_at_least("filters.max_paragraph_chars", self.max_paragraph_chars, 1)
        if self.max_per_prompt is not None:
            require_at_least("filters.max_per_prompt", self.max_per_prompt, 1)
