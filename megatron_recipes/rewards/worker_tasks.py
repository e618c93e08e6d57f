"""The tasks a symbolic worker process runs (this module is the worker's entry point).

`DeadlineWorkerPool` starts `python -m megatron_recipes.rewards.worker_tasks`; the module imports
sympy (through `symbolic`) and warms it up once, at start-up, before the worker reports ready
(the pool's start-up timeout covers that, not a task's deadline), and then serves
`handle_worker_task` over the pool's pipe protocol (`worker_pool.serve`). The caller's side never
imports this module, so the caller never imports sympy.

Tasks (JSON objects):
  {"op": "compare", "predicted", "reference", "options"}  -> bool: the structure walk of
      `equivalence` with sympy leaves (`symbolic.symbolic_scalar_equal`)
  {"op": "parse_reference", "reference"}                  -> bool: every leaf readable (by sympy,
      or plain text such as 2:30 that is compared as written)
  {"op": "sleep", "seconds"}, {"op": "evaluate", "expression"}  (tests of the deadline machinery)

Cost: whatever sympy needs, cut off by the pool's deadline (the pool kills a late worker).
"""

from __future__ import annotations

import re
import time
from typing import Any

from megatron_recipes.rewards import symbolic
from megatron_recipes.rewards.equivalence import (
    CheckOptions,
    answer_too_complex,
    scalar_rule,
    structure_of,
)
from megatron_recipes.rewards.normalization import base_number, is_text_answer, parse_number, percent_readings
from megatron_recipes.rewards.structure import compare_structures, leaves
from megatron_recipes.rewards.worker_pool import serve

_PLAIN = re.compile(r"[A-Za-z0-9 :'.,+\-*/()]+")


def _compare(predicted: str, reference: str, options: CheckOptions) -> bool:
    if answer_too_complex(predicted) or answer_too_complex(reference):
        return predicted == reference

    def symbolic_equal(predicted_leaf: str, reference_leaf: str) -> bool:
        return symbolic.symbolic_scalar_equal(
            predicted_leaf,
            reference_leaf,
            options.relative_tolerance,
            options.min_significant_digits,
            options.approximate_decimals,
        )

    return compare_structures(structure_of(predicted), structure_of(reference), scalar_rule(options, symbolic_equal))


def _reference_parses(reference: str) -> bool:
    if answer_too_complex(reference):
        return False
    for leaf in leaves(structure_of(reference)):
        reading = percent_readings(leaf)[0]
        if parse_number(reading) is not None or base_number(reading) is not None or is_text_answer(reading):
            continue
        try:
            symbolic.to_sympy(reading)
        except symbolic.Pathological:
            continue  # readable, only too big to evaluate: compared by identity
        except symbolic.ParseFailure:
            if not _plain_answer(reading):
                return False
    return True


def _plain_answer(text: str) -> bool:
    """A well-formed answer sympy has no reading for (a time 2:30, a ratio 3:4, a point A'): made
    of plain characters only (no LaTeX, balanced parentheses), so it is compared as written."""
    if not _PLAIN.fullmatch(text) or not re.search(r"[A-Za-z0-9]", text):
        return False
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def handle_worker_task(task: dict) -> Any:
    operation = task["op"]
    if operation == "compare":
        tolerance, approximate, min_digits = task["options"]
        return _compare(task["predicted"], task["reference"], CheckOptions(tolerance, approximate, min_digits))
    if operation == "parse_reference":
        return _reference_parses(task["reference"])
    if operation == "sleep":
        time.sleep(float(task["seconds"]))
        return True
    if operation == "evaluate":
        return str(symbolic.to_sympy(task["expression"]).doit())
    raise ValueError(f"unknown worker operation {operation!r}")


# One comparison of each common kind, run before the worker reports ready: sympy's first
# simplify/evalf/trig call and the first relational cost up to a second, which would otherwise be
# charged to the first real task's deadline.
_WARM_UP_PAIRS = (
    (r"\ln8", r"3\ln2"),
    (r"\sin^2x+\cos^2x", "1"),
    ("x^2+2x+1", "(x+1)^2"),
    (r"\frac{\sqrt3}{3}", "0.577"),
    ("x^2+y^2=25", "y^2+x^2=25"),
)


def warm_up() -> None:
    for predicted, reference in _WARM_UP_PAIRS:
        _compare(predicted, reference, CheckOptions())


if __name__ == "__main__":
    warm_up()
    serve(handle_worker_task)
