"""LaTeX / plain math -> sympy, and symbolic equality of two scalar answers.

Runs inside the checker's worker processes (see `worker_pool.py`), never in the caller: every call
here is bounded only by the worker's deadline, which kills the process if sympy gets stuck.

Parsing: a small LaTeX -> Python-expression translator handles what answers are made of (`\\frac`,
`\\sqrt[n]`, `\\binom`, `^`, `_`, `!`, `|x|`, floors, trig/log functions, greek letters, implicit
multiplication) and feeds sympy's `parse_expr` with `evaluate=False` over a whitelist of names
(the expression string is model-written, and `parse_expr` evaluates Python). LaTeX the translator
does not know goes to `sympy.parsing.latex.parse_latex(..., backend="lark")` (ANTLR would conflict
with hydra's pin). Pre-screens refuse pathological inputs before sympy sees them: power towers and
factorials whose values would have more than MAX_DIGITS digits, radicals nested deeper than
MAX_NESTING, answers longer than MAX_CHARACTERS. Such answers are equal only when identical.

Relations: `lhs = rhs`, `\\leq`, `\\geq`, `<`, `>`, `\\neq` at the top level are parsed side by side
into an unevaluated relational (so `2x-y+1=0` is readable as a reference).

Comparison of two expressions a, b (every step is symmetric in a and b):
  1. identical trees -> equal;
  2. a decimal on either side against an irrational constant on the other: equal when the digits
     shown are the constant rounded or truncated (the rule `normalization.py` uses for rationals);
  3. no free symbols: a difference that sympy's exact arithmetic leaves as a rational decides
     (10^100 + 1 vs 10^100); values 40 digits apart by more than 1e-25 relative -> not equal
     (1/2004! vs 1/2006!); otherwise `equals(0)` on a - b, else a high-precision test of the
     difference itself;
  4. free symbols: a - b is formed first, and a constant difference decides as in 3 (so
     (x+1)^100 + 1 vs (x+1)^100 is never rescued by probing); then exact rationals, negative
     ones included, are substituted into the difference and it must be zero at each (exactly, or
     to 30 digits of the difference itself, never relative to two huge values); then
     `simplify(a - b)`; else zero at every defined probe (>= 8) -> equal;
  5. relations: the same kind (an equation, or the same direction of inequality after flipping
     `>`), and lhs - rhs equal up to a non-zero constant factor (positive for inequalities).

Cost: parse ~1 ms per answer (LRU-cached, the reference of a GRPO group is parsed once); the
comparison is dominated by evalf/simplify on the expressions' size, cut off by the deadline.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from fractions import Fraction

import sympy
from sympy.parsing.latex import parse_latex
from sympy.parsing.sympy_parser import (
    convert_xor,
    factorial_notation,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

from megatron_recipes.rewards.normalization import (
    decimal_places,
    normalize_answer,
    parse_number,
    shown_digits_match,
    shows_float_noise,
    significant_digits,
)
from megatron_recipes.rewards.structure import split_top_level_with_separators

MAX_CHARACTERS = 600
MAX_DIGITS = 4000
MAX_NESTING = 8
MAX_FACTORIAL = 3000

sys.set_int_max_str_digits(max(MAX_DIGITS * 4, 4300))


class ParseFailure(ValueError):
    """The answer is not a math expression we can read."""


class Pathological(ValueError):
    """The answer would make sympy compute something astronomically large."""


_GREEK = (
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi "
    "rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi Psi Omega"
).split()
_FUNCTIONS = {
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "cot": "cot",
    "sec": "sec",
    "csc": "csc",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
    "sinh": "sinh",
    "cosh": "cosh",
    "tanh": "tanh",
    "ln": "log",
    "log": "log",
    "exp": "exp",
    "max": "Max",
    "min": "Min",
    "gcd": "gcd",
    "lcm": "lcm",
    "det": "det",
}
_CONSTANTS = {"pi": "pi", "infty": "oo", "infinity": "oo", "e": "E", "imath": "I"}
_RELATIONS = {"leq": "<=", "geq": ">=", "neq": "!=", "lt": "<", "gt": ">", "le": "<=", "ge": ">="}

# Names the expression string may contain (besides single letters and x_1-style subscripts).
_ALLOWED_NAMES = (
    set(_FUNCTIONS.values())
    | {"sqrt", "root", "binomial", "factorial", "floor", "ceiling", "Abs", "pi", "oo", "E", "I"}
    | {name for name in _GREEK}
    | {"C", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "abs", "ceil", "log2", "log10"}
)


def _local_names() -> dict:
    names = {name: sympy.Symbol(name) for name in _GREEK}
    names.update(
        pi=sympy.pi,
        oo=sympy.oo,
        E=sympy.E,
        e=sympy.E,
        I=sympy.I,
        i=sympy.I,
        C=sympy.binomial,
        binomial=sympy.binomial,
        abs=sympy.Abs,
        Abs=sympy.Abs,
        ceil=sympy.ceiling,
        log2=lambda x: sympy.log(x, 2),
        log10=lambda x: sympy.log(x, 10),
        factorial=_guarded_factorial,
    )
    return names


def _guarded_factorial(argument):
    if argument.is_Number and argument > MAX_FACTORIAL:
        raise Pathological(f"factorial of {argument}")
    return sympy.factorial(argument)


_LOCAL_NAMES = None
_TRANSFORMATIONS = standard_transformations + (implicit_multiplication_application, convert_xor, factorial_notation)


# --------------------------------------------------------------------------------------------
# LaTeX -> expression string
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\\[a-zA-Z]+|\\.|\d|[a-zA-Z]|\S")


class _Translator:
    """Recursive descent over LaTeX tokens, emitting a Python/sympy expression string."""

    def __init__(self, text: str):
        self.tokens = _TOKEN.findall(text)
        self.position = 0
        self.abs_open = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ParseFailure("unexpected end")
        self.position += 1
        return token

    def translate(self) -> str:
        out = self.sequence(stop=None)
        if self.peek() is not None:
            raise ParseFailure(f"unexpected {self.peek()!r}")
        return out

    def group(self) -> str:
        """A `{...}` group or one token (LaTeX's argument rule)."""
        token = self.peek()
        if token == "{":
            self.take()
            inner = self.sequence(stop="}")
            self.take()
            return f"({inner})"
        return self.atom(self.take())

    def sequence(self, stop: str | None) -> str:
        parts: list[str] = []
        while self.peek() is not None and self.peek() != stop:
            token = self.peek()
            if stop is None and token in ("}", ")", "]") and token != stop:
                raise ParseFailure(f"unbalanced {token!r}")
            if token == "|":
                self.take()
                if self.abs_open and parts and parts[-1] not in ("+", "-", "*", "/", "**", "(", ","):
                    self.abs_open -= 1
                    parts.append(")")
                else:
                    self.abs_open += 1
                    parts.append(" Abs(")
                continue
            parts.append(self.atom(self.take()))
        text = ""
        for part in parts:
            # Digits (and a decimal point between digits) stay glued; everything else is spaced so
            # that sympy's implicit multiplication sees separate factors.
            if text and (part.isdigit() or part == ".") and (text[-1].isdigit() or text[-1] == "."):
                text += part
            elif part == "!" or part.startswith("**"):
                text += part
            else:
                text += " " + part
        return text.strip()

    def atom(self, token: str) -> str:
        if token.isdigit() or token in "+-*/!,.=<>":
            return token
        if token in ("(", "["):
            inner = self.sequence(stop=")" if token == "(" else "]")
            self.take()
            return f"({inner})"
        if token == "{":
            inner = self.sequence(stop="}")
            self.take()
            return f"({inner})"
        if token == "^":
            exponent = self.group()
            return f"**{exponent}" if exponent.startswith("(") else f"**({exponent})"
        if token == "_":
            raise ParseFailure("subscript outside a name")
        if re.fullmatch(r"[a-zA-Z]", token):
            if self.peek() == "_":
                self.take()
                subscript = self.group().strip("()").replace(" ", "")
                if not re.fullmatch(r"[A-Za-z0-9]+", subscript):
                    raise ParseFailure("subscript")
                return f"{token}_{subscript}"
            return token
        if token.startswith("\\"):
            return self.command(token[1:])
        raise ParseFailure(f"token {token!r}")

    def command(self, name: str) -> str:
        if name == "frac":
            numerator, denominator = self.group(), self.group()
            return f"(({numerator})/({denominator}))"
        if name == "binom":
            top, bottom = self.group(), self.group()
            return f"binomial({top},{bottom})"
        if name == "sqrt":
            index = None
            if self.peek() == "[":
                self.take()
                index = self.sequence(stop="]")
                self.take()
            radicand = self.group()
            return f"sqrt({radicand})" if index is None else f"root({radicand},{index})"
        if name in ("cdot", "times", "ast"):
            return "*"
        if name == "div":
            return "/"
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name in _GREEK:
            return name
        if name in _RELATIONS:
            return _RELATIONS[name]
        if name in ("lfloor", "lceil"):
            closing = "rfloor" if name == "lfloor" else "rceil"
            inner = self.sequence(stop="\\" + closing)
            self.take()
            return f"{'floor' if name == 'lfloor' else 'ceiling'}({inner})"
        if name == "log" and self.peek() == "_":
            self.take()
            base = self.group()
            argument = self.group()
            return f"log({argument},{base})"
        if name in _FUNCTIONS:
            function = _FUNCTIONS[name]
            power = ""
            if self.peek() == "^":  # \sin^2 x
                self.take()
                power = self.group()
            argument = self.group() if self.peek() in ("{", "(") else self.atom(self.take())
            if argument.startswith("(") is False:
                argument = f"({argument})"
            return f"{function}{argument}**{power}" if power else f"{function}{argument}"
        if name == "operatorname":
            inner = self.group().strip("()").replace(" ", "")
            if inner in _FUNCTIONS:
                return self.command(inner)
            raise ParseFailure(f"operator {inner}")
        if name in ("left", "right", "displaystyle", "mathrm", "text"):
            return ""
        if name in ("%", ",", ";", "!", " "):
            return ""
        raise ParseFailure(f"command \\{name}")


def latex_to_expression_string(text: str) -> str:
    return _Translator(text).translate()


def _check_names(expression: str) -> None:
    """Refuse anything but whitelisted names and plain operators (parse_expr evaluates Python)."""
    if re.search(r"__|\blambda\b|[\"'`;:@\[\]{}$#]|\.[A-Za-z_]", expression):
        raise ParseFailure("disallowed characters")
    for name in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", expression):
        if name in _ALLOWED_NAMES or re.fullmatch(r"[A-Za-z](_[A-Za-z0-9]+)?", name):
            continue
        if re.fullmatch(r"[a-z]{2,3}", name):  # "xy" -> x*y via sympy's split_symbols
            continue
        raise ParseFailure(f"name {name!r}")


_POWER_TOWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*[\w.]+\s*\^|\*\*\s*\([^()]*\*\*|\*\*\s*[\w.]+\s*\*\*")


def _prescreen(text: str) -> None:
    if len(text) > MAX_CHARACTERS:
        raise Pathological("answer too long")
    if text.count(r"\sqrt") > MAX_NESTING or text.count("sqrt(") > MAX_NESTING:
        raise Pathological("radicals nested too deep")
    for match in re.finditer(r"(\d+)\s*\)?\s*!", text):
        if len(match.group(1)) > 5 or int(match.group(1)) > MAX_FACTORIAL:
            raise Pathological("huge factorial")
    # A power tower: an exponent that itself has an exponent (10^{10^{10}}, 2^2^5, 2**(3**9)); not
    # two separate powers (x^2+y^2).
    if _POWER_TOWER.search(text):
        numbers = [int(n) for n in re.findall(r"\d{1,6}", text)]
        if numbers and max(numbers) > 3:
            raise Pathological("power tower")
    for match in re.finditer(r"(?:\^|\*\*)\s*\{?\(?\s*(\d+)", text):
        if len(match.group(1)) > 5:
            raise Pathological("huge exponent")


def _lark_parse(text: str):
    result = parse_latex(text, backend="lark")
    # The lark grammar is ambiguous for `a(b+1)`: take the product reading, never a function call.
    if type(result).__name__ == "Tree":
        candidates = [
            c
            for c in result.children
            if isinstance(c, sympy.Basic) and not isinstance(c, sympy.core.function.AppliedUndef)
        ]
        if not candidates:
            raise ParseFailure("ambiguous")
        result = candidates[-1]
    if not isinstance(result, sympy.Basic):
        raise ParseFailure("lark returned no expression")
    return result


def _magnitude_check(expression) -> None:
    """Refuse integer powers whose value would exceed MAX_DIGITS digits before anything evaluates."""
    for node in sympy.preorder_traversal(expression):
        if isinstance(node, sympy.Pow) and node.base.is_Number and node.exp.is_Number:
            base = abs(float(node.base)) if node.base != 0 else 0.0
            if base > 1 and abs(float(node.exp)) * math.log10(base) > MAX_DIGITS:
                raise Pathological("huge power")


_RELATION_SEPARATORS = (r"\leq", r"\geq", r"\neq", "=", "<", ">")
_RELATION_CLASSES = {
    "=": sympy.Eq,
    r"\neq": sympy.Ne,
    "<": sympy.StrictLessThan,
    r"\leq": sympy.LessThan,
    ">": sympy.StrictGreaterThan,
    r"\geq": sympy.GreaterThan,
}


@functools.lru_cache(maxsize=4096)
def to_sympy(text: str):
    """A sympy expression, Matrix, or (for `lhs = rhs`, `lhs \\leq rhs`, ...) an unevaluated
    relational, for a normalised scalar answer."""
    sides, relations = split_top_level_with_separators(text, _RELATION_SEPARATORS)
    if not relations:
        return _expression(text)
    if len(relations) > 1 or not sides[0] or not sides[1]:
        raise ParseFailure("not one relation")
    left, right = _expression(sides[0]), _expression(sides[1])
    if not isinstance(left, sympy.Expr) or not isinstance(right, sympy.Expr):
        raise ParseFailure("relation between non-expressions")
    return _RELATION_CLASSES[relations[0]](left, right, evaluate=False)


def _expression(text: str):
    global _LOCAL_NAMES
    if _LOCAL_NAMES is None:
        _LOCAL_NAMES = _local_names()
    _prescreen(text)
    looks_latex = "\\" in text or "{" in text or "|" in text  # |x| needs the translator too
    try:
        expression_string = latex_to_expression_string(text) if looks_latex else text.replace("^", "**")
        _check_names(expression_string)
        if "**" in expression_string:
            _prescreen(expression_string)
        expression = parse_expr(
            expression_string, local_dict=dict(_LOCAL_NAMES), transformations=_TRANSFORMATIONS, evaluate=False
        )
    except Pathological:
        raise
    except Exception as error:
        if not looks_latex:
            raise ParseFailure(str(error)) from None
        try:
            expression = _lark_parse(text)
        except Pathological:
            raise
        except Exception as lark_error:
            raise ParseFailure(str(lark_error)[:200]) from None
    if isinstance(expression, sympy.core.relational.Relational) or not isinstance(
        expression, (sympy.Basic, sympy.MatrixBase)
    ):
        # A lone letter that names a function in our namespace (C = binomial): the letter itself.
        if re.fullmatch(r"[A-Za-z]", text):
            return sympy.Symbol(text)
        raise ParseFailure("not an expression")
    _magnitude_check(expression)
    return _rebuild(expression)


def _rebuild(expression):
    """Evaluate a tree parsed with evaluate=False bottom-up (after the magnitude check), so that
    `n - 1*3` becomes `n - 3` and substitutions evaluate exactly."""
    if isinstance(expression, sympy.MatrixBase):
        return expression.applyfunc(_rebuild)
    if not isinstance(expression, sympy.Basic) or expression.is_Atom or not expression.args:
        return expression
    try:
        return expression.func(*[_rebuild(argument) for argument in expression.args])
    except (TypeError, ValueError):
        return expression


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------

# Negative points too: \sqrt{x^2} is x only for x >= 0.
_PROBE_POINTS = (3, 4, 5, 7, 10, 13, -2, -5, Fraction(5, 7), Fraction(17, 11), Fraction(29, 13), Fraction(-7, 3))
# Working precision (decimal digits) evalf may climb to while it resolves a cancellation.
_MAX_WORKING_DIGITS = 1000


def _relatively_close(a, b, tolerance) -> bool:
    scale = max(abs(a), abs(b))
    return abs(a - b) <= tolerance * scale if scale else True


def _numeric(expression, digits: int = 40):
    value = sympy.N(expression, digits)
    if not value.is_Number and not (value.is_number and value.is_finite):
        return None
    return complex(value) if not value.is_real else value


def _number_is_zero(value) -> bool | None:
    """Whether a number-valued expression (no free symbols) is zero; None where it is undefined.

    Exact when sympy's arithmetic left a rational. Otherwise the *difference itself* is evaluated:
    evalf raises its working precision until the result has 30 correct digits (up to
    _MAX_WORKING_DIGITS), so a constant 1 left over from two terms of 10^60 is 1, not relative
    noise, and a true zero comes back with no correct digit at all (precision <= 1 bit)."""
    if value.is_Rational:
        return value == 0
    if value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    numeric = value.evalf(30, maxn=_MAX_WORKING_DIGITS)
    if numeric.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo) or not numeric.is_number:
        return None
    for part in numeric.as_real_imag():
        if part == 0:
            continue
        if isinstance(part, sympy.Float) and part._prec <= 1:
            continue
        return False if isinstance(part, sympy.Float) else None
    return True


def _constants_equal(a, b) -> bool:
    difference = a - b
    if difference == 0:
        return True
    if difference.is_Rational:  # exact arithmetic decided: 10^100 + 1 vs 10^100
        return False
    a_value, b_value = _numeric(a), _numeric(b)
    if a_value is not None and b_value is not None:
        # Values computed to 40 digits that differ by more than 1e-25 relative are surely different.
        if isinstance(a_value, complex) or isinstance(b_value, complex):
            a_c, b_c = complex(a_value), complex(b_value)
            if abs(a_c - b_c) > 1e-12 * max(abs(a_c), abs(b_c), 1e-300):
                return False
        elif not _relatively_close(a_value, b_value, sympy.Float("1e-25", 40)):
            return False
    verdict = difference.equals(0)
    if verdict is not None:
        return bool(verdict)
    return bool(_number_is_zero(difference))


def _probe_substitutions(symbols):
    for offset, point in enumerate(_PROBE_POINTS):
        if offset < 8:
            yield {symbol: sympy.Rational(point) + index for index, symbol in enumerate(symbols)}
        else:
            yield {symbol: sympy.Rational(point) * (index + 1) for index, symbol in enumerate(symbols)}


def _functions_equal(a, b) -> bool:
    """Expressions in variables. Sympy's exact verdict on the difference wins: a difference that
    evaluates to a constant decides by itself; probes substitute exact rationals into the
    difference (so rational functions are decided exactly at each point) and test it for zero
    absolutely, never as a ratio of two huge values."""
    difference = a - b
    if difference == 0:
        return True
    if not difference.free_symbols:
        return _constants_equal(a, b)
    symbols = sorted(difference.free_symbols, key=str)
    zero_probes = 0
    for substitution in _probe_substitutions(symbols):
        verdict = _number_is_zero(difference.subs(substitution))
        if verdict is False:
            return False
        if verdict:
            zero_probes += 1
    simplified = sympy.simplify(difference)
    if simplified == 0:
        return True
    if not simplified.free_symbols:
        return bool(_number_is_zero(simplified))
    return zero_probes >= 8


def _decimal_shows_constant(
    decimal_text: str, other, relative_tolerance: float, min_significant_digits: int
) -> bool | None:
    """True when decimal_text is a decimal that shows `other`, an irrational constant, within float
    noise or rounded/truncated to its digits (3.1416 for pi); None when the rule does not apply or
    does not accept (the exact comparison then decides)."""
    shown = parse_number(decimal_text)
    if shown is None or (decimal_places(decimal_text) is None and not shows_float_noise(decimal_text)):
        return None
    if not isinstance(other, sympy.Expr):
        return None
    if other.free_symbols or other.is_Rational:
        return None
    value = _numeric(other, 60)
    if value is None or isinstance(value, complex):
        return None
    target = Fraction(str(value))
    if shows_float_noise(decimal_text):
        if abs(shown - target) <= Fraction(relative_tolerance) * max(abs(shown), abs(target)):
            return True
    places = decimal_places(decimal_text)
    if places is None or significant_digits(decimal_text) < min_significant_digits:
        return None
    return True if shown_digits_match(shown, target, places) else None


_FLIPPED_RELATIONS = {
    sympy.StrictGreaterThan: sympy.StrictLessThan,
    sympy.GreaterThan: sympy.LessThan,
}


def _relation_form(relation):
    """(kind, expression): Eq/Ne as `lhs - rhs` = 0 / != 0; the order relations as `expression > 0`
    (strict) or `>= 0`."""
    if isinstance(relation, sympy.Equality):
        return "eq", relation.lhs - relation.rhs
    if isinstance(relation, sympy.Unequality):
        return "ne", relation.lhs - relation.rhs
    if isinstance(relation, (sympy.StrictLessThan, sympy.LessThan)):
        return ("lt" if isinstance(relation, sympy.StrictLessThan) else "le"), relation.rhs - relation.lhs
    return ("lt" if isinstance(relation, sympy.StrictGreaterThan) else "le"), relation.lhs - relation.rhs


def _constant_ratio(first, second):
    """c when first == c * second for a non-zero number c, else None."""
    if first == 0 or second == 0:
        return sympy.Integer(1) if first == second else None
    ratio = sympy.cancel(sympy.together(first / second))
    if ratio.free_symbols:
        ratio = sympy.simplify(ratio)
    if ratio.free_symbols or ratio == 0 or not ratio.is_finite:
        return None
    return ratio


def _rational_floats(expression):
    return sympy.nsimplify(expression, rational=True) if expression.has(sympy.Float) else expression


def _relations_equal(a, b) -> bool:
    """Equations are equal when one side-difference is a non-zero constant multiple of the other
    (same solution set: 2x-y+1=0 and 4x-2y+2=0, y=2x+3 and 2x-y+3=0); inequalities when the multiple
    is positive (x<2 and 2>x and 2x<4); a relation never equals a non-relation."""
    kind_a, form_a = _relation_form(a)
    kind_b, form_b = _relation_form(b)
    if kind_a != kind_b:
        return False
    ratio = _constant_ratio(_rational_floats(form_a), _rational_floats(form_b))
    if ratio is None:
        return False
    if kind_a in ("lt", "le"):
        return bool(ratio.is_positive)
    return True


def expressions_equal(a, b) -> bool:
    if a == b:
        return True
    if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):
        if not (isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase)) or a.shape != b.shape:
            return False
        return all(expressions_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, sympy.core.relational.Relational) or isinstance(b, sympy.core.relational.Relational):
        if isinstance(a, sympy.core.relational.Relational) and isinstance(b, sympy.core.relational.Relational):
            return _relations_equal(a, b)
        return False
    if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
        return False
    # Decimals written inside an expression (1.5x) are exact decimals, not floats.
    a, b = _rational_floats(a), _rational_floats(b)
    if a == b:
        return True
    if not a.free_symbols and not b.free_symbols:
        return _constants_equal(a, b)
    return _functions_equal(a, b)


def symbolic_scalar_equal(
    predicted_text: str,
    reference_text: str,
    relative_tolerance: float,
    min_significant_digits: int,
    approximate_decimals: bool,
) -> bool:
    """Equality of two normalised scalar answers through sympy (inside a worker). Symmetric: the
    decimal rule applies to whichever side is the decimal."""
    if predicted_text == reference_text:
        return True
    try:
        predicted, reference = to_sympy(predicted_text), to_sympy(reference_text)
    except (ParseFailure, Pathological):
        return False
    if approximate_decimals:
        if _decimal_shows_constant(predicted_text, reference, relative_tolerance, min_significant_digits):
            return True
        if _decimal_shows_constant(reference_text, predicted, relative_tolerance, min_significant_digits):
            return True
    return expressions_equal(predicted, reference)


def reference_is_parseable(reference_text: str) -> bool:
    try:
        to_sympy(normalize_answer(reference_text))
        return True
    except (ParseFailure, Pathological):
        return False
