"""Chinese pages through the language and quality steps: every signal reads CJK characters as units.

Real text: tests/assets/chinese/tcl_expr_zh_CN.html is the Tcl expr(3tcl) manual page as translated
by the CMPP project (Debian's manpages-zh, GFDL-1.2+): operators, math functions and their domains.
tests/assets/chinese/quadratic_zh.html is our own short math page (Pythagoras, the quadratic formula)
typeset as Chinese sites usually are, without spaces around numbers and formulas. With whitespace
words, the latter is "6 words" (gopher_too_few_words) and the real page's sections are dropped for
too few words or a mean word length of 12.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest

from beam_pipelines.config import register_configs
from beam_pipelines.io.parquet import iter_documents
from beam_pipelines.io.warc import write_html_warc
from beam_pipelines.stages.prepare import run_prepare
from beam_pipelines.text_units import CJK_CHARACTERS_PER_WORD, TextUnits
from beam_pipelines.transforms.config import QualityConfig
from beam_pipelines.transforms.extract import extract_text
from beam_pipelines.transforms.langid import LanguageIdentifier
from beam_pipelines.transforms.quality import quality_signals, quality_verdict
from stack_common.cli import compose_config
from tests.beam_pipelines.test_quality import (
    reference_duplicate_ngram_char_fraction,
    reference_top_ngram_char_fraction,
    varied_prose,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "chinese"
REAL_PAGE = ASSETS / "tcl_expr_zh_CN.html"
OWN_PAGE = ASSETS / "quadratic_zh.html"
PRESETS = ("math_tuned", "paper", "gopher")


def quality_preset(name: str) -> QualityConfig:
    return compose_config("prepare", [f"quality={name}"], register_configs).quality


def real_page_sections() -> dict[str, str]:
    """Each section of the real manual page as a page of its own (a title and its paragraphs)."""
    body = REAL_PAGE.read_text(encoding="utf-8").split("<body>", 1)[1]
    sections = {}
    for part in re.split(r"(?=<h2>)", body):
        title = re.match(r"<h2>(.*?)</h2>", part)
        if title:
            sections[title.group(1)] = f"<html><head><meta charset='utf-8'></head><body>{part}"
    return sections


@pytest.fixture(scope="module")
def identifier():
    return LanguageIdentifier()


def analyse(html: str, identifier) -> tuple[str, int, dict[str, float]]:
    extracted = extract_text(html, "https://example.cn/page.html", main_content=True)
    language, score = identifier.identify(extracted.text)
    assert (language, score > 0.9) == ("zh", True), (language, score)
    return extracted.text, extracted.math_spans, quality_signals(extracted.text, language)


PAGES = {
    "own quadratic page": OWN_PAGE.read_text(encoding="utf-8"),
    "real page, whole": REAL_PAGE.read_text(encoding="utf-8"),
    **{f"real page, {title}": html for title, html in real_page_sections().items() if "OPERATORS" not in title},
}


@pytest.mark.parametrize("page", sorted(PAGES))
@pytest.mark.parametrize("preset", PRESETS)
def test_real_chinese_math_prose_is_recognised_and_kept_by_every_preset(page, preset, identifier):
    text, math_spans, signals = analyse(PAGES[page], identifier)
    assert quality_verdict(signals, math_spans, quality_preset(preset)) is None, signals


def test_counts_weigh_a_cjk_character_as_two_thirds_of_a_word(identifier):
    text, _, signals = analyse(OWN_PAGE.read_text(encoding="utf-8"), identifier)
    han = len(re.findall(r"[\u4e00-\u9fff]", text))
    units = TextUnits.of(text)
    assert units.cjk_characters == han > 150
    assert signals["gopher_word_count"] == pytest.approx(units.space_delimited + han / CJK_CHARACTERS_PER_WORD)
    assert signals["cjk_character_fraction"] > 0.8
    # The mean word length reads the space-delimited words only (formulas, numbers, Latin words).
    words = TextUnits.of(re.sub(r"\\\(.+?\\\)", " MATH ", text)).words()
    assert signals["gopher_mean_word_length"] == pytest.approx(sum(map(len, words)) / len(words))
    mixed = TextUnits.of("Let x be 实数，且 x 大于零。")
    assert mixed.units == ["Let", "x", "be", "实", "数", "且", "x", "大", "于", "零"]
    assert mixed.word_equivalents == pytest.approx(4 + 6 / 1.5)


def test_pages_without_cjk_are_cut_as_before():
    prose = varied_prose(300) + "\n\n" + "$x^2$ and \\(y\\) — a–b, e.g. ... «quoted»"
    assert TextUnits.of(prose).units == prose.split()
    assert TextUnits.of(prose).cjk_characters == 0


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_character_ngrams_match_the_reference(seed):
    """On a page written mostly in CJK, Gopher's word n-gram is a character n-gram of ceil(1.5 n)."""
    rng = random.Random(seed)
    vocabulary = list("的一是在不了有和人这中大为上个我以要他时来用们生到作地于出就分对成会可主发")
    characters = [rng.choice(vocabulary) for _ in range(rng.randint(20, 500))]
    signals = quality_signals("".join(characters), "zh")
    for n in range(5, 11):
        expected = reference_duplicate_ngram_char_fraction(characters, math.ceil(1.5 * n))
        assert signals[f"gopher_duplicate_{n}gram_char_fraction"] == pytest.approx(expected)
    for n in (2, 3, 4):
        expected = reference_top_ngram_char_fraction(characters, math.ceil(1.5 * n))
        assert signals[f"gopher_top_{n}gram_char_fraction"] == pytest.approx(expected)


def test_repetition_rules_fire_on_chinese_spam_written_without_spaces(identifier):
    paragraph = re.sub(r"<[^>]+>", "", REAL_PAGE.read_text(encoding="utf-8").split("<h2>", 2)[2])[:400]
    spam = "点击这里免费下载最新电影高清完整版，" * 40
    signals = quality_signals(paragraph + "\n\n" + spam, "zh")
    verdict = quality_verdict(signals, 0, QualityConfig())
    assert verdict is not None and verdict.reason in ("gopher_top_ngram", "gopher_duplicate_ngram"), verdict
    # The paper preset leaves repetition to the classifier.
    assert quality_verdict(signals, 0, quality_preset("paper")) is None


def test_stop_words_are_read_in_the_page_language(identifier):
    text, math_spans, signals = analyse(REAL_PAGE.read_text(encoding="utf-8"), identifier)
    assert signals["gopher_stop_words"] > 100  # 的, 是, 在, 和 ... of real Chinese prose
    # A list of names and numbers in Chinese characters has none: dropped, as an English page
    # without "the", "and", "of" is.
    listing = "\n".join(
        f"{name}{index}号：北京市海淀区中关村大街{index}号"
        for index, name in enumerate("甲乙丙丁戊己庚辛")
        for _ in range(3)
    )
    listing_signals = quality_signals(listing, "zh")
    assert listing_signals["gopher_stop_words"] == 0
    config = QualityConfig(repetition_rules=False)
    assert quality_verdict(listing_signals, 0, config).reason == "gopher_stop_words"
    assert "gopher_stop_words" not in quality_signals(text, "ja")  # no list for Japanese


def test_full_width_punctuation_ends_chinese_lines_and_bullets_start_them():
    lines = ["第一步：设未知数为", "第二步：列出方程；", "第三步：解方程。", "● 检验结果", "「答」"]
    signals = quality_signals("\n".join(lines), "zh")
    assert signals["c4_terminal_punctuation_lines_fraction"] == pytest.approx(3 / 5)  # ；。」
    assert signals["gopher_bullet_lines_fraction"] == pytest.approx(1 / 5)
    assert quality_signals("结论如下⋯⋯\n第二行……", "zh")["gopher_ellipsis_lines_fraction"] == 1.0


@pytest.mark.integration
def test_chinese_pages_reach_the_pool_through_prepare(tmp_path):
    """The real pipeline: the Chinese pages are labelled zh, kept, and carry word counts in characters."""
    pages = [
        ("https://example.cn/quadratic.html", OWN_PAGE.read_bytes(), "text/html; charset=utf-8"),
        ("https://example.cn/tcl/expr.html", REAL_PAGE.read_bytes(), "text/html; charset=utf-8"),
    ]
    warc = tmp_path / "zh.warc.gz"
    write_html_warc(str(warc), pages)
    config = compose_config(
        "prepare",
        [f"corpus.work_dir={tmp_path}", f"corpus.warc_inputs=[{warc}]", "beam=direct_single"],
        register_configs,
    )
    summary = run_prepare(config)
    assert summary["quality_preset"] == "math_tuned"
    assert summary["steps"]["04_quality"]["dropped"] == {}
    documents = {d.url: d for d in iter_documents(config.output_dir)}
    assert set(documents) == {url for url, _, _ in pages}
    for document in documents.values():
        assert document.language == "zh"
        han = len(re.findall(r"[\u4e00-\u9fff]", document.text))
        assert document.quality["gopher_word_count"] >= han / CJK_CHARACTERS_PER_WORD
        assert document.token_estimate >= han
