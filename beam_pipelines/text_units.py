"""Text cut into the units that counts and n-grams read: space-delimited words, and single
characters of the scripts written without spaces (Chinese, Japanese kana).

Whitespace alone gives a Chinese paragraph one "word"; every count built on it (quality rules,
token estimates) is then wrong by two orders of magnitude. Cost: one regular-expression pass,
linear in the text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# A Chinese word averages about 1.5 characters: CJK characters weigh 1/1.5 word in counts, and a
# Gopher word n-gram becomes a character n-gram of ceil(1.5 n) on pages written mostly in CJK.
CJK_CHARACTERS_PER_WORD = 1.5
# Han (basic, extension A, compatibility, supplementary planes), hiragana and katakana. Hangul is
# written with spaces between words and stays word-based.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# CJK symbols and punctuation, full-width punctuation: separators, as spaces are.
_CJK_PUNCTUATION = "\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
_UNIT = re.compile(f"[{_CJK}]|[^\\s{_CJK}{_CJK_PUNCTUATION}]+")
_CJK_CHARACTER = re.compile(f"[{_CJK}]")
# Tokens per unit of the DeepSeek tokenizer, measured on Debian manual pages: ~1.3 per English
# word (documentation with math), ~1.0 per CJK character (manpages-zh, full-width punctuation included).
TOKENS_PER_WORD = 1.3
TOKENS_PER_CJK_CHARACTER = 1.0


@dataclass(frozen=True)
class TextUnits:
    """A text cut into the units the rules count: space-delimited words, and single CJK characters."""

    units: list[str]
    cjk_characters: int

    @classmethod
    def of(cls, text: str) -> "TextUnits":
        units = _UNIT.findall(text)
        return cls(units, sum(1 for unit in units if len(unit) == 1 and _CJK_CHARACTER.match(unit)))

    @property
    def space_delimited(self) -> int:
        return len(self.units) - self.cjk_characters

    @property
    def word_equivalents(self) -> float:
        return self.space_delimited + self.cjk_characters / CJK_CHARACTERS_PER_WORD

    @property
    def mostly_cjk(self) -> bool:
        return self.cjk_characters * 2 > len(self.units)

    @property
    def token_estimate(self) -> int:
        return int(self.space_delimited * TOKENS_PER_WORD + self.cjk_characters * TOKENS_PER_CJK_CHARACTER)

    def words(self) -> list[str]:
        """The space-delimited words, without the CJK characters."""
        return [unit for unit in self.units if not (len(unit) == 1 and _CJK_CHARACTER.match(unit))]


def ngram_size(n: int, mostly_cjk: bool) -> int:
    """The unit n-gram that stands for Gopher's word n-gram on this page."""
    return math.ceil(n * CJK_CHARACTERS_PER_WORD) if mostly_cjk else n
