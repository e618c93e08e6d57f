"""Quality signals and filters in the spirit of Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020),
tuned not to drop math, for English and Chinese alike.

Every signal is computed on the *prose*: math spans are replaced by one placeholder word first,
so `\\frac{a}{b}` is one word, not a run of symbols, and LaTeX braces never look like code.
C4's curly-brace rule removes every LaTeX page; here it is off by default and, when switched on,
never applies to a page with math.

Scripts written without spaces (Chinese, Japanese kana): whitespace gives a Chinese paragraph one
"word", so Gopher's rules would drop all Chinese prose. Here each such character is a unit of its
own (full-width punctuation separates units, like spaces), and the rules read units as follows:
- counts (words, symbol ratio, alphabetic fraction) count a CJK character as 1/1.5 of a word: a
  Chinese word averages about 1.5 characters, so a 300-character page weighs as 200 English words;
- repetition n-grams are character n-grams on pages whose units are mostly CJK, of
  ceil(1.5 n) characters for Gopher's word n-grams (2 -> 3, 5 -> 8, 10 -> 15). Measured on the
  Chinese manual pages of Debian's manpages-zh against their English originals: with n characters
  107 of 306 translations fail the duplicate 5-gram rule (their originals: 46), with ceil(1.5 n) 23;
- the mean word length rule reads space-delimited words only and is not applied to pages whose
  units are mostly CJK (a character has no word length);
- stop words: Gopher's English list for `en`, frequent Chinese function characters for `zh`;
- C4 terminal punctuation and bullets include the full-width and CJK marks.
Pages with no CJK character get exactly the signals they had before.

Pure core: `quality_signals(text, language)` -> dict of floats (stored on the Document),
`quality_verdict(signals, math_spans, config)` -> Drop or None. Beam wrapper: `QualityDoFn`
(step `04_quality`). Cost: linear in document length (n-gram repetition is vectorised with numpy);
about 0.2 ms for a 2 KB page.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from beam_pipelines.accounting import Drop, FilterDoFn
from beam_pipelines.document import Document
from beam_pipelines.text_units import CJK_CHARACTERS_PER_WORD, TextUnits, ngram_size
from beam_pipelines.transforms.extract import strip_math

QUALITY_STEP = "04_quality"

GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# The most frequent Chinese function characters (particles, copula, prepositions, conjunctions):
# ordinary Chinese prose has several in every sentence, as English has Gopher's stop words.
CHINESE_STOP_CHARACTERS = frozenset("的了是在和有不这也就都与而及或为以之")
STOP_WORDS = {"en": GOPHER_STOP_WORDS, "": GOPHER_STOP_WORDS, "zh": CHINESE_STOP_CHARACTERS}
_BULLETS = ("•", "-", "*", "·", "‣", "▪", "◦", "–", "●", "○", "■", "□", "◆", "・")
_TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", ":", ";", "。", "！", "？", "：", "；", "…", "」", "』")
_ELLIPSES = ("...", "…", "⋯")
_LETTER = re.compile(r"[^\W\d_]")
_TEX_COMMAND = re.compile(r"\\[A-Za-z]+\s*[{\[]")


def quality_signals(text: str, language: str = "en") -> dict[str, float]:
    # Ratios (symbols, alphabetic words, word length, stop words) are read on the prose, where a
    # formula is one placeholder word; counts and repetition are read on the whole text, where
    # each formula keeps its own tokens (so `$s$ and $t$` and `$u$ and $v$` are not repeats).
    prose = strip_math(text)
    prose_units = TextUnits.of(prose)
    all_units = TextUnits.of(text)
    words = prose_units.words()
    weight = prose_units.word_equivalents
    alphabetic = sum(1 for unit in words if _LETTER.search(unit))
    # Every CJK character is a letter.
    alphabetic_weight = alphabetic + prose_units.cjk_characters / CJK_CHARACTERS_PER_WORD
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    n_lines = max(1, len(lines))
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    symbols = prose.count("#") + sum(prose.count(ellipsis) for ellipsis in _ELLIPSES)
    signals: dict[str, float] = {
        "gopher_word_count": float(all_units.word_equivalents),
        "gopher_mean_word_length": float(np.mean([len(w) for w in words])) if words else 0.0,
        "gopher_symbol_word_ratio": symbols / max(1.0, weight),
        "gopher_bullet_lines_fraction": sum(line.startswith(_BULLETS) for line in lines) / n_lines,
        "gopher_ellipsis_lines_fraction": sum(line.endswith(_ELLIPSES) for line in lines) / n_lines,
        "gopher_alpha_words_fraction": alphabetic_weight / max(1.0, weight),
        "c4_terminal_punctuation_lines_fraction": sum(line.endswith(_TERMINAL_PUNCTUATION) for line in lines) / n_lines,
        "c4_javascript_lines": float(sum("javascript" in line.lower() for line in lines)),
        "c4_lorem_ipsum": float("lorem ipsum" in prose.lower()),
        "c4_curly_brackets": float(prose.count("{")),
        "tex_commands": float(len(_TEX_COMMAND.findall(text))),
        "cjk_character_fraction": prose_units.cjk_characters / max(1, len(prose_units.units)),
    }
    stop_words = STOP_WORDS.get(language)
    if stop_words is not None:
        signals["gopher_stop_words"] = float(sum(1 for unit in prose_units.units if unit.lower() in stop_words))
    signals.update(_repetition_signals(lines, paragraphs, all_units.units, all_units.mostly_cjk))
    return signals


def _repetition_signals(
    lines: list[str], paragraphs: list[str], words: list[str], mostly_cjk: bool = False
) -> dict[str, float]:
    """`words`: the text's units; on a page written mostly in CJK (`mostly_cjk`) Gopher's word
    n-grams are read as character n-grams of `ngram_size(n, True)` units."""
    signals = {}
    for name, units in (("lines", lines), ("paragraphs", paragraphs)):
        counts = Counter(units)
        duplicated = [u for u in units if counts[u] > 1]
        # Gopher counts every occurrence after the first as duplicated.
        extra = sum(c - 1 for c in counts.values() if c > 1)
        signals[f"gopher_duplicate_{name}_fraction"] = extra / max(1, len(units))
        first_seen: set[str] = set()
        duplicate_chars = 0
        for unit in duplicated:
            if unit in first_seen:
                duplicate_chars += len(unit)
            else:
                first_seen.add(unit)
        signals[f"gopher_duplicate_{name}_char_fraction"] = duplicate_chars / max(1, sum(len(u) for u in units))
    # dtype=str: an empty page (no words) must give an empty string array, not a float one.
    word_array = np.array(words, dtype=str)
    _, word_ids = np.unique(np.char.lower(word_array), return_inverse=True)
    ids = word_ids.astype(np.uint64).ravel()
    lengths = np.char.str_len(word_array).astype(np.int64)
    total_chars = float(lengths.sum())
    length_prefix = np.concatenate([[0], np.cumsum(lengths)])
    for gopher_n in range(2, 11):
        name = (
            f"gopher_top_{gopher_n}gram_char_fraction"
            if gopher_n <= 4
            else f"gopher_duplicate_{gopher_n}gram_char_fraction"
        )
        n = ngram_size(gopher_n, mostly_cjk)
        if len(words) < n:
            signals[name] = 0.0
            continue
        hashes = _ngram_hashes(ids, n)
        _, first_index, inverse, counts = np.unique(hashes, return_index=True, return_inverse=True, return_counts=True)
        if gopher_n <= 4:
            # Characters of the most frequent n-gram (all its occurrences), over all characters;
            # among equally frequent n-grams the longest counts, so the result is order-free.
            top_count = int(counts.max())
            value = 0.0
            if top_count > 1:
                firsts = first_index[counts == top_count]
                longest = float((length_prefix[firsts + n] - length_prefix[firsts]).max())
                value = longest * top_count / total_chars
        else:
            # Characters covered by any n-gram that occurs more than once (overlaps counted once).
            starts = np.flatnonzero(counts[inverse] > 1)
            covered = np.zeros(len(words) + 1, dtype=np.int64)
            np.add.at(covered, starts, 1)
            np.add.at(covered, starts + n, -1)
            mask = np.cumsum(covered)[: len(words)] > 0
            value = float(lengths[mask].sum()) / total_chars
        signals[name] = min(1.0, value)
    return signals


def _ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    # Polynomial hash over uint64 (wrap-around is intended); collisions are ~2^-64 per pair.
    count = len(ids) - n + 1
    hashes = np.zeros(count, dtype=np.uint64)
    multiplier = np.uint64(1_000_003)
    with np.errstate(over="ignore"):
        for k in range(n):
            hashes = hashes * multiplier + ids[k : k + count] + np.uint64(1)
    return hashes


# (signal, QualityConfig limit, drop reason) of the maximum rules, by family.
_PROSE_LIMITS = (
    ("gopher_symbol_word_ratio", "max_symbol_word_ratio", "gopher_symbol_ratio"),
    ("gopher_bullet_lines_fraction", "max_bullet_lines_fraction", "gopher_bullet_lines"),
    ("gopher_ellipsis_lines_fraction", "max_ellipsis_lines_fraction", "gopher_ellipsis_lines"),
)
_REPETITION_LIMITS = (
    ("gopher_duplicate_lines_fraction", "max_duplicate_lines_fraction", "gopher_duplicate_lines"),
    ("gopher_duplicate_paragraphs_fraction", "max_duplicate_paragraphs_fraction", "gopher_duplicate_paragraphs"),
    ("gopher_duplicate_lines_char_fraction", "max_duplicate_lines_char_fraction", "gopher_duplicate_lines"),
    (
        "gopher_duplicate_paragraphs_char_fraction",
        "max_duplicate_paragraphs_char_fraction",
        "gopher_duplicate_paragraphs",
    ),
    ("gopher_top_2gram_char_fraction", "max_top_2gram_char_fraction", "gopher_top_ngram"),
    ("gopher_top_3gram_char_fraction", "max_top_3gram_char_fraction", "gopher_top_ngram"),
    ("gopher_top_4gram_char_fraction", "max_top_4gram_char_fraction", "gopher_top_ngram"),
    ("gopher_duplicate_5gram_char_fraction", "max_duplicate_5gram_char_fraction", "gopher_duplicate_ngram"),
    ("gopher_duplicate_10gram_char_fraction", "max_duplicate_10gram_char_fraction", "gopher_duplicate_ngram"),
)


def quality_verdict(signals: dict[str, float], math_spans: int, config) -> Drop | None:
    """The first failed rule, or None. `config` is a QualityConfig.

    Content rules (what is not text: too few or too many words, word lengths of a character soup,
    too few alphabetic words, placeholder text) always run; the prose rules and the repetition
    rules run when `config.prose_rules` / `config.repetition_rules` say so."""
    words = signals["gopher_word_count"]
    has_math = math_spans > 0 or signals.get("tex_commands", 0.0) > 0
    # A formula carries what a sentence would: short math pages (a definition, a theorem with
    # its proof sketch) are worth keeping where a 30-word prose page is not.
    if words < (config.min_words_with_math if has_math else config.min_words):
        return Drop("gopher_too_few_words", f"{words:.0f}")
    if words > config.max_words:
        return Drop("gopher_too_many_words", f"{words:.0f}")
    mean_length = signals["gopher_mean_word_length"]
    # A CJK character has no word length: the rule reads pages written mostly with spaces.
    mostly_cjk = signals.get("cjk_character_fraction", 0.0) > 0.5
    if not mostly_cjk and not config.min_mean_word_length <= mean_length <= config.max_mean_word_length:
        return Drop("gopher_mean_word_length", f"{mean_length:.2f}")
    limits = (_PROSE_LIMITS if config.prose_rules else ()) + (_REPETITION_LIMITS if config.repetition_rules else ())
    # Templated reference text (parameter lists, worked-example layouts) repeats phrases the way
    # spam does; on pages with math the repetition limits are relaxed by a configured factor.
    relaxation = config.math_repetition_relaxation if has_math else 1.0
    for signal, limit_name, reason in limits:
        limit = getattr(config, limit_name)
        if signal.startswith("gopher_duplicate") or signal.startswith("gopher_top"):
            limit = min(1.0, limit * relaxation)
        if signals.get(signal, 0.0) > limit:
            return Drop(reason, f"{signal}={signals[signal]:.3f}")
    if signals["gopher_alpha_words_fraction"] < config.min_alpha_words_fraction:
        return Drop("gopher_alpha_words", f"{signals['gopher_alpha_words_fraction']:.3f}")
    if config.prose_rules and "gopher_stop_words" in signals and signals["gopher_stop_words"] < config.min_stop_words:
        return Drop("gopher_stop_words", f"{signals['gopher_stop_words']:.0f}")
    if config.c4_lorem_ipsum and signals["c4_lorem_ipsum"] > 0:
        return Drop("c4_lorem_ipsum")
    if config.c4_curly_bracket and not has_math and signals["c4_curly_brackets"] > 0:
        return Drop("c4_curly_bracket")
    return None


class QualityDoFn(FilterDoFn):
    step = QUALITY_STEP

    def __init__(self, config):
        super().__init__()
        self.config = config

    def decide(self, document: Document) -> Document | Drop:
        signals = quality_signals(document.text, document.language)
        document.quality = signals
        if not self.config.enabled:
            return document
        verdict = quality_verdict(signals, document.math_spans, self.config)
        return verdict if verdict is not None else document
