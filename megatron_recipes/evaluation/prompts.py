"""Prompt styles for evaluation, and few-shot exemplars.

    PROMPT_STYLES: name -> PromptStyle; style.build(problem, exemplars=None) -> prompt text
      few-shot chain-of-thought (exemplars: ours by default, or a file the user passes)
        gsm8k_cot_8shot    "Question: ... Answer: <reasoning> The answer is N."        (GSM8K-style)
        math_cot_4shot     "Problem: ... Solution: ... The final answer is $\\boxed{}$." (MATH, OCW)
        mc_cot_4shot       multiple choice: "... The answer is (B)."             (SAT, MMLU-STEM)
        zh_cot_4shot       Chinese: "问题：... 解答：... 所以答案是N。"   (CMATH, MGSM-zh, Gaokao-MathCloze)
        zh_mc_cot_4shot    Chinese multiple choice                                (Gaokao-MathQA)
      few-shot program-of-thought
        pal_4shot          programs that print the answer; run in the sandbox
      zero-shot instruct (DeepSeekMath-Instruct's "User: ...\\n\\nAssistant:" format)
        zero_shot          reason step by step, answer in \\boxed{} (letter for choices; a program
                           in a ```python block for code problems)
        program_of_thought write a program that prints the answer; it is run in the sandbox
        tool_integrated    multi-turn: the model writes ```python blocks, the sandbox's output is
                           fed back as ```output blocks, up to harness.tool_max_steps executions
      r1                   R1's template: reasoning inside <think></think>, then the answer inside
                           <answer></answer> (every problem kind)
      think                the R1 recipes' format (data/think_template.py): reasoning in <think>, the
                           answer after </think> (the R1 chain's held-out questions)

Exemplar files (`exemplars=PATH`): a .txt file is used verbatim as the few-shot prefix (so a
published prompt can be pasted as it is), the test problem follows in the style's format; a
.jsonl/.json file holds {"question", "solution", "answer"} records (optionally "choices": [...]),
written in the style's format. The default exemplars below are our own problems.

Cost: string formatting, linear in prompt length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from megatron_recipes.data.think_template import think_prompt
from megatron_recipes.evaluation.problems import (
    CHOICE_LETTERS,
    KIND_ANSWER,
    KIND_CHOICE,
    KIND_CODE,
    KINDS,
    TEST_FUNCTIONAL,
    DatasetError,
    Problem,
    field,
    read_rows,
)
from megatron_recipes.rewards.extraction import STYLE_STRATEGIES
from stack_common.errors import ConfigError

MODE_TEXT = "text"  # the generation is the answer
MODE_PROGRAM = "program"  # the generation is a program; what it prints is the answer
MODE_TOOL = "tool"  # generation and sandboxed execution alternate


@dataclass(frozen=True)
class Exemplar:
    question: str  # as the prompt shows it (choices included)
    solution: str  # reasoning, or the program for program-of-thought
    answer: str  # final answer (a letter for multiple choice)


FewShot = Sequence[Exemplar] | str  # exemplars, or a verbatim few-shot prefix


GSM8K_EXEMPLARS = (
    Exemplar(
        "A baker fills 6 trays with 12 rolls each and sells all but 9 rolls. How many rolls does she sell?",
        "She bakes 6 * 12 = 72 rolls. Selling all but 9 means she sells 72 - 9 = 63 rolls.",
        "63",
    ),
    Exemplar(
        "Tom reads 15 pages on Monday and twice as many on Tuesday. How many pages does he read on the two days?",
        "On Tuesday he reads 2 * 15 = 30 pages. Together that is 15 + 30 = 45 pages.",
        "45",
    ),
    Exemplar(
        (
            "A bus ticket costs $3 and a train ticket costs $5. Maya buys 4 bus tickets and 2 train tickets. How "
            "much does she spend?"
        ),
        (
            "Bus tickets cost 4 * 3 = 12 dollars. Train tickets cost 2 * 5 = 10 dollars. In total she spends 12 "
            "+ 10 = 22 dollars."
        ),
        "22",
    ),
    Exemplar(
        "A garden has 5 rows of tulips with 8 tulips per row. Rabbits eat 7 tulips. How many tulips are left?",
        "There are 5 * 8 = 40 tulips. After the rabbits eat 7, there are 40 - 7 = 33 tulips left.",
        "33",
    ),
    Exemplar(
        "Lena saves $20 every week. How many weeks does she need to save $180?",
        "Each week adds 20 dollars, so she needs 180 / 20 = 9 weeks.",
        "9",
    ),
    Exemplar(
        (
            "A library had 240 books. It gave away a quarter of them and then bought 35 new ones. How many books "
            "does it have now?"
        ),
        (
            "A quarter of 240 is 240 / 4 = 60 books, leaving 240 - 60 = 180. After buying 35 more it has 180 + "
            "35 = 215 books."
        ),
        "215",
    ),
    Exemplar(
        (
            "Three friends share 54 stickers equally, and then each gives 4 stickers to a sibling. How many "
            "stickers does each friend keep?"
        ),
        "Each friend first gets 54 / 3 = 18 stickers. After giving away 4, each keeps 18 - 4 = 14 stickers.",
        "14",
    ),
    Exemplar(
        "A car travels 60 km per hour for 3 hours and then 40 km per hour for 2 hours. How far does it travel?",
        "The first part covers 60 * 3 = 180 km and the second 40 * 2 = 80 km, so it travels 180 + 80 = 260 km.",
        "260",
    ),
)

MATH_EXEMPLARS = (
    Exemplar(
        "Find the domain of $f(x) = \\sqrt{x - 3} + \\frac{1}{x - 7}$.",
        (
            "The square root needs $x - 3 \\ge 0$, so $x \\ge 3$. The fraction needs $x \\ne 7$. The domain is "
            "$[3, 7) \\cup (7, \\infty)$."
        ),
        "[3,7) \\cup (7,\\infty)",
    ),
    Exemplar(
        "If $3a + 2b = 12$ and $a - b = -1$, what is $a$?",
        "From the second equation $b = a + 1$. Substituting, $3a + 2a + 2 = 12$, so $5a = 10$ and $a = 2$.",
        "2",
    ),
    Exemplar(
        "Simplify $\\frac{\\sqrt{50}}{\\sqrt{8}}$.",
        "We have $\\frac{\\sqrt{50}}{\\sqrt{8}} = \\sqrt{\\frac{50}{8}} = \\sqrt{\\frac{25}{4}} = \\frac{5}{2}$.",
        "\\frac{5}{2}",
    ),
    Exemplar(
        "Two fair six-sided dice are rolled. What is the probability that the sum is 9?",
        (
            "The pairs summing to 9 are $(3,6), (4,5), (5,4), (6,3)$: 4 of the 36 equally likely outcomes, so "
            "the probability is $\\frac{4}{36} = \\frac{1}{9}$."
        ),
        "\\frac{1}{9}",
    ),
)

MULTIPLE_CHOICE_EXEMPLARS = (
    Exemplar(
        "What is the value of $3^4 - 2^5$?\n(A) 47\n(B) 49\n(C) 51\n(D) 53",
        "$3^4 = 81$ and $2^5 = 32$, so the difference is $81 - 32 = 49$.",
        "B",
    ),
    Exemplar(
        "Which of the following numbers is prime?\n(A) 51\n(B) 57\n(C) 59\n(D) 63",
        "51 = 3 x 17, 57 = 3 x 19 and 63 = 7 x 9 are composite, while 59 has no divisor between 2 and 7.",
        "C",
    ),
    Exemplar(
        "A rectangle has a perimeter of 30 and a length of 9. What is its area?\n(A) 54\n(B) 45\n(C) 36\n(D) 81",
        "The width is 30 / 2 - 9 = 6, so the area is 9 x 6 = 54.",
        "A",
    ),
    Exemplar(
        "If $f(x) = 2x^2 - 3x$, what is $f(-2)$?\n(A) -14\n(B) 2\n(C) 10\n(D) 14",
        "$f(-2) = 2 \\cdot 4 - 3 \\cdot (-2) = 8 + 6 = 14$.",
        "D",
    ),
)

CHINESE_EXEMPLARS = (
    Exemplar(
        "小明有15个苹果，他送给同学6个，又买了8个。他现在有多少个苹果？",
        "送出6个后剩下15-6=9个，再买8个后有9+8=17个。",
        "17",
    ),
    Exemplar(
        "一个长方形的长是12厘米，宽是5厘米，它的面积是多少平方厘米？", "面积等于长乘宽，即12×5=60平方厘米。", "60"
    ),
    Exemplar("已知等差数列的首项为3，公差为4，求第10项。", "第10项为3+(10-1)×4=3+36=39。", "39"),
    Exemplar("若 $2x+5=17$，求 $x$ 的值。", "两边同时减5得 $2x=12$，再除以2得 $x=6$。", "6"),
)

CHINESE_MULTIPLE_CHOICE_EXEMPLARS = (
    Exemplar(
        "函数 $f(x)=x^2-4x+3$ 的最小值是\n(A) $-1$\n(B) $0$\n(C) $1$\n(D) $3$",
        "配方得 $f(x)=(x-2)^2-1$，当 $x=2$ 时取得最小值 $-1$。",
        "A",
    ),
    Exemplar(
        "集合 $A=\\{1,2,3\\}$，$B=\\{2,3,4\\}$，则 $A\\cap B$ 中元素的个数为\n(A) 1\n(B) 2\n(C) 3\n(D) 4",
        "$A\\cap B=\\{2,3\\}$，共有2个元素。",
        "B",
    ),
    Exemplar("复数 $(1+i)^2$ 等于\n(A) $2$\n(B) $-2$\n(C) $2i$\n(D) $-2i$", "$(1+i)^2=1+2i+i^2=2i$。", "C"),
    Exemplar(
        "已知 $\\sin\\alpha=\\frac{3}{5}$，且 $\\alpha$ 为锐角，则 $\\cos\\alpha$ 等于\n"
        "(A) $\\frac{3}{4}$\n(B) $\\frac{5}{4}$\n(C) $\\frac{3}{5}$\n(D) $\\frac{4}{5}$",
        "$\\cos\\alpha=\\sqrt{1-\\frac{9}{25}}=\\frac{4}{5}$。",
        "D",
    ),
)

PROGRAM_EXEMPLARS = (
    Exemplar(
        GSM8K_EXEMPLARS[0].question,
        "trays = 6\nrolls_per_tray = 12\nunsold = 9\nprint(trays * rolls_per_tray - unsold)",
        "63",
    ),
    Exemplar(GSM8K_EXEMPLARS[1].question, "monday = 15\ntuesday = 2 * monday\nprint(monday + tuesday)", "45"),
    Exemplar(
        MATH_EXEMPLARS[1].question,
        (
            "from sympy import solve, symbols\n\na, b = symbols('a b')\nsolution = solve([3*a + 2*b - 12, a - b "
            "+ 1], [a, b])\nprint(solution[a])"
        ),
        "2",
    ),
    Exemplar(
        MATH_EXEMPLARS[3].question,
        (
            "from fractions import Fraction\n\nfavourable = sum(1 for a in range(1, 7) for b in range(1, 7) if a "
            "+ b == 9)\nprint(Fraction(favourable, 36))"
        ),
        "1/9",
    ),
)

ZERO_SHOT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
ZERO_SHOT_INSTRUCTION_ZH = "请逐步推理，并把最终答案写在\\boxed{}中。"
CHOICE_INSTRUCTION = "Please reason step by step, and put the letter of the correct option within \\boxed{}."
PROGRAM_INSTRUCTION = (
    "Write a Python program that solves the problem and prints only the final answer on its last line. "
    "Put the program in a ```python code block."
)
TOOL_INSTRUCTION = (
    "Solve the problem step by step. You may write Python code in ```python blocks; the output of each block "
    "is shown to you in an ```output block. Put your final answer within \\boxed{}."
)
CODE_INSTRUCTION_STDIN = (
    "Write a complete Python 3 program that reads the input from standard input and writes the answer to "
    "standard output. Put the whole program in one ```python code block."
)
CODE_INSTRUCTION_FUNCTIONAL = (
    "Complete the code above so that the method solves the problem. Put the whole class in one ```python code block."
)
R1_PREAMBLE = (
    "A conversation between a user and an assistant. The assistant first thinks the problem through, "
    "writing its reasoning inside <think> </think> tags, and then gives the final answer inside "
    "<answer> </answer> tags."
)


def instruction(problem: Problem, style_mode: str = MODE_TEXT) -> str:
    """What a zero-shot prompt asks for, by problem kind and language."""
    if problem.kind == KIND_CODE:
        functional = problem.entry_point and any(t.mode == TEST_FUNCTIONAL for t in problem.tests)
        return CODE_INSTRUCTION_FUNCTIONAL if functional else CODE_INSTRUCTION_STDIN
    if problem.kind == KIND_CHOICE:
        return CHOICE_INSTRUCTION
    if style_mode == MODE_PROGRAM:
        return PROGRAM_INSTRUCTION
    if style_mode == MODE_TOOL:
        return TOOL_INSTRUCTION
    return ZERO_SHOT_INSTRUCTION_ZH if problem.language == "zh" else ZERO_SHOT_INSTRUCTION


@dataclass(frozen=True)
class PromptStyle:
    """How a problem becomes a prompt, and how the answer is read back.

    kinds: the problem kinds it can ask (answer / choice / code); shot: how one solved exemplar
    is written (few-shot styles; None for zero-shot); query: the test problem's part;
    extraction: answer-kind strategies of rewards.extraction; stop: strings that end a sample;
    mode: text, program (the sample is run) or tool (multi-turn with the sandbox)."""

    name: str
    kinds: tuple[str, ...]
    query: Callable[[Problem], str]
    extraction: tuple[str, ...] = STYLE_STRATEGIES["math"]
    stop: tuple[str, ...] = ()
    mode: str = MODE_TEXT
    shot: Callable[[Exemplar], str] | None = None
    default_exemplars: tuple[Exemplar, ...] = ()

    @property
    def program_of_thought(self) -> bool:
        return self.mode == MODE_PROGRAM

    @property
    def few_shot(self) -> bool:
        return self.shot is not None

    def check_problem(self, problem: Problem) -> None:
        if problem.kind not in self.kinds:
            raise ConfigError(
                f"prompt_style={self.name} cannot ask {problem.kind} problems ({problem.source or problem.id}); "
                f"it serves {', '.join(self.kinds)}"
            )

    def build(self, problem: Problem | str, exemplars: FewShot | None = None) -> str:
        if isinstance(problem, str):
            problem = Problem(id="", question=problem, answers=[])
        self.check_problem(problem)
        if not self.few_shot:
            if exemplars:
                raise ConfigError(f"prompt_style={self.name} is zero-shot: it takes no exemplars")
            return self.query(problem)
        shots = self.default_exemplars if exemplars is None else exemplars
        prefix = shots if isinstance(shots, str) else "".join(self.shot(exemplar) for exemplar in shots)  # type: ignore[misc]
        return prefix + self.query(problem)


def _user_turn(mode: str = MODE_TEXT) -> Callable[[Problem], str]:
    return lambda problem: f"User: {problem.text()}\n{instruction(problem, mode)}\n\nAssistant:"


def _r1(problem: Problem) -> str:
    asked = instruction(problem)
    return f"{R1_PREAMBLE}\nUser: {problem.text()}\n{asked}\nAssistant:"


PROMPT_STYLES: dict[str, PromptStyle] = {
    style.name: style
    for style in (
        PromptStyle(
            "gsm8k_cot_8shot",
            (KIND_ANSWER,),
            lambda p: f"Question: {p.text()}\nAnswer:",
            STYLE_STRATEGIES["gsm8k"],
            ("\n\nQuestion:",),
            shot=lambda e: f"Question: {e.question}\nAnswer: {e.solution} The answer is {e.answer}.\n\n",
            default_exemplars=GSM8K_EXEMPLARS,
        ),
        PromptStyle(
            "math_cot_4shot",
            (KIND_ANSWER,),
            lambda p: f"Problem:\n{p.text()}\n\nSolution:\n",
            STYLE_STRATEGIES["math"],
            ("\n\nProblem:",),
            shot=lambda e: (
                f"Problem:\n{e.question}\n\nSolution:\n{e.solution}\n"
                f"Final Answer: The final answer is $\\boxed{{{e.answer}}}$.\n\n"
            ),
            default_exemplars=MATH_EXEMPLARS,
        ),
        PromptStyle(
            "mc_cot_4shot",
            (KIND_CHOICE,),
            lambda p: f"Question: {p.text()}\nAnswer:",
            stop=("\n\nQuestion:",),
            shot=lambda e: f"Question: {e.question}\nAnswer: {e.solution} The answer is ({e.answer}).\n\n",
            default_exemplars=MULTIPLE_CHOICE_EXEMPLARS,
        ),
        PromptStyle(
            "zh_cot_4shot",
            (KIND_ANSWER,),
            lambda p: f"问题：{p.text()}\n解答：",
            STYLE_STRATEGIES["math"],
            ("\n\n问题：",),
            shot=lambda e: f"问题：{e.question}\n解答：{e.solution}所以答案是{e.answer}。\n\n",
            default_exemplars=CHINESE_EXEMPLARS,
        ),
        PromptStyle(
            "zh_mc_cot_4shot",
            (KIND_CHOICE,),
            lambda p: f"问题：{p.text()}\n解答：",
            stop=("\n\n问题：",),
            shot=lambda e: f"问题：{e.question}\n解答：{e.solution}所以答案是{e.answer}。\n\n",
            default_exemplars=CHINESE_MULTIPLE_CHOICE_EXEMPLARS,
        ),
        PromptStyle(
            "pal_4shot",
            (KIND_ANSWER,),
            lambda p: f"Question: {p.text()}\n\n",
            (),
            ("\n\nQuestion:",),
            MODE_PROGRAM,
            shot=lambda e: f"Question: {e.question}\n\n```python\n{e.solution}\n```\n\n",
            default_exemplars=PROGRAM_EXEMPLARS,
        ),
        PromptStyle("zero_shot", KINDS, _user_turn(), STYLE_STRATEGIES["math"], ("\nUser:",)),
        PromptStyle("program_of_thought", (KIND_ANSWER,), _user_turn(MODE_PROGRAM), (), ("\nUser:",), MODE_PROGRAM),
        PromptStyle(
            "tool_integrated", (KIND_ANSWER,), _user_turn(MODE_TOOL), STYLE_STRATEGIES["math"], ("\nUser:",), MODE_TOOL
        ),
        PromptStyle("r1", KINDS, _r1, STYLE_STRATEGIES["math"], ("\nUser:",)),
        # The R1 recipes' own format (data/think_template.py): reasoning in <think>, the answer after </think>.
        PromptStyle("think", (KIND_ANSWER,), lambda p: think_prompt(p.text()), STYLE_STRATEGIES["think"], ("\nUser:",)),
    )
}


def get_prompt_style(name: str) -> PromptStyle:
    try:
        return PROMPT_STYLES[name]
    except KeyError:
        raise KeyError(f"unknown prompt style {name!r}; one of {', '.join(PROMPT_STYLES)}") from None


def load_exemplars(path: str | Path) -> FewShot:
    """A few-shot prefix (.txt/.md, verbatim) or exemplar records (.jsonl/.json/.parquet)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"exemplars file {path} not found")
    if path.suffix.lower() in (".txt", ".md", ".prompt"):
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise DatasetError(f"exemplars file {path} is empty")
        return text
    exemplars = []
    for where, record in read_rows(path):
        question = field(record, "question", "problem")
        solution = field(record, "solution", "rationale", "cot", "program")
        answer = field(record, "answer", "label")
        if question is None or solution is None or answer is None:
            raise DatasetError(f"{where}: an exemplar needs 'question', 'solution' and 'answer'")
        choices = field(record, "choices", "options")
        if isinstance(choices, list) and choices:
            question = f"{question}\n" + "\n".join(f"({CHOICE_LETTERS[i]}) {c}" for i, c in enumerate(choices))
        exemplars.append(Exemplar(str(question), str(solution), str(answer)))
    if not exemplars:
        raise DatasetError(f"exemplars file {path} holds no records")
    return exemplars
