"""Extraction keeps every math markup as delimited TeX (pure core, no Beam)."""

import pytest

from beam_pipelines.transforms.extract import count_math_spans, extract_text, strip_math


def page(body: str, title: str = "t") -> str:
    return f"<!DOCTYPE html><html><head><title>{title}</title></head><body>{body}</body></html>"


def test_mathjax_script_inline_and_display():
    html = page(
        '<p>Let <span class="MathJax_Preview">x2</span><script type="math/tex">x^2</script> grow.</p>'
        '<p>Then <script type="math/tex; mode=display">\\int_0^1 f(x)\\,dx</script> holds.</p>'
    )
    text = extract_text(html).text
    assert "$x^2$" in text
    assert "$$\\int_0^1 f(x)\\,dx$$" in text
    # The preview (a rendered copy) must not duplicate the formula.
    assert "x2" not in text


def test_mathml_with_tex_annotation_uses_the_annotation():
    html = page(
        "<p>Energy <math "
        'display="block"><semantics><mrow><mi>E</mi><mo>=</mo><mi>m</mi><msup><mi>c</mi><mn>2</mn></msup></mrow>'
        '<annotation encoding="application/x-tex">E = mc^2</annotation></semantics></math> is famous.</p>'
    )
    text = extract_text(html).text
    assert "$$E = mc^2$$" in text
    assert "Emc2" not in text.replace(" ", "")


@pytest.mark.parametrize(
    "mathml, expected",
    [
        ("<mfrac><mi>a</mi><mi>b</mi></mfrac>", r"\frac{a}{b}"),
        ("<msup><mi>x</mi><mn>2</mn></msup>", "x^2"),
        ("<msub><mi>a</mi><mi>n</mi></msub>", "a_n"),
        ("<msubsup><mo>∫</mo><mn>0</mn><mn>1</mn></msubsup>", r"{\int}_0^1"),
        ("<msqrt><mi>π</mi></msqrt>", r"\sqrt{\pi}"),
        ("<mroot><mi>x</mi><mn>3</mn></mroot>", r"\sqrt[3]{x}"),
        (
            "<munderover><mo>∑</mo><mrow><mi>k</mi><mo>=</mo><mn>1</mn></mrow><mi>n</mi></munderover><mi>k</mi>",
            r"\sum_{k = 1}^n k",
        ),
        ("<mi>α</mi><mo>≤</mo><mi>β</mi>", r"\alpha \le \beta"),
        (
            "<mtable><mtr><mtd><mn>1</mn></mtd><mtd><mn>0</mn></mtd></mtr><mtr><mtd><mn>0</mn></mtd><mtd><mn>1</mn></mtd></mtr></mtable>",
            r"\begin{matrix} 1 & 0 \\ 0 & 1 \end{matrix}",
        ),
        ("<mi>sin</mi><mo>\u2061</mo><mi>x</mi>", r"\sin x"),
        ("<mover><mi>x</mi><mo>¯</mo></mover>", r"\bar{x}"),
    ],
)
def test_mathml_without_annotation_is_linearised(mathml, expected):
    text = extract_text(page(f"<p>We have <math>{mathml}</math> here.</p>")).text
    normalised = " ".join(text.split()).replace(" }", "}").replace("{ ", "{")
    assert f"${expected}$" in normalised, text


def test_katex_uses_annotation_and_drops_rendered_html():
    html = page(
        '<p>Index <span class="katex"><span class="katex-mathml"><math><semantics><mrow><mi>z</mi></mrow>'
        '<annotation encoding="application/x-tex">z_{i}</annotation></semantics></math></span>'
        '<span class="katex-html" aria-hidden="true"><span class="base">zRENDERED</span></span></span> done.</p>'
        '<p class="katex-display"><span class="katex"><span '
        'class="katex-mathml"><math><semantics><mrow><mi>y</mi></mrow>'
        '<annotation encoding="application/x-tex">\\sum y</annotation></semantics></math></span></span></p>'
    )
    text = extract_text(html).text
    assert "$z_{i}$" in text
    assert "$$\\sum y$$" in text
    assert "RENDERED" not in text


def test_sphinx_imgmath_alt_text_becomes_tex():
    html = page(
        '<p>Inline <img class="math" src="_images/math/a.png" alt="\\alpha + 1"/> value.</p>'
        '<div class="math"><p><img src="_images/math/b.png" alt="\\sum_{k=1}^n k" class="math"/></p></div>'
        '<p>A photo <img src="cat.jpg" alt="a cat"/> is not math.</p>'
    )
    text = extract_text(html).text
    assert "$\\alpha + 1$" in text
    assert "$$\\sum_{k=1}^n k$$" in text
    assert "a cat" not in text


def test_delimited_tex_already_in_text_survives():
    html = page("<p>Inline $a+b$, \\(c\\), display $$d^2$$ and \\[e\\].</p><p>It costs $5 and $10.</p>")
    result = extract_text(html)
    for piece in ("$a+b$", "\\(c\\)", "$$d^2$$", "\\[e\\]"):
        assert piece in result.text
    # Prices are not math spans.
    assert result.math_spans == 4


def test_mathjax_v3_container_without_mathml_is_dropped_not_duplicated():
    html = page(
        '<p>See <mjx-container class="MathJax" jax="CHTML"><mjx-math>xyz</mjx-math></mjx-container><script '
        'type="math/tex">q</script>.</p>'
    )
    text = extract_text(html).text
    assert "$q$" in text and "xyz" not in text


def test_strip_math_and_count():
    text = "We know $x^2$ and $$\\int f$$ and \\(y\\) but costs $5."
    assert count_math_spans(text) == 3
    assert strip_math(text).split().count("MATH") == 3


def test_title_and_boilerplate():
    html = page(
        "<nav><a href='/'>Home</a></nav><main><h1>Heading</h1><p>" + "Body sentence here. " * 30 + "</p></main>",
        title="My Title",
    )
    result = extract_text(html, main_content=True)
    assert result.title == "My Title"
    assert "Body sentence here." in result.text
