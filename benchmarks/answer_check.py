"""Answer checking side by side with math-verify: accuracy on the labelled suite, and checks per
second per core on a realistic mix.

    python benchmarks/answer_check.py [--suite tests/assets/answer_pairs.jsonl] [--pairs 3000] [--seed 0]

Accuracy: every pair of the labelled suite (MATH/GSM8K answer styles, `tests/assets/answer_pairs.jsonl`)
is checked in both orders by both checkers: ours through `AnswerChecker.check_batch`, math-verify
through `verify(parse(reference), parse(prediction))` (an answer is wrapped in `$...$`; a solution
with `\\boxed{}` or `####` is parsed as it is). Printed per side: accuracy, false "equal" (labelled
not equal, judged equal), misses, pairs whose verdict changes when the two sides are swapped, and
accuracy per category.

Speed: the mix imitates what a GRPO step on MATH/GSM8K-style problems sees: one reference per group and
many completions, about half right (in varied spellings: \\dfrac vs /, decimals, \\left(, units,
reordered sets, `x = ...`), half wrong (near misses: another integer, a sign, an off-by-one
exponent), over answer kinds weighted like MATH's test set (integers most, then fractions,
radicals, pi, expressions in a variable, tuples, intervals, words). Completions are short
chain-of-thought texts ending in `\\boxed{}`, so extraction is timed too. Per-core figure: checks
divided by the CPU seconds of every process involved (ours: the caller plus its one sympy worker;
math-verify: the caller).

Both sides do the same work (the same pairs, counted and printed). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_recipes.rewards import EQUAL, DeadlineWorkerPool, extract_answer, get_reward  # noqa: E402
from megatron_recipes.rewards.equivalence import AnswerChecker  # noqa: E402

DEFAULT_SUITE = Path(__file__).resolve().parents[1] / "tests" / "assets" / "answer_pairs.jsonl"

# (reference, [equivalent spellings], [wrong answers]) families; the generator fills numbers in.


def _families(rng: random.Random):
    a = rng.randint(2, 999)
    rng.randint(2, 97)  # a draw kept so the generated suite stays the one earlier figures used
    q = rng.choice([3, 7, 9, 11, 13, 17])
    p = rng.choice([x for x in range(1, 31) if x % q])
    n = rng.choice([x for x in range(2, 51) if x != p])
    k = rng.randint(2, 9)
    return [
        # weight, reference, right spellings, wrong answers
        (30, str(a), [str(a), f"{a}.0", f"\\text{{{a}}}", f"{a} \\text{{ cm}}"], [str(a + 1), str(-a), str(a * 10)]),
        (
            8,
            f"{a:,}".replace(",", "{,}") if a > 999 else str(a * 1000),
            [str(a * 1000) if a <= 999 else str(a), f"{a * 1000:,}"],
            [str(a * 1000 + 1)],
        ),
        (
            14,
            f"\\frac{{{p}}}{{{q}}}",
            [f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}", f"\\tfrac{{{p}}}{{{q}}}"],
            [f"\\frac{{{q}}}{{{p}}}", f"\\frac{{{p + 1}}}{{{q}}}", f"{p / q:.1f}", f"{p / q + 0.01:.3f}"],
        ),
        (
            6,
            f"\\frac{{1}}{{{2**k}}}",
            [f"{1 / 2**k}", f"2^{{-{k}}}", f"\\frac{{1}}{{2^{k}}}"],
            [f"\\frac{{1}}{{2^{{{k + 1}}}}}"],
        ),
        (
            10,
            f"{k}\\sqrt{{{q}}}",
            [f"{k}\\sqrt{q}", f"\\sqrt{{{k * k * q}}}", f"{k} \\sqrt{{{q}}}"],
            [f"{k + 1}\\sqrt{{{q}}}", f"\\sqrt{{{k * q}}}"],
        ),
        (
            8,
            f"\\frac{{{k}\\pi}}{{{q}}}",
            [f"\\frac{{{k}}}{{{q}}}\\pi", f"{k}\\pi/{q}"],
            [f"\\frac{{{k}\\pi}}{{{q + 1}}}", f"{k}\\pi"],
        ),
        (
            8,
            f"x^2+{2 * k}x+{k * k}",
            [f"(x+{k})^2", f"x^{{2}} + {2 * k} x + {k * k}"],
            [f"(x-{k})^2", f"x^2+{k}x+{k * k}"],
        ),
        (6, f"({p},{n})", [f"\\left( {p}, {n} \\right)", f"({p}, {n})"], [f"({n},{p})", f"[{p},{n}]"]),
        (4, f"[{-p},{n})", [f"[{-p}, {n})", f"x \\in [{-p},{n})"], [f"({-p},{n})", f"[{-p},{n}]"]),
        (3, f"\\{{{p},{n}\\}}", [f"\\{{{n},{p}\\}}", f"{n}, {p}"], [f"\\{{{p}\\}}"]),
        (3, f"\\pm {n}", [f"{n}, -{n}", f"\\pm{n}"], [str(n)]),
        (3, "\\text{(C)}", ["(C)", "\\text{(C)}"], ["(B)"]),
        (2, f"{n}^\\circ", [str(n), f"{n}^{{\\circ}}", f"{n} degrees"], [str(n + 90)]),
        (2, f"{p}\\%", [str(p), f"{p}\\%", f"{p}%"], [str(p + 10)]),
    ]


def build_mix(count: int, seed: int) -> list[tuple[str, str, bool]]:
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < count:
        families = _families(rng)
        weights = [f[0] for f in families]
        _, reference, right, wrong = rng.choices(families, weights)[0]
        correct = rng.random() < 0.5
        answer = rng.choice(right if correct else wrong)
        steps = rng.randint(2, 6)
        reasoning = " ".join(
            f"Step {i}: we compute {rng.randint(1, 99)} + {rng.randint(1, 99)} and simplify." for i in range(steps)
        )
        completion = f"{reasoning}\nTherefore the final answer is $\\boxed{{{answer}}}$."
        pairs.append((completion, reference, correct))
    return pairs


def _cpu_seconds(processes) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except Exception:
            pass
    return total


def run_ours(pairs, group_size: int) -> dict:
    pool = DeadlineWorkerPool(num_workers=1, task_timeout_s=5.0)
    pool.warm_up()
    workers = [psutil.Process(w.process.pid) for w in pool._all]
    me = psutil.Process()
    checker = AnswerChecker(pool=pool)
    reward = get_reward("math_accuracy")
    cpu_before = _cpu_seconds([me, *workers])
    wall = time.perf_counter()
    rewards = []
    for start in range(0, len(pairs), group_size):
        batch = pairs[start : start + group_size]
        rewards += reward([c for c, _, _ in batch], [r for _, r, _ in batch], checker=checker)
    wall = time.perf_counter() - wall
    cpu = _cpu_seconds([me, *workers]) - cpu_before
    pool.close()
    agree = sum((r == 1.0) == truth for r, (_, _, truth) in zip(rewards, pairs))
    return {
        "checks_per_cpu_second": round(len(pairs) / cpu, 1),
        "checks_per_wall_second": round(len(pairs) / wall, 1),
        "agreement_with_labels": round(agree / len(pairs), 4),
        "symbolic_tasks": pool.stats.tasks,
        "timeouts": pool.stats.timeouts,
    }


def _math_verify():
    try:
        from math_verify import parse, verify  # noqa: PLC0415  optional peer: the dev extra installs it
    except ImportError:
        return None
    return parse, verify


def run_math_verify(pairs) -> dict:
    functions = _math_verify()
    if functions is None:
        return {"error": "math-verify is not installed (pip install 'math-verify[antlr4_9_3]')"}
    parse, verify = functions
    start_cpu = time.process_time()
    wall = time.perf_counter()
    verdicts = []
    for completion, reference, _ in pairs:
        verdicts.append(bool(verify(parse(f"${reference}$"), parse(completion))))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - start_cpu
    agree = sum(v == truth for v, (_, _, truth) in zip(verdicts, pairs))
    return {
        "checks_per_cpu_second": round(len(pairs) / cpu, 1),
        "checks_per_wall_second": round(len(pairs) / wall, 1),
        "agreement_with_labels": round(agree / len(pairs), 4),
    }


# ---------------------------------------------------------------------------------------------
# Accuracy on the labelled suite
# ---------------------------------------------------------------------------------------------


def load_suite(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def suite_figures(suite: list[dict], forward: list[bool], swapped: list[bool]) -> dict:
    """Accuracy figures from one side's verdicts (True = judged equal) in both orders."""
    right = [verdict == pair["equal"] for pair, verdict in zip(suite, forward)]
    per_category: dict[str, list[int]] = {}
    for pair, correct in zip(suite, right):
        tally = per_category.setdefault(pair["category"], [0, 0])
        tally[0] += correct
        tally[1] += 1
    return {
        "pairs_checked": len(forward) + len(swapped),
        "accuracy": round(sum(right) / len(suite), 4),
        "accuracy_swapped": round(sum(v == p["equal"] for p, v in zip(suite, swapped)) / len(suite), 4),
        "false_equal": sum(v and not p["equal"] for p, v in zip(suite, forward)),
        "missed_equal": sum(p["equal"] and not v for p, v in zip(suite, forward)),
        "asymmetric": sum(a != b for a, b in zip(forward, swapped)),
        "per_category": {name: round(c / n, 3) for name, (c, n) in sorted(per_category.items())},
    }


def suite_ours(suite: list[dict]) -> dict:
    with DeadlineWorkerPool(num_workers=2, task_timeout_s=3.0) as pool:
        pool.warm_up()
        checker = AnswerChecker(pool=pool)
        predictions = [pair["prediction"] for pair in suite]
        references = [pair["reference"] for pair in suite]
        forward = [v == EQUAL for v in checker.check_batch(predictions, references)]
        swapped = [v == EQUAL for v in checker.check_batch(references, predictions)]
        figures = suite_figures(suite, forward, swapped)
        figures["timeouts"] = pool.stats.timeouts
    return figures


def suite_math_verify(suite: list[dict]) -> dict:
    functions = _math_verify()
    if functions is None:
        return {"error": "math-verify is not installed (pip install 'math-verify[antlr4_9_3]')"}
    parse, verify = functions

    def read(text: str):
        return parse(text if "\\boxed" in text or "####" in text else f"${text}$")

    def judged_equal(prediction: str, reference: str) -> bool:
        try:
            return bool(verify(read(reference), read(prediction)))
        except Exception:  # a crash of the peer on a pair counts as "not equal"
            return False

    forward = [judged_equal(pair["prediction"], pair["reference"]) for pair in suite]
    swapped = [judged_equal(pair["reference"], pair["prediction"]) for pair in suite]
    return suite_figures(suite, forward, swapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="labelled pairs (JSON lines)")
    parser.add_argument("--pairs", type=int, default=3000, help="pairs of the speed mix (0: skip the speed part)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group-size", type=int, default=64, help="completions per reward call (a GRPO group)")
    args = parser.parse_args()

    suite = load_suite(args.suite)
    category_counts = Counter(pair["category"] for pair in suite)
    report = {
        "benchmark": "answer_check",
        "cores_visible": os.cpu_count(),
        "suite": {
            "path": str(args.suite),
            "pairs": len(suite),
            "labelled_equal": sum(pair["equal"] for pair in suite),
            "categories": len(category_counts),
            "ours": suite_ours(suite),
            "math_verify": suite_math_verify(suite),
        },
    }
    if args.pairs > 0:
        pairs = build_mix(args.pairs, args.seed)
        ours = run_ours(pairs, args.group_size)
        peer = run_math_verify(pairs)
        ratio = None
        if "checks_per_cpu_second" in peer:
            ratio = round(ours["checks_per_cpu_second"] / peer["checks_per_cpu_second"], 2)
        report["speed"] = {
            "pairs": len(pairs),
            # Ours caches verdicts per (answer, reference) as in a GRPO group; math-verify does not.
            "distinct_answer_reference_pairs": len({(extract_answer(c), r) for c, r, _ in pairs}),
            "ours": ours,
            "math_verify": peer,
            "speedup_per_core": ratio,
            "note": "per-core = checks / CPU seconds of all processes involved; machine may be shared",
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
