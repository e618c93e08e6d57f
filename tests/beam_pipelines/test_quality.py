"""Quality signals (vectorised) agree with a readable reference, and each rule fires as intended."""

import inspect
import json
import random
import textwrap
import urllib.parse
from collections import Counter

import pytest

from beam_pipelines.transforms.config import QualityConfig
from beam_pipelines.transforms.extract import strip_math
from beam_pipelines.transforms.quality import quality_signals, quality_verdict

PROSE = (
    "The derivative of a function measures how the output of the function changes as its input "
    "changes. For a function that is differentiable at a point, the derivative is the slope of the "
    "tangent line at that point, and it is found as the limit of difference quotients. "
)


def varied_prose(words: int = 300) -> str:
    """Real, non-repetitive English: docstrings of standard-library functions."""
    text = " ".join(
        inspect.getdoc(f)
        for f in (json.dumps, json.loads, textwrap.wrap, textwrap.dedent, urllib.parse.urlsplit, inspect.signature)
    )
    return " ".join(text.split()[:words])


def reference_duplicate_ngram_char_fraction(words: list[str], n: int) -> float:
    """Gopher's definition, written plainly: characters of words inside any n-gram that occurs
    more than once, each word counted once, over all word characters."""
    grams = [tuple(w.lower() for w in words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            for j in range(i, i + n):
                covered[j] = True
    total = sum(len(w) for w in words)
    return sum(len(w) for w, c in zip(words, covered) if c) / total if total else 0.0


def reference_top_ngram_char_fraction(words: list[str], n: int) -> float:
    grams = [tuple(w.lower() for w in words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    top = max(counts.values())
    if top <= 1:
        return 0.0
    # Among the most frequent n-grams, the one with the most characters (first occurrence).
    longest = max(
        sum(len(w) for w in words[grams.index(gram) : grams.index(gram) + n]) for gram, c in counts.items() if c == top
    )
    return min(1.0, longest * top / sum(len(w) for w in words))


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_repetition_signals_match_reference(seed):
    rng = random.Random(seed)
    vocabulary = PROSE.split()[:12]
    words = [rng.choice(vocabulary) for _ in range(rng.randint(5, 400))]
    signals = quality_signals(" ".join(words))
    for n in range(5, 11):
        assert signals[f"gopher_duplicate_{n}gram_char_fraction"] == pytest.approx(
            reference_duplicate_ngram_char_fraction(words, n)
        )
    for n in (2, 3, 4):
        assert signals[f"gopher_top_{n}gram_char_fraction"] == pytest.approx(
            reference_top_ngram_char_fraction(words, n)
        )


def test_clean_prose_passes():
    signals = quality_signals(PROSE * 3 + "\n\n" + PROSE.replace("function", "mapping") * 2)
    assert (
        quality_verdict(
            signals, 0, QualityConfig(max_duplicate_10gram_char_fraction=1.0, max_duplicate_5gram_char_fraction=1.0)
        )
        is None
    )


def test_latex_heavy_math_is_not_dropped():
    math_text = (
        "Let $f(x) = \\frac{1}{1+e^{-x}}$ be the logistic function. Then the derivative satisfies "
        "$f'(x) = f(x)\\left(1 - f(x)\\right)$ for every real number $x$, and we also have\n\n"
        "$$\\int_{-\\infty}^{\\infty} f'(x)\\,dx = \\lim_{t \\to \\infty} \\left[f(t) - f(-t)\\right] = 1.$$\n\n"
        "To see this, write $u = e^{-x}$ and note that $\\frac{du}{dx} = -u$, so the chain rule gives the "
        "result. The same argument works for the hyperbolic tangent $\\tanh(x) = 2f(2x) - 1$, whose "
        "derivative is $1 - \\tanh^2(x)$ and which is the odd counterpart of the logistic curve."
    )
    signals = quality_signals(math_text)
    assert signals["gopher_symbol_word_ratio"] < 0.1
    config = QualityConfig(c4_curly_bracket=True)
    assert quality_verdict(signals, math_spans=9, config=config) is None


def test_curly_bracket_rule_applies_only_to_pages_without_math():
    code_page = varied_prose() + " config = {'a': 1} "
    signals = quality_signals(code_page)
    assert quality_verdict(signals, 0, QualityConfig(c4_curly_bracket=True)).reason == "c4_curly_bracket"
    assert quality_verdict(signals, 0, QualityConfig()) is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ("too short to be a page", "gopher_too_few_words"),
        ("# " * 30 + PROSE * 2, "gopher_symbol_ratio"),
        ("\n".join("- item number %d of the list" % i for i in range(60)), "gopher_bullet_lines"),
        ("\n".join(line + "..." for line in varied_prose(400).split(". ")), "gopher_ellipsis_lines"),
        ("\n".join(["Click here to subscribe to our newsletter now"] * 40 + [PROSE]), "gopher_duplicate_lines"),
        (
            " ".join(
                f"{i * 7919 % 10007} times {i * 104729 % 1009} is {i * 7919 % 10007 * (i * 104729 % 1009)}"
                for i in range(1, 60)
            )
            + " the of with and",
            "gopher_alpha_words",
        ),
        (
            " ".join(
                w
                for w in varied_prose(300).split()
                if w.lower() not in {"the", "be", "to", "of", "and", "that", "have", "with"}
            ),
            "gopher_stop_words",
        ),
        (varied_prose() + " Lorem ipsum dolor sit amet.", "c4_lorem_ipsum"),
        ("supercalifragilisticexpialidocious " * 80, "gopher_mean_word_length"),
    ],
)
def test_each_rule_fires(text, reason):
    verdict = quality_verdict(quality_signals(text), 0, QualityConfig())
    assert verdict is not None and verdict.reason == reason, verdict


def test_signals_are_computed_on_prose_not_math():
    text = "Consider $\\{x \\mid x > 0\\}$ and the set $\\{1, 2, 3\\}$ " + PROSE
    assert "{" not in strip_math(text)
    assert quality_signals(text)["c4_curly_brackets"] == 0


@pytest.mark.parametrize("text", ["", "   \n\n ", "— … ·", "$$ $$"])
def test_pages_without_words_get_signals_and_a_verdict(text):
    # A page with nothing word-like (empty after extraction, only punctuation or empty math) must
    # be dropped as too short, not crash the signal kernel.
    signals = quality_signals(text)
    assert signals["gopher_word_count"] == len(text.split())
    assert signals["gopher_top_2gram_char_fraction"] == 0.0
    verdict = quality_verdict(signals, 0, QualityConfig())
    assert verdict is not None and verdict.reason == "gopher_too_few_words"
