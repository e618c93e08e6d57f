"""What R1-Zero's training curves watch besides reward: how long responses are and how often a
response revises itself ("wait, let me check ..."), per RL step.

    revises_itself(text, phrases=DEFAULT_REFLECTION_PHRASES) -> bool
    reflection_pattern(phrases) -> compiled regex (cached)

A phrase matches case-insensitively; a phrase that starts or ends with a letter or digit must do
so at a word boundary ("wait" does not match "awaited"). Phrases in scripts without spaces
(Chinese) match anywhere.

Cost: one regex scan per response.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

DEFAULT_REFLECTION_PHRASES = (
    "wait",
    "let me check",
    "let me re-check",
    "let me verify",
    "double-check",
    "re-examine",
    "on second thought",
    "i made a mistake",
    "that is wrong",
    "等等",
    "检查一下",
    "重新计算",
)


def _bounded(phrase: str) -> str:
    escaped = re.escape(phrase)
    if phrase[:1].isascii() and phrase[:1].isalnum():
        escaped = r"\b" + escaped
    if phrase[-1:].isascii() and phrase[-1:].isalnum():
        escaped += r"\b"
    return escaped


@functools.lru_cache(maxsize=32)
def reflection_pattern(phrases: tuple[str, ...]) -> re.Pattern | None:
    alternatives = [_bounded(phrase) for phrase in phrases if phrase]
    return re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None


def revises_itself(text: str, phrases: Sequence[str] = DEFAULT_REFLECTION_PHRASES) -> bool:
    pattern = reflection_pattern(tuple(phrases))
    return bool(pattern and pattern.search(text or ""))
