"""String normalisation of answers and exact number parsing (pure, in-process, no sympy).

`normalize_answer` turns the many spellings of one LaTeX answer into one string: a full solution
is cut down to its last `\\boxed{}` (or its GSM8K `#### N` line), then math delimiters,
`\\left`/`\\right`, spacing commands, `\\dfrac`/`\\tfrac`, `\\frac12`, `\\text{...}` units,
thousands separators, degrees, dollar signs, unicode math symbols, `<=`/`\\le`/`\\leqslant`,
`\\varnothing`, `\\mathbb{R}` and mixed numbers written `2 1/4` get one spelling each. A percent
sign is kept, spelled `\\%` at the end: whether `50\\%` stands for 50 or for 0.5 is decided where
answers are compared (`reading_pairs`: both readings count, as MATH and GSM8K graders accept both).

`parse_number` reads a normalised answer as an exact `Fraction` (integers, decimals, repeating
decimals `0.\\overline{3}`, `a/b`, `\\frac{a}{b}`, mixed numbers `2\\frac{1}{4}`,
`1.5\\times10^{3}`, `2e-3`) or returns None. `numbers_match` is the in-process numeric rule; it gives
the same verdict whichever side is the prediction.

Cost: a fixed number of linear passes over the answer string. Whitespace runs are collapsed first
so that no pattern backtracks over a long run, and `\\text{...}` unwrapping is one stack pass, so
an adversarial answer of n characters costs O(n). Numbers are capped in length so exact arithmetic
on them stays cheap whatever the model writes.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from megatron_recipes.rewards.extraction import answer_region, extract_boxed, extract_gsm8k

# Longer numbers are not read as numbers (they go to the symbolic path, which has a deadline):
# keeps Fraction arithmetic in the caller's process bounded.
MAX_NUMBER_DIGITS = 120
MAX_DECIMAL_EXPONENT = 400
# Answers nested deeper than this (brackets and braces) are not normalised further: the checker
# refuses them before any recursive step sees them.
MAX_NESTING_DEPTH = 40

# A decimal with this many significant digits is a printed float (doubles print 15-17 digits).
FLOAT_NOISE_MIN_DIGITS = 15

PERCENT = r"\%"

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
    "\u2205": r"\emptyset ",
    "\u211d": r"\mathbb{R}",
    "\u222a": r"\cup ",
    "\u00bd": "1/2",
    "\u2009": " ",
    "\u00a0": " ",
    "\u2032": "'",
}

_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad\b|\\displaystyle\b|\\textstyle\b|~")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|bigg|Bigg)(?![a-zA-Z])\s*\.?")
_FONT_WRAPPERS = re.compile(r"\\(?:mathrm|mathbf|mathit|boldsymbol|textbf|textit|mathsf|mathnormal|bf|rm)\s*\{")
_DEGREES = re.compile(r"\^\s?\{?\s?\\circ\s?\}?|\\circ\b|\u00b0|\\degree\b|\s?degrees?\b", re.IGNORECASE)
_PERCENT = re.compile(r"\\%|%|\s?\\?percent\b", re.IGNORECASE)
_TEXT_COMMAND = re.compile(r"\\(?:text|textrm|textnormal|mbox|hbox|mathrm|operatorname)\s?\{")
_FRAC_SHORT = re.compile(r"\\(frac|binom)\s*(\d|\\?[a-zA-Z])\s*(\d|\\?[a-zA-Z])")
_FRAC_HALF_SHORT = re.compile(r"\\(frac|binom)\s*(\{[^{}]*\})\s*(\d|[a-zA-Z])")
_FRAC_FIRST_SHORT = re.compile(r"\\(frac|binom)\s*(\d|[a-zA-Z])\s*(\{)")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_WORD = re.compile(r"[A-Za-z]{2,}")
_RELATIONS = (
    (re.compile(r"<="), r"\\leq "),
    (re.compile(r">="), r"\\geq "),
    (re.compile(r"!="), r"\\neq "),
    (re.compile(r"\\(?:leqslant|leq|le)(?![a-zA-Z])"), r"\\leq "),
    (re.compile(r"\\(?:geqslant|geq|ge)(?![a-zA-Z])"), r"\\geq "),
    (re.compile(r"\\(?:neq|ne)(?![a-zA-Z])"), r"\\neq "),
    (re.compile(r"\\lt(?![a-zA-Z])"), "<"),
    (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
)
_TRIG = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![a-zA-Z])")
_DEGREE_ARGUMENT = re.compile(r"(\d+(?:\.\d+)?)\s?(?:\^\s?\{?\s?\\circ\s?\}?|\u00b0)")
_ALL_REALS = re.compile(r"\\mathbb\s?\{?R\}?|^(?:the set of )?all real(?: number)?s$", re.IGNORECASE)
_EMPTY_SET = re.compile(r"\\(?:emptyset|varnothing)(?![a-zA-Z])|\\\{\s*\\\}")
# A base-b numeral: 1011_2, 2A_{16}.
# Possessive and anchored after a non-digit, so a long digit run is scanned once, not once per digit.
_BASE_BRACES = re.compile(r"(?<![0-9A-Za-z])([0-9A-Z]++)_\{(\d{1,2})\}")
BASE_NUMBER = re.compile(r"([0-9A-Za-z]+)_(\d{1,2})")
# A plain-text unit after a number ("12 apples", "5 cm"); short words only from this list, so
# that "2 x" or "2 pi" keep their letters.
_UNIT_ABBREVIATIONS = frozenset("cm mm km kg mg ml ft hr hrs lb lbs oz mi yd yds mph kph sq cu in m2 km2 cm2".split())
# Words after a number that are math, not a unit (a function name alone is no math: "3 sec" is 3 s).
_MATH_WORDS = frozenset("pi infty and or mod".split())
# Contents of `\text{...}` that are math letters, not units: `2\mathrm{e}`, `3\text{i}`.
_NOT_UNITS = frozenset({"e", "i"})


def nesting_depth(text: str) -> int:
    """The deepest bracket/brace nesting in text (closers past zero are ignored). One pass."""
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif char in ")]}" and depth:
            depth -= 1
    return deepest


def _strip_delimiters(text: str) -> str:
    text = text.strip()
    for _ in range(4):  # $\(x\)$ and the like; more layers than that are not an answer
        for opening, closing in (("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]")):
            if text.startswith(opening) and text.endswith(closing) and len(text) >= len(opening) + len(closing):
                text = text[len(opening) : len(text) - len(closing)].strip()
                break
        else:
            return text
    return text


def _unwrap_command(text: str, pattern: re.Pattern) -> str:
    """Replace every `\\cmd{content}` matched by pattern with its content (braces balanced), in one
    pass: a stack remembers which open braces belong to an unwrapped command."""
    if pattern.search(text) is None:
        return text
    out: list[str] = []
    stack: list[bool] = []  # True: this brace was opened by an unwrapped command
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            match = pattern.match(text, index)
            if match is not None:
                stack.append(True)
                index = match.end()
                continue
            out.append(text[index : index + 2])  # an escaped character or the start of a command
            index += 2
            continue
        if char == "{":
            stack.append(False)
            out.append(char)
        elif char == "}":
            if not (stack and stack.pop()):
                out.append(char)
        else:
            out.append(char)
        index += 1
    return "".join(out)


def _is_unit_word(word: str, in_text_command: bool) -> bool:
    word = word.strip().lower()
    if not word or word in _NOT_UNITS:
        return False
    if in_text_command:
        return True
    first = re.split(r"[ ./^]", word, maxsplit=1)[0]
    if first in _MATH_WORDS:
        return False
    return len(first) >= 3 or first in _UNIT_ABBREVIATIONS


_TEXT_UNIT = re.compile(
    r"^(.*?[\d}a-zA-Z)])\s?\\(?:text|mbox|textrm|mathrm)\s?\{\s?([A-Za-z][A-Za-z .,/^\d]*)\}(\s?\^\s?\{?\d\}?)?$"
)
_PLAIN_UNIT = re.compile(r"^(-?[\d.,/]+|\\frac\{\d+\}\{\d+\})\s([A-Za-z][A-Za-z ./^\d]*)$")


def _drop_trailing_units(text: str) -> str:
    """`5\\text{ cm}`, `12 dollars`, `3 \\mbox{inches}^2` -> the number part; a text-only answer
    is kept whole."""
    match = _TEXT_UNIT.match(text)
    if match and re.search(r"\d", match.group(1)) and _is_unit_word(match.group(2), True):
        return match.group(1).strip()
    match = _PLAIN_UNIT.match(text)
    if match and _is_unit_word(match.group(2), False):
        return match.group(1)
    return text


def _final_answer_of_solution(text: str) -> str:
    """A full solution (or a completion) -> its final answer; a bare answer is returned as is."""
    if "</think>" in text or "<answer>" in text:
        text = answer_region(text)
    if "\\boxed" in text or "\\fbox" in text:
        for _ in range(3):  # \boxed{\boxed{5}}: unwrap a few layers, no more
            boxed = extract_boxed(text, "last")
            if boxed is None:
                return ""  # a box that never closes: the solution was cut off before its answer
            text = boxed
            if "\\boxed" not in text and "\\fbox" not in text:
                break
        return text
    if "####" in text:
        return extract_gsm8k(text) or ""
    return text


def normalize_answer(answer: str) -> str:
    """One canonical spelling of a (LaTeX or plain) answer; case and letters are kept."""
    if answer is None:
        return ""
    text = str(answer)
    for char, replacement in _UNICODE.items():
        if char in text:
            text = text.replace(char, replacement)
    text = _final_answer_of_solution(text)
    text = re.sub(r"\s+", " ", text).strip()
    if nesting_depth(text) > MAX_NESTING_DEPTH:
        return text  # refused by the checker as it is; nothing below needs to see it
    text = _strip_delimiters(text)
    text = text.replace(r"\$", "").replace("$", "")
    text = _SPACING.sub(" ", text)
    text = _LEFT_RIGHT.sub("", text)
    text = text.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac").replace(r"\cfrac", r"\frac")
    text = text.replace(r"\dbinom", r"\binom").replace(r"\tbinom", r"\binom")
    text = text.replace(r"\lvert", "|").replace(r"\rvert", "|").replace(r"\vert", "|")
    text = text.replace(r"\langle", "(").replace(r"\rangle", ")")  # a vector <1, 2> is the tuple (1, 2)
    for pattern, replacement in _RELATIONS:
        text = pattern.sub(replacement, text)
    text = text.replace("{,}", "").replace(r"\{,\}", "")
    if _TRIG.search(text):  # \cos 60^\circ: the degrees are the argument's unit, in radians for sympy
        text = _DEGREE_ARGUMENT.sub(r"(\1\\pi/180)", text)
    text = _DEGREES.sub("", text)
    text = _PERCENT.sub(lambda _: PERCENT, text)
    text = re.sub(r"\s+", " ", text).strip()
    text = _drop_trailing_units(text)
    text = _unwrap_command(text, _FONT_WRAPPERS)
    text = _unwrap_command(text, _TEXT_COMMAND)
    text = _drop_trailing_units(re.sub(r"\s+", " ", text).strip())  # units that were inside \text{5 cm}
    text = _ALL_REALS.sub(r"(-\\infty,\\infty)", text)
    text = _EMPTY_SET.sub(r"\\{\\}", text)
    if "_{" in text:  # 1011_{2} -> 1011_2 (digits only: x_{10} is a subscripted name)
        text = _BASE_BRACES.sub(lambda m: f"{m[1]}_{m[2]}" if re.search(r"\d", m[1]) else m[0], text)
    for _ in range(2):
        text = _FRAC_SHORT.sub(r"\\\1{\2}{\3}", text)
        text = _FRAC_HALF_SHORT.sub(r"\\\1\2{\3}", text)
        text = _FRAC_FIRST_SHORT.sub(r"\\\1{\2}\3", text)
    text = _SQRT_SHORT.sub(r"\\sqrt{\1}", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = text.rstrip(".").strip()
    # "2 1/4" is a mixed number, not 21/4 (the space is about to go).
    text = re.sub(r"^(-?\d+) (\d+) ?/ ?(\d+)$", r"\1\\frac{\2}{\3}", text)
    # Remove spaces except where they separate a command from a following letter (\pi r).
    text = re.sub(r"(?<![a-zA-Z\\])\s+|\s+(?![a-zA-Z])", "", text)
    text = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", r"\1 ", text)
    text = re.sub(r"(^|[,(\[])\+\\infty", r"\1\\infty", text)
    # Thousands separators, only when the whole answer is one grouped number (1,000 vs (1,2)).
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?(\\%)?", text):
        text = text.replace(",", "")
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


# ---------------------------------------------------------------------------------------------
# Percent: `p\%` is read both as p and as p/100; two percents compare as written.
# ---------------------------------------------------------------------------------------------


def hundredth(text: str) -> str:
    """The answer divided by 100, spelled so that a decimal keeps its shown digits (12.5 -> 0.125)."""
    match = re.fullmatch(r"([+-]?)(\d*)(?:\.(\d*))?", text)
    if match is None or not (match.group(2) or match.group(3)):
        return rf"\frac{{{text}}}{{100}}"
    sign, whole, fraction = match.group(1), match.group(2), match.group(3) or ""
    digits, point = whole + fraction, len(whole) - 2
    shifted = "0." + "0" * -point + digits if point <= 0 else digits[:point] + "." + digits[point:]
    shifted = shifted.rstrip(".")
    integer, _, decimals = shifted.partition(".")
    integer = integer.lstrip("0") or "0"
    return sign + integer + ("." + decimals if decimals else "")


def percent_readings(text: str) -> list[str]:
    """[p, p/100] for `p\\%`, [text] otherwise."""
    if not text.endswith(PERCENT) or len(text) == len(PERCENT):
        return [text]
    base = text[: -len(PERCENT)]
    return [base, hundredth(base)]


def reading_pairs(predicted: str, reference: str) -> list[tuple[str, str]]:
    """The (prediction, reference) readings to compare; the pair is equal when any one is. A
    percent on both sides compares the numbers as written (50% vs 0.5% is not 0.5 vs 0.5)."""
    predicted_percent, reference_percent = predicted.endswith(PERCENT), reference.endswith(PERCENT)
    if predicted_percent and reference_percent:
        return [(percent_readings(predicted)[0], percent_readings(reference)[0])]
    return [(p, r) for p in percent_readings(predicted) for r in percent_readings(reference)]


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------

_DECIMAL = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?")
_REPEATING = re.compile(r"([+-]?)(\d*)\.(\d*)\\overline\{(\d+)\}")
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


def _parse_repeating(match: re.Match) -> Fraction | None:
    sign, whole, plain, repeating = match.groups()
    if len(whole) + len(plain) + len(repeating) > MAX_NUMBER_DIGITS:
        return None
    value = Fraction(int(whole or "0"))
    if plain:
        value += Fraction(int(plain), 10 ** len(plain))
    value += Fraction(int(repeating), (10 ** len(repeating) - 1) * 10 ** len(plain))
    return -value if sign == "-" else value


def parse_number(normalized: str) -> Fraction | None:
    """The exact value of a normalised answer that is a plain number, else None.

    Reads: `-12`, `3.50`, `.5`, `0.1\\overline{6}`, `3/4`, `-\\frac{3}{4}`, `\\frac{-3}{4}`,
    `\\frac{0.5}{2}`, mixed numbers `2\\frac{1}{4}` (= 9/4, as MATH answers mean them),
    `1.5\\times10^{3}`, `2e-3`. Anything with letters or operators beyond these returns None (the
    symbolic path decides).
    """
    text = normalized.replace(" ", "")
    if not text or len(text) > 3 * MAX_NUMBER_DIGITS:
        return None
    value = _parse_decimal(text)
    if value is not None:
        return value
    match = _REPEATING.fullmatch(text)
    if match:
        return _parse_repeating(match)
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


def base_number(normalized: str) -> tuple[int, int] | None:
    """(value, base) of a base-b numeral such as `1011_2` or `2A_16` (digits valid in the base)."""
    match = BASE_NUMBER.fullmatch(normalized)
    if match is None:
        return None
    digits, base = match.group(1), int(match.group(2))
    if not 2 <= base <= 36 or len(digits) > MAX_NUMBER_DIGITS or not re.search(r"\d", digits):
        return None  # a_12 is a subscripted name, not the numeral "a" in base 12
    try:
        return int(digits, base), base
    except ValueError:
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


def shows_float_noise(normalized: str) -> bool:
    """A decimal printed to a float's full precision (0.30000000000000004): only such a number may
    differ from the other side by float noise. A decimal a person wrote (1000000000.5) is exact."""
    written_as_decimal = "." in normalized or re.search(r"\d[eE][+-]?\d", normalized) is not None
    return written_as_decimal and significant_digits(normalized) >= FLOAT_NOISE_MIN_DIGITS


def approximates(text: str, value: Fraction, target: Fraction, min_significant_digits: int) -> bool:
    """text (a decimal worth value) shows target, which has no finite decimal expansion, rounded
    half-up or truncated to the digits it shows, with at least min_significant_digits of them."""
    if is_terminating(target):
        return False
    places = decimal_places(text)
    if places is None or significant_digits(text) < min_significant_digits:
        return False
    return shown_digits_match(value, target, places)


def numbers_match(
    first: Fraction,
    second: Fraction,
    first_text: str,
    second_text: str,
    relative_tolerance: float,
    approximate_decimals: bool,
    min_significant_digits: int,
) -> bool:
    """Symmetric numeric rule. Exact equality; or, when either side is a decimal printed to float
    precision (`shows_float_noise`), a relative tolerance (never between two integers, two
    fractions or short decimals: 1000000001 is not 1000000000, nor 1000000000.5); or, when
    approximate_decimals, one side a decimal that shows the other (a number without a finite
    decimal expansion, such as 1/3) rounded or truncated to its digits, with at least
    min_significant_digits of them (0.333 for 1/3, not 0.3)."""
    if first == second:
        return True
    if shows_float_noise(first_text) or shows_float_noise(second_text):
        scale = max(abs(first), abs(second))
        if abs(first - second) <= Fraction(relative_tolerance) * scale:
            return True
    if approximate_decimals:
        return approximates(first_text, first, second, min_significant_digits) or approximates(
            second_text, second, first, min_significant_digits
        )
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
