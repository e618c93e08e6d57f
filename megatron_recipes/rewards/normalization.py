"""String normalisation of answers and exact number parsing (pure, in-process, no sympy).

`normalize_answer` turns the many spellings of one LaTeX answer into one string: math delimiters,
`\\left`/`\\right`, spacing commands, `\\dfrac`/`\\tfrac`, `\\frac12`, `\\text{...}` units,
thousands separators, degrees, percentages, dollar signs, unicode math symbols.
`parse_number` reads a normalised answer as an exact `Fraction` (integers, decimals, `a/b`,
`\\frac{a}{b}`, mixed numbers `2\\frac{1}{4}`, `1.5\\times10^{3}`, `2e-3`) or returns None.

Cost: a fixed number of linear passes over the answer string; numbers are capped in length so
exact arithmetic on them stays cheap whatever the model writes.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

# Longer numbers are not read as numbers (they go to the symbolic path, which has a deadline):
# keeps Fraction arithmetic in the caller's process bounded.
MAX_NUMBER_DIGITS = 120
MAX_DECIMAL_EXPONENT = 400

_UNICODE = {
    "\u2212": "-",
    "\u2013": "-",
    "\u00b7": r"\cdot ",
    "\u00d7": r"\times ",
    "\u221a": r"\sqrt",
    "\u03c0": r"\pi ",
    "\u221e": r"\infty ",
    "\u00b1": r"\pm ",
    "\u2264": r"\le ",
    "\u2265": r"\ge ",
    "\u2260": r"\ne ",
    "\u00bd": "1/2",
    "\u2009": " ",
    "\u00a0": " ",
    "\u2032": "'",
}

_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad\b|\\displaystyle\b|\\textstyle\b|~")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|bigg|Bigg)(?![a-zA-Z])\s*\.?")
_FONT_WRAPPERS = re.compile(r"\\(?:mathrm|mathbf|mathit|boldsymbol|textbf|textit|mathsf|mathnormal|bf|rm)\s*\{")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ\b|\u00b0|\\degree\b|\s*degrees?\b", re.IGNORECASE)
_PERCENT = re.compile(r"\\%|%|\s*\\?percent\b", re.IGNORECASE)
_TEXT_COMMAND = re.compile(r"\\(?:text|textrm|mbox|hbox|mathrm|operatorname)\s*\{")
_FRAC_SHORT = re.compile(r"\\(frac|binom)\s*(\d|\\?[a-zA-Z])\s*(\d|\\?[a-zA-Z])")
_FRAC_HALF_SHORT = re.compile(r"\\(frac|binom)\s*(\{[^{}]*\})\s*(\d|[a-zA-Z])")
_FRAC_FIRST_SHORT = re.compile(r"\\(frac|binom)\s*(\d|[a-zA-Z])\s*(\{)")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_WORD = re.compile(r"[A-Za-z]{2,}")


def _strip_delimiters(text: str) -> str:
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for opening, closing in (("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]")):
            if text.startswith(opening) and text.endswith(closing) and len(text) >= len(opening) + len(closing):
                text = text[len(opening) : len(text) - len(closing)].strip()
                changed = True
    return text


def _unwrap_command(text: str, pattern: re.Pattern, keep: bool = True) -> str:
    """Replace `\\cmd{content}` by `content` (keep) for every match, braces balanced."""
    while True:
        match = pattern.search(text)
        if match is None:
            return text
        depth, index = 1, match.end()
        while index < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        inner = text[match.end() : index - 1] if depth == 0 else text[match.end() :]
        text = text[: match.start()] + (inner if keep else "") + text[index:]


def _drop_trailing_units(text: str) -> str:
    """`5\\text{ cm}`, `12 dollars`, `3 \\mbox{inches}^2` -> the number part; a text-only answer
    is kept whole."""
    match = re.match(
        r"^(.*?[\d}a-zA-Z)])\s*\\(?:text|mbox|textrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}(\s*\^\s*\{?\d\}?)?$", text
    )
    if match and re.search(r"\d", match.group(1)):
        return match.group(1).strip()
    match = re.match(r"^(-?[\d.,/]+|\\frac\{\d+\}\{\d+\})\s+[A-Za-z][A-Za-z .]*$", text)
    if match:
        return match.group(1)
    return text


def normalize_answer(answer: str) -> str:
    """One canonical spelling of a (LaTeX or plain) answer; case and letters are kept."""
    if answer is None:
        return ""
    text = str(answer)
    for char, replacement in _UNICODE.items():
        if char in text:
            text = text.replace(char, replacement)
    text = _strip_delimiters(text)
    text = text.replace(r"\$", "").replace("$", "")
    text = _SPACING.sub(" ", text)
    text = _LEFT_RIGHT.sub("", text)
    text = text.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac").replace(r"\cfrac", r"\frac")
    text = text.replace(r"\dbinom", r"\binom").replace(r"\tbinom", r"\binom")
    text = text.replace(r"\lvert", "|").replace(r"\rvert", "|").replace(r"\vert", "|")
    text = text.replace(r"\le ", r"\leq ").replace(r"\ge ", r"\geq ").replace(r"\ne ", r"\neq ")
    text = text.replace("{,}", "").replace(r"\{,\}", "")
    text = _DEGREES.sub("", text)
    text = _PERCENT.sub("", text)
    text = _drop_trailing_units(text.strip())
    text = _unwrap_command(text, _FONT_WRAPPERS)
    text = _unwrap_command(text, _TEXT_COMMAND)
    for _ in range(2):
        text = _FRAC_SHORT.sub(r"\\\1{\2}{\3}", text)
        text = _FRAC_HALF_SHORT.sub(r"\\\1\2{\3}", text)
        text = _FRAC_FIRST_SHORT.sub(r"\\\1{\2}\3", text)
    text = _SQRT_SHORT.sub(r"\\sqrt{\1}", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = text.rstrip(".").strip()
    # Remove spaces except where they separate a command from a following letter (\pi r).
    text = re.sub(r"(?<![a-zA-Z\\])\s+|\s+(?![a-zA-Z])", "", text)
    text = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", r"\1 ", text)
    # Thousands separators, only when the whole answer is one grouped number (1,000 vs (1,2)).
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    # "x \in ..." and "x =" prefixes are handled by the structure layer; a lone trailing "=" is noise.
    return text


def normalize_text(answer: str) -> str:
    """Canonical form of a word answer ("Yes", "No integer solutions"): lower case, no markup,
    no punctuation, no articles."""
    text = normalize_answer(answer).lower()
    text = re.sub(r"\\[a-z]+", " ", text)
    text = re.sub(r"[^a-z0-9\-+/ ]", " ", text)
    words = [word for word in text.split() if word not in ("a", "an", "the")]
    return " ".join(words)


def is_text_answer(normalized: str) -> bool:
    """True for answers made of words rather than math: two or more words of 2+ letters that are
    not LaTeX commands (e.g. "No integer solutions", "Yes", "Monotonically increasing")."""
    stripped = re.sub(r"\\[a-zA-Z]+", " ", normalized)
    words = _WORD.findall(stripped)
    math_names = {"sqrt", "sin", "cos", "tan", "log", "ln", "exp", "pi", "floor", "ceil", "mod", "cot", "sec", "csc"}
    real_words = [w for w in words if w.lower() not in math_names]
    if normalized.lower() in ("yes", "no", "true", "false", "none"):
        return True
    return len(real_words) >= 2 or any(len(w) >= 4 for w in real_words)


_DECIMAL = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?")
_SCIENTIFIC = re.compile(r"(.+?)(?:\\times|\\cdot|\*|x)10\^\{?([+-]?\d{1,4})\}?")
_E_NOTATION = re.compile(r"(.+?)[eE]([+-]?\d{1,4})")
_FRACTION_LATEX = re.compile(r"([+-]?)\\frac\{([^{}]+)\}\{([^{}]+)\}")
_MIXED = re.compile(r"([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")


def _parse_decimal(text: str) -> Fraction | None:
    match = _DECIMAL.fullmatch(text)
    if match is None:
        return None
    sign, whole, fractional = match.groups()
    if not whole and not fractional:
        return None
    if len(whole) + len(fractional or "") > MAX_NUMBER_DIGITS:
        return None
    value = Fraction(int(whole or "0"))
    if fractional:
        value += Fraction(int(fractional), 10 ** len(fractional))
    return -value if sign == "-" else value


def parse_number(normalized: str) -> Fraction | None:
    """The exact value of a normalised answer that is a plain number, else None.

    Reads: `-12`, `3.50`, `.5`, `3/4`, `-\\frac{3}{4}`, `\\frac{-3}{4}`, `\\frac{0.5}{2}`, mixed
    numbers `2\\frac{1}{4}` (= 9/4, as MATH answers mean them), `1.5\\times10^{3}`, `2e-3`.
    Anything with letters or operators beyond these returns None (the symbolic path decides).
    """
    text = normalized.replace(" ", "")
    if not text or len(text) > 3 * MAX_NUMBER_DIGITS:
        return None
    value = _parse_decimal(text)
    if value is not None:
        return value
    match = _MIXED.fullmatch(text)
    if match:
        sign, whole, numerator, denominator = match.groups()
        if int(denominator) == 0 or len(whole + numerator + denominator) > MAX_NUMBER_DIGITS:
            return None
        value = int(whole) + Fraction(int(numerator), int(denominator))
        return -value if sign == "-" else value
    match = _FRACTION_LATEX.fullmatch(text)
    if match:
        sign, numerator, denominator = match.groups()
        top, bottom = _parse_decimal(numerator), _parse_decimal(denominator)
        if top is None or bottom is None or bottom == 0:
            return None
        return -(top / bottom) if sign == "-" else top / bottom
    if text.count("/") == 1:
        numerator, denominator = text.split("/")
        if numerator.startswith("(") and numerator.endswith(")"):
            numerator = numerator[1:-1]
        if denominator.startswith("(") and denominator.endswith(")"):
            denominator = denominator[1:-1]
        top, bottom = _parse_decimal(numerator), _parse_decimal(denominator)
        if top is None or bottom is None or bottom == 0:
            return None
        return top / bottom
    for pattern in (_SCIENTIFIC, _E_NOTATION):
        match = pattern.fullmatch(text)
        if match:
            mantissa = _parse_decimal(match.group(1))
            exponent = int(match.group(2))
            if mantissa is None or abs(exponent) > MAX_DECIMAL_EXPONENT:
                return None
            return mantissa * Fraction(10) ** exponent
    return None


def decimal_places(normalized: str) -> int | None:
    """Digits after the point when the answer is written as a plain decimal (`0.333` -> 3)."""
    match = re.fullmatch(r"[+-]?\d*\.(\d+)", normalized.replace(" ", ""))
    return len(match.group(1)) if match else None


def significant_digits(normalized: str) -> int:
    digits = re.sub(r"[^0-9]", "", normalized.split("e")[0].split("E")[0])
    return len(digits.lstrip("0"))


def is_terminating(value: Fraction) -> bool:
    """True when value has a finite decimal expansion (its denominator is 2^a 5^b)."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


def numbers_match(
    predicted: Fraction,
    reference: Fraction,
    predicted_text: str,
    relative_tolerance: float,
    approximate_decimals: bool,
    min_significant_digits: int,
) -> bool:
    """Exact equality; or a float-noise relative tolerance; or, for a reference without a finite
    decimal expansion (1/3), a decimal prediction that is the reference rounded or truncated to
    the digits it shows, with at least min_significant_digits of them (0.333 for 1/3, not 0.3)."""
    if predicted == reference:
        return True
    scale = max(abs(predicted), abs(reference))
    if abs(predicted - reference) <= Fraction(relative_tolerance) * scale:
        return True
    if approximate_decimals and not is_terminating(reference):
        places = decimal_places(predicted_text)
        if places is not None and significant_digits(predicted_text) >= min_significant_digits:
            return shown_digits_match(predicted, reference, places)
    return False


def shown_digits_match(predicted: Fraction, reference: Fraction, places: int) -> bool:
    """predicted (a decimal with `places` digits) is reference rounded half-up or truncated."""
    scaled_prediction = predicted * 10**places
    if scaled_prediction.denominator != 1:
        return False
    scaled_reference = reference * 10**places
    rounded = math.floor(scaled_reference + Fraction(1, 2))
    truncated = math.trunc(scaled_reference)
    return scaled_prediction.numerator in (rounded, truncated)
