"""Answer structure: tuples, intervals, inequalities, sets, unordered lists, matrices, equations, `\\pm`.

`parse_structure(normalized)` reads a normalised answer into a small tree of `AnswerNode`s whose
leaves are scalar strings; `compare_structures(predicted, reference, scalar_equal)` walks two
trees and calls `scalar_equal(predicted_text, reference_text)` on the leaves. The caller's process
runs it with a cheap scalar comparison that raises `NeedsSymbolic` when a leaf needs sympy (or when
its work budget is spent); the worker process runs it again with the symbolic comparison, under
the worker's deadline.

Rules (chosen for strictness, so that a reward cannot be farmed; each is symmetric in its sides):
  `(1,2)` ordered, brackets must agree (`(0,1]` is not `[0,1]`); `\\{1,2\\}` and a bare list
  `1, 2` (or `1 and 2`, `x=1 or x=2`) are unordered and must match one to one; `x = 3` equals `3`
  and `3 = x`, and `x=1, y=2` and `(x, y) = (1, 2)` equal `(1, 2)`; an assignment whose value has letters is an
  equation (`y = 2x+3` equals `2x - y + 3 = 0`); `\\pm 2` is the set {2, -2} and so differs from
  `2`; intervals joined by `\\cup` are unordered; matrices compare by shape and entries.
  A one-variable inequality is its interval: `x \\geq 2` is `[2, \\infty)`, `-2 < x \\leq 3` is
  `(-2, 3]`, `x \\neq 3` is `(-\\infty,3) \\cup (3,\\infty)`; two inequalities in different
  variables differ. Other relations stay scalars (the symbolic step compares them).

Limits: `parse_structure` recurses once per bracket level and refuses (returns one scalar leaf for)
answers nested deeper than `normalization.MAX_NESTING_DEPTH`, so it never nears Python's
recursion limit. Cost: O(length x depth) to parse; unordered lists are matched first by exact
keys (identical spelling or exact number: linear), and only the leftovers pairwise (augmenting
paths, quadratic in the leftovers, bounded by the caller's comparison budget).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from megatron_recipes.rewards.normalization import MAX_NESTING_DEPTH, nesting_depth, parse_number

MAX_PLUS_MINUS = 4  # 2^4 expansions at most


class NeedsSymbolic(Exception):
    """Raised by a cheap scalar comparison that cannot decide without sympy."""


@dataclass(frozen=True)
class AnswerNode:
    kind: str  # scalar | ordered | unordered | matrix | assignment
    text: str = ""
    items: tuple["AnswerNode", ...] = ()
    brackets: str = ""  # ordered: the opening and closing bracket, e.g. "(]"
    variable: str = ""  # assignment: the name on the left; an interval from an inequality: its variable


_MATRIX = re.compile(r"\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL)
_GREEK = r"\\(?:alpha|beta|gamma|delta|epsilon|varepsilon|theta|vartheta|lambda|mu|nu|rho|sigma|tau|phi|varphi|omega)"
_VARIABLE = re.compile(rf"[A-Za-z](?:_\{{?[A-Za-z0-9]+\}}?)?(?:\([A-Za-z]\))?|{_GREEK}")
_INEQUALITY_VARIABLE = re.compile(rf"[A-Za-z](?:_\{{?[A-Za-z0-9]+\}}?)?|{_GREEK}")
_SEPARATOR_WORDS = re.compile(r"(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])")
_CONJUNCTION = re.compile(r"(?<![A-Za-z\\])and(?![A-Za-z])")
_MEMBERSHIP = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s*(.+)$")
_RELATION_TOKENS = (r"\leq", r"\geq", r"\neq", "<", ">")
_FLIPPED = {"<": ">", ">": "<", r"\leq": r"\geq", r"\geq": r"\leq", r"\neq": r"\neq"}
NEGATIVE_INFINITY, INFINITY = r"-\infty", r"\infty"


def split_top_level_with_separators(text: str, separators: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split at separators outside every bracket pair ((, [, {, \\{); also return which separator
    stood at each split. One pass."""
    parts, found, depth, start, index = [], [], 0, 0, 0
    while index < len(text):
        if text.startswith(r"\{", index) or text.startswith(r"\}", index):
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
            continue
        char = text[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            for separator in separators:
                if text.startswith(separator, index) and not (
                    separator[0] == "\\" and text[index + len(separator) : index + len(separator) + 1].isalpha()
                ):
                    parts.append(text[start:index])
                    found.append(separator)
                    index += len(separator)
                    start = index
                    break
            else:
                index += 1
            continue
        index += 1
    parts.append(text[start:])
    return [part.strip() for part in parts], found


def _split_top_level(text: str, separators: tuple[str, ...]) -> list[str]:
    return split_top_level_with_separators(text, separators)[0]


def _outer_brackets(text: str) -> tuple[str, str, str] | None:
    """(opening, inner, closing) when the whole text is one bracketed group, e.g. `(0,1]`."""
    if text.startswith(r"\{") and text.endswith(r"\}"):
        inner = text[2:-2]
        if _balanced(inner):
            return "{", inner, "}"
        return None
    if len(text) < 2 or text[0] not in "([" or text[-1] not in ")]":
        return None
    inner = text[1:-1]
    return (text[0], inner, text[-1]) if _balanced(inner) else None


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _expand_plus_minus(text: str) -> list[str]:
    count = len(re.findall(r"\\(?:pm|mp)(?![a-zA-Z])", text))
    if count == 0 or count > MAX_PLUS_MINUS:
        return [text]
    pieces = re.split(r"(\\(?:pm|mp)(?![a-zA-Z]))", text)
    variants = []
    for signs in itertools.product((0, 1), repeat=count):
        out, sign_index = [], 0
        for piece in pieces:
            if piece in (r"\pm", r"\mp"):
                plus = (signs[sign_index] == 0) == (piece == r"\pm")
                out.append("+" if plus else "-")
                sign_index += 1
            else:
                out.append(piece)
        variant = "".join(out)
        variant = re.sub(r"^\+", "", variant).replace("=+", "=").replace("(+", "(").replace("{+", "{")
        variants.append(variant)
    return list(dict.fromkeys(variants))


def _names_tuple(text: str) -> bool:
    outer = _outer_brackets(text)
    if outer is None or outer[0] != "(":
        return False
    names = _split_top_level(outer[1], (",",))
    return len(names) > 1 and all(_VARIABLE.fullmatch(name) for name in names)


def _mentions(text: str, variable: str) -> bool:
    return re.search(rf"(?<![A-Za-z\\]){re.escape(variable)}(?![A-Za-z])", text) is not None


def _interval(low: str, high: str, brackets: str, variable: str) -> AnswerNode:
    return AnswerNode(
        "ordered",
        items=(AnswerNode("scalar", text=low), AnswerNode("scalar", text=high)),
        brackets=brackets,
        variable=variable,
    )


def _one_sided_interval(variable: str, relation: str, value: str) -> AnswerNode:
    """The set of `variable relation value`."""
    if relation == "<":
        return _interval(NEGATIVE_INFINITY, value, "()", variable)
    if relation == r"\leq":
        return _interval(NEGATIVE_INFINITY, value, "(]", variable)
    if relation == ">":
        return _interval(value, INFINITY, "()", variable)
    if relation == r"\geq":
        return _interval(value, INFINITY, "[)", variable)
    return AnswerNode(  # \neq
        "unordered",
        items=(_interval(NEGATIVE_INFINITY, value, "()", variable), _interval(value, INFINITY, "()", variable)),
        variable=variable,
    )


def _inequality_node(text: str) -> AnswerNode | None:
    """An interval for a one-variable inequality (`x > 2`, `2 \\leq x`, `-1 < x \\leq 3`), else None."""
    parts, relations = split_top_level_with_separators(text, _RELATION_TOKENS)
    if not relations or not all(parts):
        return None
    is_variable = [bool(_INEQUALITY_VARIABLE.fullmatch(part)) for part in parts]
    if len(relations) == 1:
        (left, right), relation = parts, relations[0]
        if is_variable[0] and not is_variable[1] and not _mentions(right, left):
            return _one_sided_interval(left, relation, right)
        if is_variable[1] and not is_variable[0] and not _mentions(left, right):
            return _one_sided_interval(right, _FLIPPED[relation], left)
        return None
    if len(relations) == 2 and is_variable[1] and not is_variable[0] and not is_variable[2]:
        low, variable, high = parts
        if _mentions(low, variable) or _mentions(high, variable):
            return None
        if set(relations) <= {"<", r"\leq"}:
            brackets = ("[" if relations[0] == r"\leq" else "(") + ("]" if relations[1] == r"\leq" else ")")
            return _interval(low, high, brackets, variable)
        if set(relations) <= {">", r"\geq"}:
            brackets = ("[" if relations[1] == r"\geq" else "(") + ("]" if relations[0] == r"\geq" else ")")
            return _interval(high, low, brackets, variable)
    return None


def _intersected_inequalities(text: str) -> AnswerNode | None:
    """`x > 1 \text{ and } x < 3` -> (1, 3): a lower and an upper bound on one variable."""
    marked = _CONJUNCTION.sub("\x00", text)
    if "\x00" not in marked:
        return None
    parts = _split_top_level(marked, ("\x00",))
    if len(parts) != 2:
        return None
    nodes = [_inequality_node(part) for part in parts]
    if any(node is None or node.kind != "ordered" for node in nodes) or nodes[0].variable != nodes[1].variable:
        return None
    lower = [node for node in nodes if node.items[1].text == INFINITY and node.items[0].text != NEGATIVE_INFINITY]
    upper = [node for node in nodes if node.items[0].text == NEGATIVE_INFINITY and node.items[1].text != INFINITY]
    if len(lower) != 1 or len(upper) != 1:
        return None
    return _interval(
        lower[0].items[0].text, upper[0].items[1].text, lower[0].brackets[0] + upper[0].brackets[1], nodes[0].variable
    )


def parse_structure(text: str) -> AnswerNode:
    """The structure of a normalised answer (see the module docstring for the rules)."""
    text = text.strip()
    if nesting_depth(text) > MAX_NESTING_DEPTH:
        return AnswerNode("scalar", text=text)  # read no further: the checker refuses such answers
    return _parse(text)


def _parse(text: str) -> AnswerNode:
    # "x \in [0, 1)": the set or interval is the answer.
    membership = _MEMBERSHIP.match(text)
    if membership:
        text = membership.group(1).strip()
    matrix = _MATRIX.fullmatch(text)
    if matrix:
        rows = [row for row in re.split(r"\\\\", matrix.group(2)) if row.strip()]
        parsed_rows = tuple(
            AnswerNode("ordered", items=tuple(_parse(cell.strip()) for cell in row.split("&")), brackets="[]")
            for row in rows
        )
        return AnswerNode("matrix", items=parsed_rows)
    unions = _split_top_level(text, (r"\cup",))
    if len(unions) > 1:
        return AnswerNode("unordered", items=tuple(_parse(part) for part in unions))
    outer = _outer_brackets(text)
    if outer is not None:
        opening, inner, closing = outer
        elements = _split_top_level(inner, (",", ";"))
        if opening == "{":
            return AnswerNode("unordered", items=tuple(_parse(e) for e in elements if e))
        if len(elements) > 1:
            return AnswerNode("ordered", items=tuple(_parse(e) for e in elements), brackets=opening + closing)
        if opening == "(" and closing == ")":  # "(3)" is just 3
            return _parse(inner)
    intersection = _intersected_inequalities(text)
    if intersection is not None:
        return intersection
    elements = [e for e in _split_top_level(_SEPARATOR_WORDS.sub(",", text), (",", ";")) if e]
    if len(elements) > 1:
        return AnswerNode("unordered", items=tuple(_parse(e) for e in elements))
    if len(elements) == 1:
        text = elements[0]
    sides = _split_top_level(text, ("=",))
    if len(sides) > 1 and all(_VARIABLE.fullmatch(side) for side in sides[:-1]) and sides[-1]:
        value = _parse(sides[-1])
        # "x = y = 0" assigns 0 to each name.
        assignments = tuple(AnswerNode("assignment", items=(value,), variable=side) for side in sides[:-1])
        return assignments[0] if len(assignments) == 1 else AnswerNode("unordered", items=assignments)
    if len(sides) == 2 and sides[0] and _VARIABLE.fullmatch(sides[1]):  # "3 = x" is "x = 3"
        return AnswerNode("assignment", items=(_parse(sides[0]),), variable=sides[1])
    if len(sides) == 2 and sides[1] and _names_tuple(sides[0]):  # "(x, y) = (1, 2)" is (1, 2)
        return _parse(sides[1])
    if len(sides) == 1:
        interval = _inequality_node(text)
        if interval is not None:
            return interval
    variants = _expand_plus_minus(text)
    if len(variants) > 1:
        return AnswerNode("unordered", items=tuple(_parse(v) for v in variants))
    return AnswerNode("scalar", text=text)


def leaves(node: AnswerNode):
    """Every scalar leaf text of a tree (iterative: no recursion)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.kind == "scalar":
            yield current.text
        stack.extend(reversed(current.items))


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------

ScalarEqual = Callable[[str, str], bool]


def exact_key(node: AnswerNode):
    """A key shared by two nodes only when they are surely equal under every scalar rule: the same
    spelling, or the same exact number."""
    if node.kind == "scalar":
        value = parse_number(node.text)
        return ("number", value) if value is not None else ("text", node.text)
    children = [exact_key(item) for item in node.items]
    if node.kind == "unordered":
        children.sort(key=repr)
    return (node.kind, node.brackets, node.variable.replace("{", "").replace("}", ""), tuple(children))


def _perfect_matching(left: Sequence[AnswerNode], right: Sequence[AnswerNode], scalar_equal: ScalarEqual) -> bool:
    """A one-to-one matching of left onto right under compare_structures (augmenting paths,
    breadth first, no recursion; each pair is compared at most once)."""
    count = len(right)
    known: dict[tuple[int, int], bool] = {}

    def related(i: int, j: int) -> bool:
        if (i, j) not in known:
            known[i, j] = compare_structures(left[i], right[j], scalar_equal)
        return known[i, j]

    owner_of_right = [-1] * count
    right_of_left = [-1] * len(left)
    for start in range(len(left)):
        reached_from: dict[int, int] = {}
        frontier, free_right = [start], -1
        while frontier and free_right < 0:
            following = []
            for i in frontier:
                for j in range(count):
                    if j in reached_from or not related(i, j):
                        continue
                    reached_from[j] = i
                    if owner_of_right[j] < 0:
                        free_right = j
                        break
                    following.append(owner_of_right[j])
                if free_right >= 0:
                    break
            frontier = following
        if free_right < 0:
            return False
        j = free_right
        while j >= 0:  # flip the path: each left node on it takes the right node it reached
            i = reached_from[j]
            previous = right_of_left[i]
            owner_of_right[j], right_of_left[i] = i, j
            j = previous
    return True


def _unordered_match(
    predicted: tuple[AnswerNode, ...], reference: tuple[AnswerNode, ...], scalar_equal: ScalarEqual
) -> bool:
    if len(predicted) != len(reference):
        return False
    waiting: dict = {}
    for node in reference:
        waiting.setdefault(exact_key(node), []).append(node)
    left_over_predicted = []
    for node in predicted:
        same = waiting.get(exact_key(node))
        if same:
            same.pop()
        else:
            left_over_predicted.append(node)
    left_over_reference = [node for nodes in waiting.values() for node in nodes]
    if not left_over_predicted:
        return True
    return _perfect_matching(left_over_predicted, left_over_reference, scalar_equal)


def _is_assignment_list(node: AnswerNode) -> bool:
    return node.kind == "unordered" and len(node.items) > 1 and all(item.kind == "assignment" for item in node.items)


def _has_letters(text: str) -> bool:
    return re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", text)) is not None


def _as_equation(assignment: AnswerNode) -> str | None:
    value = assignment.items[0]
    return f"{assignment.variable}={value.text}" if value.kind == "scalar" else None


def _is_equation(node: AnswerNode) -> bool:
    return node.kind == "scalar" and len(_split_top_level(node.text, ("=",))) == 2


def _normalize_variable(name: str) -> str:
    return name.replace("{", "").replace("}", "").replace(" ", "")


def _compare_assignments(predicted: AnswerNode, reference: AnswerNode, scalar_equal: ScalarEqual) -> bool:
    if _normalize_variable(predicted.variable) == _normalize_variable(reference.variable):
        return compare_structures(predicted.items[0], reference.items[0], scalar_equal)
    # Different names: values are different answers (x=3 vs y=3), but curves are equations
    # (y = 2x+3 vs x = (y-3)/2).
    predicted_equation, reference_equation = _as_equation(predicted), _as_equation(reference)
    if predicted_equation is None or reference_equation is None:
        return False
    if not (_has_letters(predicted.items[0].text) or _has_letters(reference.items[0].text)):
        return False
    return scalar_equal(predicted_equation, reference_equation)


def compare_structures(predicted: AnswerNode, reference: AnswerNode, scalar_equal: ScalarEqual) -> bool:
    """True when the two answers are equal element by element under scalar_equal."""
    if predicted.kind == "assignment" and reference.kind == "assignment":
        return _compare_assignments(predicted, reference, scalar_equal)
    if predicted.kind == "assignment" or reference.kind == "assignment":
        assignment, other = (predicted, reference) if predicted.kind == "assignment" else (reference, predicted)
        if _is_equation(other):  # y = 2x+3 against 2x - y + 3 = 0
            equation = _as_equation(assignment)
            if equation is None:
                return False
            return scalar_equal(equation, other.text) if assignment is predicted else scalar_equal(other.text, equation)
        if assignment is predicted:
            return compare_structures(predicted.items[0], reference, scalar_equal)
        return compare_structures(predicted, reference.items[0], scalar_equal)
    # "x=1, y=2" against "(1, 2)": the values in the order written.
    if _is_assignment_list(reference) and predicted.kind == "ordered":
        reference = AnswerNode("ordered", items=tuple(i.items[0] for i in reference.items), brackets=predicted.brackets)
    elif _is_assignment_list(predicted) and reference.kind == "ordered":
        predicted = AnswerNode("ordered", items=tuple(i.items[0] for i in predicted.items), brackets=reference.brackets)
    if predicted.kind != reference.kind:
        return False
    if predicted.variable and reference.variable and predicted.kind != "assignment":
        if _normalize_variable(predicted.variable) != _normalize_variable(reference.variable):
            return False  # x > 2 and t > 2 are sets of different variables
    if predicted.kind == "scalar":
        return scalar_equal(predicted.text, reference.text)
    if predicted.kind == "ordered":
        if predicted.brackets != reference.brackets or len(predicted.items) != len(reference.items):
            return False
        return all(compare_structures(p, r, scalar_equal) for p, r in zip(predicted.items, reference.items))
    if predicted.kind == "matrix":
        if len(predicted.items) != len(reference.items):
            return False
        return all(compare_structures(p, r, scalar_equal) for p, r in zip(predicted.items, reference.items))
    return _unordered_match(predicted.items, reference.items, scalar_equal)
