"""Language consistency of a chain of thought (DeepSeek-R1's reward against language mixing): the
share of the chain's words that are in the target language, with each CJK character counted as
one word (Chinese and Japanese are not written with spaces).

    language_units(text) -> list[Span(script, text, units)]        words / CJK characters, by script
    language_shares(text, languages=("en", "zh")) -> {language: units}
    consistency_score(text, target, languages=("en", "zh")) -> float | None
    chain_of_thought(completion) -> str                             the <think> part, else all of it
    question_language(question, languages) -> str | None
    chain_spans(completion, languages) -> list[(start, end, units, language)]   spans of the chain,
                                                                    at their offsets in `completion`

How a chain is read: its letters are cut into spans of one script (Latin-like words; Han; kana;
Hangul), each span running over whatever digits, symbols and spaces lie between its words, so
"3 加 4 等于 7" is one Han span of 3 units and "so the answer is 7" one Latin span of 4. Each span
is labelled with the corpus pipeline's language identifier (py3langid, beam_pipelines/transforms/
langid.py) restricted to the candidate `languages` (a few words are labelled reliably among two
languages, not among 97); a Han span is labelled by the identifier too (Chinese, or Japanese when
that is a candidate). The score is units labelled `target` / all units; a chain without any word
scores 0.0 (a reward must not pay for saying nothing). Chinese varieties the identifier tells
apart (yue, wuu) count as zh.

Cost: linear in the chain's length; one identifier call per span, cached per (span, candidates).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

DEFAULT_LANGUAGES = ("en", "zh")
_CHINESE_VARIETIES = {"yue": "zh", "wuu": "zh", "cmn": "zh", "zh-cn": "zh", "zh-tw": "zh"}

# One unit per CJK character; other letters make words.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_KANA = "\u3040-\u309f\u30a0-\u30ff"
_HANGUL = "\uac00-\ud7af"
_UNIT = re.compile(
    rf"(?P<han>[{_HAN}])|(?P<kana>[{_KANA}])|(?P<hangul>[{_HANGUL}]+)|(?P<word>[^\W\d_{_HAN}{_KANA}{_HANGUL}]+)"
)
_THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL)
_TAGS = re.compile(r"</?(?:think|answer)>")


@dataclass(frozen=True)
class Span:
    script: str  # han | kana | hangul | word
    text: str
    units: int


def chain_of_thought(completion: str) -> str:
    """The reasoning of a completion: inside <think> ... </think> (to the end when unclosed), else
    the whole completion."""
    match = _THINK.search(completion or "")
    return match.group(1) if match else (completion or "")


def _script_runs(cleaned: str) -> list[tuple[str, int, int, int]]:
    """(script, start, end, units) of each maximal run of one script in `cleaned`."""
    runs: list[tuple[str, int, int, int]] = []
    script, start, end, units = None, 0, 0, 0
    for match in _UNIT.finditer(cleaned):
        kind = match.lastgroup
        if kind != script:
            if script is not None:
                runs.append((script, start, end, units))
            script, start, units = kind, match.start(), 0
        end = match.end()
        units += 1
    if script is not None:
        runs.append((script, start, end, units))
    return runs


def language_units(text: str) -> list[Span]:
    """Maximal runs of one script, each with its text (separators between its units included)
    and its number of units (words, or CJK characters)."""
    cleaned = _TAGS.sub(" ", text)
    return [Span(script, cleaned[start:end], units) for script, start, end, units in _script_runs(cleaned)]


def chain_spans(completion: str, languages: Sequence[str] = DEFAULT_LANGUAGES) -> list[tuple[int, int, int, str]]:
    """(start, end, units, language) of each span of the completion's chain of thought (the spans
    and labels of language_units / span_language); `start` / `end` are offsets in `completion`
    itself, of the span's first unit and of the end of its last one, so a reward can land on the
    token that opens a span (where its language is chosen) or on the one that completes it."""
    completion = completion or ""
    match = _THINK.search(completion)
    offset, chain = (match.start(1), match.group(1)) if match else (0, completion)
    # Tags blanked with as many spaces (language_units puts one): the same runs, at the completion's
    # offsets; each labelled from language_units' text, so the labels are consistency_score's.
    runs = _script_runs(_TAGS.sub(lambda tag: " " * len(tag.group()), chain))
    candidates = tuple(languages)
    return [
        (offset + start, offset + end, span.units, span_language(span.text, candidates))
        for span, (_, start, end, _) in zip(language_units(chain), runs, strict=True)
    ]


@functools.lru_cache(maxsize=8)
def _identifier(languages: tuple[str, ...]):
    # The corpus pipeline's module brings Apache Beam with it (seconds to import): loaded only
    # when a language is asked for, not whenever the reward registry is.
    from beam_pipelines.transforms.langid import LanguageIdentifier  # noqa: PLC0415  Beam: seconds to import

    return LanguageIdentifier(languages=languages)


@functools.lru_cache(maxsize=65536)
def span_language(text: str, languages: tuple[str, ...] = DEFAULT_LANGUAGES) -> str:
    label, _ = _identifier(tuple(languages)).classify(text)
    return _CHINESE_VARIETIES.get(label, label)


def language_shares(text: str, languages: Sequence[str] = DEFAULT_LANGUAGES) -> dict[str, int]:
    """Units of `text` per identified language."""
    candidates = tuple(languages)
    shares: dict[str, int] = {}
    for span in language_units(text):
        language = span_language(span.text, candidates)
        shares[language] = shares.get(language, 0) + span.units
    return shares


def consistency_score(text: str, target: str, languages: Sequence[str] = DEFAULT_LANGUAGES) -> float:
    """Units of `text` in `target` / all its units (0.0 when it has none)."""
    shares = language_shares(text, languages)
    total = sum(shares.values())
    return shares.get(_CHINESE_VARIETIES.get(target, target), 0) / total if total else 0.0


def question_language(question: str, languages: Sequence[str] = DEFAULT_LANGUAGES) -> str | None:
    """The language holding most of the question's units (None when it has no word)."""
    shares = language_shares(question, languages)
    return max(shares, key=lambda language: shares[language]) if shares else None
