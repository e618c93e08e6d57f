"""Language identification with the model shipped inside py3langid (no download)."""

import inspect
import json

import pytest

from beam_pipelines.transforms.langid import LanguageIdentifier, prose_for_language


@pytest.fixture(scope="module")
def identifier():
    return LanguageIdentifier()


@pytest.mark.parametrize(
    "text, label",
    [
        (inspect.getdoc(json.dumps), "en"),
        (
            "Die Ableitung einer Funktion beschreibt, wie sich der Funktionswert ändert, wenn sich das Argument "
            "ändert.",
            "de",
        ),
        ("函数的导数描述了当自变量发生变化时函数值如何变化。这是微积分中最重要的概念之一。", "zh"),
        ("La dérivée d'une fonction mesure la variation de la fonction lorsque la variable change.", "fr"),
    ],
)
def test_labels_real_text(identifier, text, label):
    found, score = identifier.identify(text)
    assert found == label
    assert 0.5 < score <= 1.0


def test_math_and_numeric_lines_do_not_hide_the_language(identifier):
    text = (
        "Computes the cosine of $x$, $\\cos(x)$, for real and complex arguments.\n"
        ">>> cos(pi/3)\n0.5\n>>> cos(100000001)\n-0.9802850113244713604\n"
        "$$\\cos(x) = \\sum_{k=0}^{\\infty} \\frac{(-1)^k x^{2k}}{(2k)!}$$\n"
        "The evaluation is accurate to the working precision for all arguments."
    )
    assert "0.5" not in prose_for_language(text).split()
    assert identifier.identify(text)[0] == "en"


def test_empty_prose_is_undetermined(identifier):
    assert identifier.identify("$$x^2$$\n12345 678") == ("und", 0.0)
