"""Answer structure: tuples, intervals, sets, unordered lists, matrices, equations, `\\pm`.

`parse_structure(normalized)` reads a normalised answer into a small tree of `AnswerNode`s whose
leaves are scalar strings; `compare_structures(predicted, reference, scalar_equal)` walks two
trees and calls `scalar_equal(predicted_text, reference_text)` on the leaves. The caller's process
runs it with a cheap scalar comparison that raises `NeedsSymbolic` when a leaf needs sympy; the
worker process runs it again with the symbolic comparison.

Rules (chosen for strictness, so that a reward cannot be farmed):
  `(1,2)` ordered, brackets must agree (`(0,1]` is not `[0,1]`); `\\{1,2\\}` and a bare list
  `1, 2` are unordered and must match one to one; `x = 3` equals `3`, and `x=1, y=2` equals
  `(1, 2)`; `\\pm 2` is the set {2, -2} and so differs from `2`; intervals joined by `\\cup` are
  unordered; matrices compare by shape and entries.

Cost: linear in the answer length to parse; unordered matching is quadratic in the number of
elements (answers have a handful), each comparison bounded by the caller.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Callable

MAX_PLUS_MINUS = 4  # 2^4 expansions at most


class NeedsSymbolic(Exception):
    """Raised by a cheap scalar comparison that cannot decide without sympy."""


@dataclass(frozen=True)
class AnswerNode:
    kind: str  # scalar | ordered | unordered | matrix | assignment
    text: str = ""
    items: tuple["AnswerNode", ...] = ()
    brackets: str = ""  # ordered: the opening and closing bracket, e.g. "(]"
    variable: str = ""  # assignment: the name on the left


_OPEN = {"(": ")", "[": "]", "{": "}"}
_MATRIX = re.compile(r"\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL)
_VARIABLE = re.compile(r"[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?(?:\([A-Za-z]\))?|\\[a-z]+")
_SEPARATOR_WORDS = re.compile(r"(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])")


def _split_top_level(text: str, separators: tuple[str, ...]) -> list[str]:
    """Split at separators that are outside every bracket pair ((, [, {, \\{)."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        if text.startswith(r"\{", index):
            depth += 1
            index += 2
            continue
        if text.startswith(r"\}", index):
            depth -= 1
            index += 2
            continue
        char = text[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            for separator in separators:
                if text.startswith(separator, index):
                    parts.append(text[start:index])
                    index += len(separator)
                    start = index
                    break
            else:
                index += 1
                continue
            continue
        index += 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


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


def parse_structure(text: str) -> AnswerNode:
    """The structure of a normalised answer (see the module docstring for the rules)."""
    text = text.strip()
    # "x \in [0, 1)" and "S = {1, 2}": the set or interval is the answer.
    membership = re.match(r"^[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s*(.+)$", text)
    if membership:
        text = membership.group(1)
    matrix = _MATRIX.fullmatch(text)
    if matrix:
        rows = [row for row in re.split(r"\\\\", matrix.group(2)) if row.strip()]
        parsed_rows = tuple(
            AnswerNode("ordered", items=tuple(parse_structure(cell.strip()) for cell in row.split("&")), brackets="[]")
            for row in rows
        )
        return AnswerNode("matrix", items=parsed_rows)
    unions = _split_top_level(text, (r"\cup",))
    if len(unions) > 1:
        return AnswerNode("unordered", items=tuple(parse_structure(part) for part in unions))
    outer = _outer_brackets(text)
    if outer is not None:
        opening, inner, closing = outer
        elements = _split_top_level(inner, (",", ";"))
        if opening == "{":
            return AnswerNode("unordered", items=tuple(parse_structure(e) for e in elements if e))
        if len(elements) > 1:
            return AnswerNode("ordered", items=tuple(parse_structure(e) for e in elements), brackets=opening + closing)
        if opening == "(" and closing == ")":  # "(3)" is just 3
            return parse_structure(inner)
    elements = [e for e in _split_top_level(_SEPARATOR_WORDS.sub(",", text), (",", ";")) if e]
    if len(elements) > 1:
        return AnswerNode("unordered", items=tuple(parse_structure(e) for e in elements))
    if len(elements) == 1:
        text = elements[0]
    sides = _split_top_level(text, ("=",))
    if len(sides) > 1 and all(_VARIABLE.fullmatch(side) for side in sides[:-1]) and sides[-1]:
        value = parse_structure(sides[-1])
        # "x = y = 0" assigns 0 to each name.
        assignments = tuple(AnswerNode("assignment", items=(value,), variable=side) for side in sides[:-1])
        return assignments[0] if len(assignments) == 1 else AnswerNode("unordered", items=assignments)
    variants = _expand_plus_minus(text)
    if len(variants) > 1:
        return AnswerNode("unordered", items=tuple(parse_structure(v) for v in variants))
    return AnswerNode("scalar", text=text)


ScalarEqual = Callable[[str, str], bool]


def _unordered_match(
    predicted: tuple[AnswerNode, ...], reference: tuple[AnswerNode, ...], scalar_equal: ScalarEqual
) -> bool:
    if len(predicted) != len(reference):
        return False
    unmatched = list(predicted)
    for wanted in reference:
        for index, candidate in enumerate(unmatched):
            if compare_structures(candidate, wanted, scalar_equal):
                del unmatched[index]
                break
        else:
            return False
    return True


def _is_assignment_list(node: AnswerNode) -> bool:
    return node.kind == "unordered" and len(node.items) > 1 and all(item.kind == "assignment" for item in node.items)


def compare_structures(predicted: AnswerNode, reference: AnswerNode, scalar_equal: ScalarEqual) -> bool:
    """True when the two answers are equal element by element under scalar_equal."""
    if predicted.kind == "assignment" and reference.kind == "assignment":
        if _normalize_variable(predicted.variable) != _normalize_variable(reference.variable):
            return False
        return compare_structures(predicted.items[0], reference.items[0], scalar_equal)
    if reference.kind == "assignment":
        return compare_structures(predicted, reference.items[0], scalar_equal)
    if predicted.kind == "assignment":
        return compare_structures(predicted.items[0], reference, scalar_equal)
    # "x=1, y=2" against "(1, 2)": the values in the order written.
    if _is_assignment_list(reference) and predicted.kind == "ordered":
        reference = AnswerNode("ordered", items=tuple(i.items[0] for i in reference.items), brackets=predicted.brackets)
    elif _is_assignment_list(predicted) and reference.kind == "ordered":
        predicted = AnswerNode("ordered", items=tuple(i.items[0] for i in predicted.items), brackets=reference.brackets)
    if predicted.kind != reference.kind:
        return False
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


def _normalize_variable(name: str) -> str:
    return name.replace("{", "").replace("}", "").replace(" ", "")
