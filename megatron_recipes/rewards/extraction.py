"""Final-answer extraction from a model's generation (pure functions, no sympy).

Strategies, tried in the order a style names them:
  boxed        the last (or first) `\\boxed{...}` / `\\fbox{...}`, nested braces balanced
  answer_is    "The answer is ...", "final answer is $...$", "Answer: ..."
  gsm8k        the last `#### N` line
  choice       a multiple-choice letter: "(B)", "answer is C", `\\boxed{D}`
  last_number  the last number in the text (GSM8K-style fallback; off for MATH-style grading)

Only the text after the last `</think>` is searched when one is present, so numbers scribbled in the
reasoning of an R1-Zero style completion never count as its answer.

Cost: one linear scan of the text per strategy (regexes here have no nested quantifiers, so no
catastrophic backtracking); independent of the number of completions in a batch.
"""

from __future__ import annotations

import re
from typing import Sequence

EXTRACTION_STRATEGIES = ("boxed", "answer_is", "gsm8k", "choice", "last_number")

# Styles name strategy orders; `last_number` only where the style allows it.
STYLE_STRATEGIES: dict[str, tuple[str, ...]] = {
    "math": ("boxed", "answer_is"),
    "gsm8k": ("gsm8k", "boxed", "answer_is", "last_number"),
    "multiple_choice": ("choice",),
    "boxed_only": ("boxed",),
}

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)\b\s*")
_THINK_END = "</think>"


def answer_region(text: str) -> str:
    """The part of a completion that may hold the answer: after the last `</think>` if any, and
    inside `<answer>...</answer>` when the completion uses those tags."""
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    start = text.rfind("<answer>")
    if start != -1:
        end = text.find("</answer>", start)
        text = text[start + len("<answer>") : end if end != -1 else len(text)]
    return text


def _balanced_group(text: str, open_index: int) -> tuple[str, int] | None:
    """Content of the `{...}` starting at open_index, and the index after its closing brace."""
    depth = 0
    index = open_index
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):  # \{ and \} are literal braces
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index], index + 1
        index += 1
    return None


def find_boxed(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` in order; `\\boxed 5` (no braces) too."""
    found = []
    position = 0
    while True:
        match = _BOX_COMMAND.search(text, position)
        if match is None:
            return found
        after = match.end()
        if after < len(text) and text[after] == "{":
            group = _balanced_group(text, after)
            if group is None:  # unbalanced: the generation was cut off inside the box
                return found
            found.append(group[0].strip())
            position = group[1]
        else:
            token = re.match(r"[^\s$]+", text[after:])
            if token and match.group(0).endswith((" ", "\t")):
                found.append(token.group(0))
            position = after + (token.end() if token else 0)


def extract_boxed(text: str, which: str = "last") -> str | None:
    boxes = find_boxed(text)
    if not boxes:
        return None
    return boxes[-1] if which == "last" else boxes[0]


_ANSWER_IS = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*(?:[:=]\s*)?",
    re.IGNORECASE,
)
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)


def extract_answer_is(text: str) -> str | None:
    """The phrase after the last "answer is" / "Answer:": a math span if it opens with one, else
    the rest of the sentence."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].lstrip()
    boxed = _BOX_COMMAND.match(rest)
    if boxed:
        inner = extract_boxed(rest, "first")
        if inner is not None:
            return inner
    math = _MATH_SPAN.match(rest)
    if math:
        return next(group for group in math.groups() if group is not None).strip()
    # The sentence ends at a newline or at a full stop that is followed by a space or the end
    # (a decimal point like 3.5 is not a full stop).
    sentence = re.split(r"\n|\.(?=\s|$)", rest, maxsplit=1)[0].strip()
    sentence = sentence.strip("*").strip()
    return sentence or None


_GSM8K_ANSWER = re.compile(r"####\s*([^\n]+)")


def extract_gsm8k(text: str) -> str | None:
    matches = _GSM8K_ANSWER.findall(text)
    return matches[-1].strip() if matches else None


_CHOICE_PATTERNS = (
    re.compile(r"answer\s*(?:is|:)\s*\(?\s*([A-J])\s*\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"\\boxed\{\s*\(?\s*(?:\\text\{)?\s*([A-J])\s*\}?\s*\)?\s*\}"),
    re.compile(r"\(([A-J])\)"),
    # Horizontal space only: `\s*` here would rescan every run of blank lines from each of its lines.
    re.compile(r"^[ \t]*([A-J])[ \t]*[.)]?[ \t]*$", re.MULTILINE),
)


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter A-J (upper case)."""
    for pattern in _CHOICE_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return matches[-1].upper()
    return None


# Numbers as people write them: -1,234.5, 3/4, .5, 1e-3 (thousands groups only of three digits).
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def extract_last_number(text: str) -> str | None:
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    return matches[-1].replace(",", "")


_EXTRACTORS = {
    "answer_is": extract_answer_is,
    "gsm8k": extract_gsm8k,
    "choice": extract_choice,
    "last_number": extract_last_number,
}


def extract_answer(
    text: str,
    strategies: Sequence[str] = STYLE_STRATEGIES["math"],
    boxed: str = "last",
    last_number_fallback: bool = False,
) -> str | None:
    """The final answer of a generation, or None when no strategy finds one.

    Args:
        text: the whole generation.
        strategies: names from EXTRACTION_STRATEGIES, tried in order (a style from
            STYLE_STRATEGIES, e.g. STYLE_STRATEGIES["gsm8k"]).
        boxed: "last" (default) or "first" box when several are present.
        last_number_fallback: append `last_number` when not already among the strategies.
    """
    if text is None:
        return None
    region = answer_region(text)
    order = list(strategies)
    if last_number_fallback and "last_number" not in order:
        order.append("last_number")
    for strategy in order:
        if strategy == "boxed":
            answer = extract_boxed(region, boxed)
        elif strategy in _EXTRACTORS:
            answer = _EXTRACTORS[strategy](region)
        else:
            raise ValueError(f"unknown extraction strategy {strategy!r} (one of {', '.join(EXTRACTION_STRATEGIES)})")
        if answer:
            return answer
    return None


_R1_FORMAT = re.compile(r"\A\s*<think>(?P<think>.*?)</think>\s*(?P<answer>.*?)\s*\Z", re.DOTALL)


def follows_think_format(text: str, require_answer_tags: bool = False) -> bool:
    """R1-Zero format: exactly one `<think>...</think>` block first, non-empty reasoning, then a
    non-empty answer (wrapped in `<answer>...</answer>` when require_answer_tags)."""
    if text is None:
        return False
    match = _R1_FORMAT.match(text)
    if match is None or text.count("<think>") != 1 or text.count("</think>") != 1:
        return False
    if not match.group("think").strip():
        return False
    answer = match.group("answer")
    if require_answer_tags:
        tagged = re.fullmatch(r"<answer>(.*?)</answer>", answer, re.DOTALL)
        return bool(tagged and tagged.group(1).strip()) and answer.count("<answer>") == 1
    return bool(answer) and "<think>" not in answer
