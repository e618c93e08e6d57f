"""Adversarial answers: deep nesting, huge values, long lists, and a fuzz over every public entry
point of megatron_recipes.rewards (real worker processes, real sympy). Nothing may raise, and
nothing may hang: each call runs under a hang guard far above its expected cost (the guard only
turns a hang into a failure; it is not a speed measurement)."""

import ast
import random
import threading
from pathlib import Path

import pytest

from megatron_recipes.rewards import (
    EQUAL,
    NOT_EQUAL,
    REWARD_FUNCTIONS,
    STYLE_STRATEGIES,
    UNPARSEABLE_REFERENCE,
    AnswerChecker,
    DeadlineWorkerPool,
    answers_equal,
    extract_answer,
    find_boxed,
    follows_think_format,
    normalize_answer,
    parse_number,
    reference_answer,
    reward_inputs,
)
from megatron_recipes.rewards.equivalence import CheckOptions, cheap_verdict
from megatron_recipes.rewards.normalization import normalize_text
from megatron_recipes.rewards.structure import compare_structures, parse_structure

HANG_GUARD_S = 120.0
VERDICTS = {EQUAL, NOT_EQUAL, UNPARSEABLE_REFERENCE}


def guarded(function, *args, **kwargs):
    """Call function in a thread; fail if it raises or has not returned within HANG_GUARD_S."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - the point is to see every escape
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"{function.__name__} did not return within {HANG_GUARD_S} s"
    if "error" in outcome:
        raise AssertionError(f"{function.__name__} raised {type(outcome['error']).__name__}: {outcome['error']}")
    return outcome["value"]


@pytest.fixture(scope="module")
def pool():
    with DeadlineWorkerPool(num_workers=2, task_timeout_s=3.0) as workers:
        yield workers


@pytest.fixture()
def checker(pool):
    return AnswerChecker(pool=pool)


DEEP = [
    "(" * 1000 + "1" + ")" * 1000,
    r"\{" * 600 + "1" + r"\}" * 600,
    r"\{" * 1000 + r"\}" * 1000,
    "[" * 1000 + "1" + "]" * 1000,
    "{" * 5000 + "1" + "}" * 5000,
    r"\frac{" * 600 + "1}{2}" * 600,
    r"\sqrt{" * 1000 + "2" + "}" * 1000,
    r"\left(" * 800 + "x" + r"\right)" * 800,
    r"\boxed{" * 1000 + "1" + "}" * 1000,
    r"\text{" * 1000 + "a" + "}" * 1000,
    "2^{" * 1000 + "2" + "}" * 1000,
    "(1," * 1000 + "1" + ")" * 1000,
    r"x \in " * 1000 + "[0,1]",
]


@pytest.mark.parametrize("index", range(len(DEEP)))
def test_deeply_nested_answers_never_raise(checker, index):
    deep = DEEP[index]
    verdicts = guarded(checker.check_batch, [deep, "1", deep], ["1", deep, deep])
    assert verdicts[0] == NOT_EQUAL
    assert verdicts[1] in (NOT_EQUAL, UNPARSEABLE_REFERENCE)
    assert verdicts[2] in VERDICTS
    assert guarded(answers_equal, deep, "1") is False
    for name in ("math_accuracy", "gsm8k_accuracy"):
        rewards = guarded(REWARD_FUNCTIONS[name], [rf"\boxed{{{deep}}}", "\\boxed{1}"], ["1", deep], checker=checker)
        assert rewards[0] == 0.0 and rewards[1] in (0.0, None)


def test_a_deep_reference_is_unparseable_not_an_error(checker):
    deep = "(" * 1000 + "1" + ")" * 1000
    assert guarded(checker.check_batch, ["1"], [deep]) == [UNPARSEABLE_REFERENCE]
    assert guarded(REWARD_FUNCTIONS["math_accuracy"], [r"\boxed{1}"], [deep], checker=checker) == [None]


@pytest.mark.parametrize(
    "prediction, reference",
    [
        ("(x+1)^{100}+1", "(x+1)^{100}"),
        ("(x+1)^{100}", "(x+1)^{100}+1"),
        ("(2x+3)^{80}+5", "(3+2x)^{80}"),
        ("2^{x+100}+1", "2^{x+100}"),
        (r"(x^2+y^2)^{60}+1", r"(y^2+x^2)^{60}"),
        (r"x^{10}+10^{-30}", r"x^{10}"),
        (r"(\sqrt{2}+1)^{100}+1", r"(\sqrt{2}+1)^{100}"),
        (r"\binom{200}{100}x+1", r"\binom{200}{100}x"),
    ],
)
def test_expressions_that_differ_by_a_constant_are_not_equal(checker, prediction, reference):
    assert checker.check_batch([prediction, reference], [reference, prediction]) == [NOT_EQUAL, NOT_EQUAL]


def test_huge_but_equal_expressions_stay_equal(checker):
    pairs = [
        ("(x+1)^{100}+1", "1+(1+x)^{100}"),
        ("(x+1)^{30}", "(x+1)^{15}(x+1)^{15}"),
        (r"2^{x+100}", r"2^{100}\cdot 2^{x}"),
    ]
    assert checker.check_batch([p for p, _ in pairs], [r for _, r in pairs]) == [EQUAL] * len(pairs)


def test_reversed_long_lists_are_matched_in_linear_work():
    numbers = [str(n) for n in range(2000)]
    forward, backward = ", ".join(numbers), ", ".join(reversed(numbers))
    calls = []

    def counting_equal(predicted, reference):
        calls.append(1)
        return predicted == reference

    assert compare_structures(parse_structure(forward), parse_structure(backward), counting_equal) is True
    assert len(calls) <= 2 * len(numbers)
    assert cheap_verdict(forward, backward, CheckOptions()) is True
    assert cheap_verdict(forward, ", ".join(reversed(numbers[1:] + ["2000"])), CheckOptions()) is False


def test_long_lists_through_the_checker(checker, pool):
    numbers = [str(n) for n in range(2000)]
    forward, backward = ", ".join(numbers), ", ".join(reversed(numbers))
    radicals = [rf"\sqrt{{{n}}}" for n in range(2, 300)]
    powers = [rf"{n}^{{1/2}}" for n in range(2, 300)]
    predictions = [forward, ", ".join(radicals), ", ".join(powers), ", ".join(radicals[:20])]
    references = [
        backward,
        ", ".join(reversed(radicals)),
        ", ".join(reversed(radicals)),
        ", ".join(reversed(powers[:20])),
    ]
    verdicts = guarded(checker.check_batch, predictions, references)
    # Same spellings are matched by exact keys in the caller, whatever the order.
    assert verdicts[:2] == [EQUAL, EQUAL]
    # 300 leaves in other spellings: beyond the caller's budget, so a worker decides under its
    # deadline (equal if it finishes in time, not equal if it is cut off).
    assert verdicts[2] in (EQUAL, NOT_EQUAL)
    assert verdicts[3] == EQUAL


def test_answers_that_are_not_strings_are_read_as_written(checker):
    assert checker.check_batch([72, "0.5", 3], ["72", 0.5, "4"]) == [EQUAL, EQUAL, NOT_EQUAL]


# ---------------------------------------------------------------------------------------------
# Fuzz: random and adversarial strings into every public entry point.
# ---------------------------------------------------------------------------------------------

_TOKENS = (
    list("0123456789+-*/^_=<>(),.[]{}|!'xyzabnie ")
    + [r"\frac", r"\sqrt", r"\pi", r"\infty", r"\{", r"\}", r"\left(", r"\right)", r"\cup", r"\pm", r"\leq"]
    + [r"\geq", r"\text{", r"\boxed{", r"\%", "%", "$", r"\cdot", r"\times", r"\circ", "####", "<think>"]
    + ["</think>", "<answer>", "</answer>", "The answer is", r"\begin{pmatrix}", r"\end{pmatrix}", "&", r"\\"]
    + [r"\in", r"\mathbb{R}", r"\emptyset", "\u03c0", "\u221a", "\u00bd", "\x00", "\udcff", "10^{", "e-", "1,000"]
)

ADVERSARIAL = DEEP + [
    "(" * 100000,
    ")" * 100000,
    "-" * 10000 + "1",
    "1" * 100000,
    "9" * 5000,
    "1/" * 5000 + "1",
    "x^" * 3000 + "2",
    r"10^{10^{10^{10}}}",
    r"(10^{10^{10}})!",
    "100000!",
    r"\pm" * 50 + "1",
    r"1\pm2\pm3\pm4\pm5\pm6\pm7",
    "x=" * 1000 + "1",
    "=" * 1000,
    "<" * 1000,
    "1 < " * 1000 + "x",
    r"x \geq " * 500 + "1",
    r"\begin{pmatrix}" + r"\\".join("&".join("1" for _ in range(60)) for _ in range(60)) + r"\end{pmatrix}",
    "\\" * 1000,
    "$" * 1001,
    "<think>" * 1000 + "</think>" * 999,
    "####" * 1000,
    "The answer is " * 1000,
    "0." + "3" * 10000,
    "1e99999",
    "1e-99999",
    r"1.5\times10^{99999}",
    r"\overline{" * 100,
    "a" * 100000,
    r"\infty - \infty",
    "0/0",
    r"\frac{0}{0}",
    r"\log 0",
    "1/0",
    "zoo",
    "nan",
    "__import__('os').system('echo pwned')",
    "lambda: 1",
    "().__class__.__bases__[0].__subclasses__()",
    r"x \cup " * 1000,
    ", " * 5000,
    r"\%" * 1000,
    r"\\" * 1000,
    "\u03c0\u221a\u221e\u00b1\u2264\u2265 \u00bd",
    "1,000," * 1000,
    ", ".join(str(n) for n in range(3000)),
    "; ".join(rf"\frac{{{n}}}{{{n + 1}}}" for n in range(1500)),
    r"\{" + ", ".join(str(n) for n in range(2000)) + r"\}",
    r"\boxed{" * 3 + "}" * 2,
    r"\boxed",
    r"\fbox{" * 500,
    "",
    " ",
    "\n" * 1000,
    "\x00" * 100,
    "\udcff\udcfe",
    r"\text{" + "x" * 50000 + "}",
    r"5\text{ " + "a" * 20000 + "}",
    r"x^{123456789}",
    r"\sin(" * 300 + "x" + ")" * 300,
    r"\left|" * 300 + "x" + r"\right|" * 300,
    "|" * 999,
    r"\sqrt[" * 200 + "2" + "]{2}" * 200,
    r"\frac{1}{2}\%" * 500,
    r"0.\overline{" + "9" * 5000 + "}",
    "12_" * 1000,
    r"1011_{" * 500 + "2" + "}" * 500,
]


def _random_strings(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_TOKENS) for _ in range(rng.randint(0, 40))) for _ in range(count)]


FUZZ_INPUTS = ADVERSARIAL + _random_strings(400, seed=1234)
# References a fuzzed prediction is checked against (and fuzzed references are checked with).
ANCHORS = ["1", r"\frac{1}{2}", "x^2+1", r"[0,\infty)", r"\{1,2\}", "2x-y+1=0", r"50\%"]


def test_fuzz_pure_entry_points():
    for text in FUZZ_INPUTS:
        for style in STYLE_STRATEGIES.values():
            answer = guarded(extract_answer, text, style, last_number_fallback=True)
            assert answer is None or isinstance(answer, str)
        assert isinstance(guarded(find_boxed, text), list)
        assert guarded(follows_think_format, text) in (True, False)
        assert guarded(follows_think_format, text, require_answer_tags=True) in (True, False)
        normalized = guarded(normalize_answer, text)
        assert isinstance(normalized, str)
        assert isinstance(guarded(normalize_text, text), str)
        for candidate in (text, normalized):
            value = guarded(parse_number, candidate)
            assert value is None or value.denominator != 0
        reference = guarded(reference_answer, text)
        assert reference is None or isinstance(reference, str)
        assert guarded(cheap_verdict, normalized, "1", CheckOptions()) in (True, False, None)


def test_fuzz_checker_and_rewards(checker):
    predictions = [text for text in FUZZ_INPUTS for _ in ANCHORS]
    references = [anchor for _ in FUZZ_INPUTS for anchor in ANCHORS]
    assert set(guarded(checker.check_batch, predictions, references)) <= VERDICTS
    assert set(guarded(checker.check_batch, references, predictions)) <= VERDICTS
    assert set(guarded(checker.check_batch, FUZZ_INPUTS, FUZZ_INPUTS)) <= VERDICTS
    completions = [f"Thus $\\boxed{{{text}}}$" for text in FUZZ_INPUTS] + FUZZ_INPUTS
    for name, reward in sorted(REWARD_FUNCTIONS.items()):
        # Rewards that read the questions (language consistency) get hostile questions too.
        asks = "questions" in reward_inputs(name)
        extra = {"questions": completions[::-1]} if asks else {}
        rewards = guarded(
            reward, completions, [ANCHORS[i % len(ANCHORS)] for i in range(len(completions))], checker=checker, **extra
        )
        # Shares (language consistency, reference overlap) lie in [0, 1]; None = ungradable.
        assert len(rewards) == len(completions) and all(r is None or 0.0 <= r <= 1.0 for r in rewards), name
        extra = {"questions": FUZZ_INPUTS} if asks else {}
        rewards = guarded(reward, ["\\boxed{1}"] * len(FUZZ_INPUTS), FUZZ_INPUTS, checker=checker, **extra)
        assert len(rewards) == len(FUZZ_INPUTS) and all(r is None or 0.0 <= r <= 1.0 for r in rewards), name
    for text in ADVERSARIAL[:40]:
        assert guarded(answers_equal, text, "1") in (True, False)
        assert guarded(answers_equal, "1", text) in (True, False)


# ---------------------------------------------------------------------------------------------
# Imports of the package: at module top, and no cycle between its modules.
# ---------------------------------------------------------------------------------------------

REWARDS_DIR = Path(__file__).resolve().parents[3] / "megatron_recipes" / "rewards"


def _project_imports(tree: ast.AST, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module == "megatron_recipes.rewards":
            found.update(a.name for a in node.names if (REWARDS_DIR / f"{a.name}.py").exists())
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("megatron_recipes.rewards"):
            found.add(node.module.rsplit(".", 1)[-1])
        elif isinstance(node, ast.Import):
            found.update(a.name.rsplit(".", 1)[-1] for a in node.names if a.name.startswith("megatron_recipes.rewards"))
    return found


def test_rewards_modules_import_at_top_without_cycles():
    graph = {}
    for path in sorted(REWARDS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        everywhere, top = _project_imports(tree, False), _project_imports(tree, True)
        assert everywhere == top, f"{path.name} imports {sorted(everywhere - top)} inside a function"
        graph[path.stem] = top
    visiting, done = set(), set()

    def visit(module, trail):
        assert module not in visiting, f"import cycle: {' -> '.join(trail + [module])}"
        if module in done:
            return
        visiting.add(module)
        for imported in graph.get(module, ()):
            visit(imported, trail + [module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])
