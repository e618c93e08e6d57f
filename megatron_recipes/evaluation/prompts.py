"""Prompt styles for evaluation. The exemplars are our own problems, written for this project in
the shape of the standard few-shot prompts (8-shot chain-of-thought for GSM8K, 4-shot for MATH
with boxed answers).

    PROMPT_STYLES: name -> PromptStyle(build(question) -> prompt, extraction strategies,
                   stop strings, program_of_thought flag)
      gsm8k_cot_8shot   "Question: ... Answer: <reasoning> The answer is N." x8
      math_cot_4shot    "Problem: ... Solution: <reasoning> ... \\boxed{}" x4
      zero_shot         instruct format: reason step by step, final answer in \\boxed{}
      program_of_thought write a Python program that prints the answer; it is run in the sandbox

Cost: string formatting, linear in prompt length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from megatron_recipes.rewards.extraction import STYLE_STRATEGIES

GSM8K_EXEMPLARS = [
    (
        "A baker fills 6 trays with 12 rolls each and sells all but 9 rolls. How many rolls does she sell?",
        "She bakes 6 * 12 = 72 rolls. Selling all but 9 means she sells 72 - 9 = 63 rolls.",
        "63",
    ),
    (
        "Tom reads 15 pages on Monday and twice as many on Tuesday. How many pages does he read on the two days?",
        "On Tuesday he reads 2 * 15 = 30 pages. Together that is 15 + 30 = 45 pages.",
        "45",
    ),
    (
        "A bus ticket costs $3 and a train ticket costs $5. Maya buys 4 bus tickets and 2 train tickets. How much "
        "does she spend?",
        "Bus tickets cost 4 * 3 = 12 dollars. Train tickets cost 2 * 5 = 10 dollars. In total she spends 12 + 10 = 22 "
        "dollars.",
        "22",
    ),
    (
        "A garden has 5 rows of tulips with 8 tulips per row. Rabbits eat 7 tulips. How many tulips are left?",
        "There are 5 * 8 = 40 tulips. After the rabbits eat 7, there are 40 - 7 = 33 tulips left.",
        "33",
    ),
    (
        "Lena saves $20 every week. How many weeks does she need to save $180?",
        "Each week adds 20 dollars, so she needs 180 / 20 = 9 weeks.",
        "9",
    ),
    (
        "A library had 240 books. It gave away a quarter of them and then bought 35 new ones. How many books does it "
        "have now?",
        "A quarter of 240 is 240 / 4 = 60 books, leaving 240 - 60 = 180. After buying 35 more it has 180 + 35 = 215 "
        "books.",
        "215",
    ),
    (
        "Three friends share 54 stickers equally, and then each gives 4 stickers to a sibling. How many stickers does "
        "each friend keep?",
        "Each friend first gets 54 / 3 = 18 stickers. After giving away 4, each keeps 18 - 4 = 14 stickers.",
        "14",
    ),
    (
        "A car travels 60 km per hour for 3 hours and then 40 km per hour for 2 hours. How far does it travel?",
        "The first part covers 60 * 3 = 180 km and the second 40 * 2 = 80 km, so it travels 180 + 80 = 260 km.",
        "260",
    ),
]

MATH_EXEMPLARS = [
    (
        "Find the domain of $f(x) = \\sqrt{x - 3} + \\frac{1}{x - 7}$.",
        "The square root needs $x - 3 \\ge 0$, so $x \\ge 3$. The fraction needs $x \\ne 7$. The domain is $[3, 7) "
        "\\cup (7, \\infty)$.",
        "[3,7) \\cup (7,\\infty)",
    ),
    (
        "If $3a + 2b = 12$ and $a - b = -1$, what is $a$?",
        "From the second equation $b = a + 1$. Substituting, $3a + 2a + 2 = 12$, so $5a = 10$ and $a = 2$.",
        "2",
    ),
    (
        "Simplify $\\frac{\\sqrt{50}}{\\sqrt{8}}$.",
        "We have $\\frac{\\sqrt{50}}{\\sqrt{8}} = \\sqrt{\\frac{50}{8}} = \\sqrt{\\frac{25}{4}} = \\frac{5}{2}$.",
        "\\frac{5}{2}",
    ),
    (
        "Two fair six-sided dice are rolled. What is the probability that the sum is 9?",
        "The pairs summing to 9 are $(3,6), (4,5), (5,4), (6,3)$: 4 of the 36 equally likely outcomes, so the "
        "probability is $\\frac{4}{36} = \\frac{1}{9}$.",
        "\\frac{1}{9}",
    ),
]

ZERO_SHOT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PROGRAM_INSTRUCTION = (
    "Write a Python program that solves the problem and prints only the final answer on its last line. "
    "Put the program in a ```python code block."
)


@dataclass(frozen=True)
class PromptStyle:
    name: str
    build: Callable[[str], str]
    extraction: tuple[str, ...]
    stop: tuple[str, ...] = ()
    program_of_thought: bool = False


def _gsm8k_cot(question: str) -> str:
    shots = "".join(
        f"Question: {q}\nAnswer: {reasoning} The answer is {answer}.\n\n" for q, reasoning, answer in GSM8K_EXEMPLARS
    )
    return f"{shots}Question: {question}\nAnswer:"


def _math_cot(question: str) -> str:
    shots = "".join(
        f"Problem:\n{q}\n\nSolution:\n{reasoning}\nFinal Answer: The final answer is $\\boxed{{{answer}}}$.\n\n"
        for q, reasoning, answer in MATH_EXEMPLARS
    )
    return f"{shots}Problem:\n{question}\n\nSolution:\n"


def _zero_shot(question: str) -> str:
    return f"User: {question}\n{ZERO_SHOT_INSTRUCTION}\n\nAssistant:"


def _program(question: str) -> str:
    return f"User: {question}\n{PROGRAM_INSTRUCTION}\n\nAssistant:"


PROMPT_STYLES: dict[str, PromptStyle] = {
    "gsm8k_cot_8shot": PromptStyle("gsm8k_cot_8shot", _gsm8k_cot, STYLE_STRATEGIES["gsm8k"], stop=("\n\nQuestion:",)),
    "math_cot_4shot": PromptStyle("math_cot_4shot", _math_cot, STYLE_STRATEGIES["math"], stop=("\n\nProblem:",)),
    "zero_shot": PromptStyle("zero_shot", _zero_shot, STYLE_STRATEGIES["math"], stop=("\nUser:",)),
    "program_of_thought": PromptStyle("program_of_thought", _program, (), stop=("\nUser:",), program_of_thought=True),
}


def get_prompt_style(name: str) -> PromptStyle:
    try:
        return PROMPT_STYLES[name]
    except KeyError:
        raise KeyError(f"unknown prompt style {name!r}; one of {', '.join(PROMPT_STYLES)}") from None
