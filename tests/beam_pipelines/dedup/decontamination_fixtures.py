"""Hand-made benchmark files in the public formats of GSM8K, MATH, CMATH, AGIEval and a
generic JSON file, with items written for these tests (not copied from the benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

GSM8K = [
    {
        "question": "Lena buys 4 boxes of pencils with 12 pencils in each box. She gives 9 pencils to her "
        "brother and splits the rest equally among 3 friends. How many pencils does each friend get?",
        "answer": "Lena has 4 * 12 = <<4*12=48>>48 pencils. After giving 9 away she has 48 - 9 = <<48-9=39>>39 "
        "pencils left. Each friend gets 39 / 3 = <<39/3=13>>13 pencils.\n#### 13",
    },
    {
        "question": "A bakery sells muffins for $3 each and cookies for $1 each. On Monday it sold 25 muffins "
        "and twice as many cookies. How much money did the bakery make on Monday?",
        "answer": "The bakery sold 25 * 2 = <<25*2=50>>50 cookies. Muffins made 25 * 3 = <<25*3=75>>75 dollars "
        "and cookies made 50 dollars, so the total is 75 + 50 = <<75+50=125>>125 dollars.\n#### 125",
    },
]

MATH_PROBLEMS = {
    "test/algebra/101.json": {
        "problem": "If $x^{2} + 6x + k$ is the square of a binomial, what is the value of the constant $k$ "
        "when the binomial has integer coefficients?",
        "level": "Level 2",
        "type": "Algebra",
        "solution": "The square of $x + 3$ is $x^2 + 6x + 9$, so $k = \\boxed{9}$.",
    },
    "test/counting_and_probability/7.json": {
        "problem": "Evaluate $\\log_2 64$.",
        "level": "Level 1",
        "type": "Intermediate Algebra",
        "solution": "Since $2^6 = 64$, we have $\\log_2 64 = \\boxed{6}$.",
    },
}

CMATH = [
    {
        "id": "cmath-3-17",
        "grade": "3",
        "question": "小明有24个苹果，他把苹果平均分给6个同学，每个同学分到几个苹果？",
        "golden": "4",
        "reasoning_step": "1",
    },
]

AGIEVAL_SAT = [
    {
        "passage": None,
        "question": "A rectangle has a perimeter of 40 centimeters and a length that is 4 "
        "centimeters more than its width. What is the area of the rectangle in square centimeters?",
        "options": ["(A)84", "(B)96", "(C)100", "(D)120"],
        "label": "B",
        "other": None,
    },
]

GENERIC = {
    "data": [
        {
            "prompt": "Find the number of positive divisors of 3600 that are perfect squares and also multiples of 4.",
            "output": "There are 6 such divisors.",
        }
    ]
}


# Copies of benchmark items as they appear on web pages.
EXACT_GSM8K = (
    "Lena buys 4 boxes of pencils with 12 pencils in each box. She gives 9 pencils to her brother and "
    "splits the rest equally among 3 friends. How many pencils does each friend get?"
)
REFORMATTED_MATH = (
    "PROBLEM 3:  IF  x^2+6x+k is THE square of a binomial -- what's... no: what is the value of the "
    "constant k when the binomial has integer\u00a0coefficients ??"
)
FULLWIDTH_CMATH = "练习：小明有２４个苹果, 他把苹果平均分给６个同学。每个同学分到几个苹果?"
# One word changed in every window of ten words: no 10-gram survives.
NEAR_MISS_GSM8K = (
    "Lena purchases 4 boxes of pencils with 12 pencils inside each box. She hands 9 pencils to her brother "
    "and divides the rest equally among 3 friends. How many pencils will each friend get?"
)
CLEANED_GSM8K_ANSWER = "Lena has 4 * 12 = 48 pencils. After giving 9 away she has 48 - 9 = 39 pencils left."
SHORT_ITEM_ALONE = "Evaluate \\(\\log_{2} 64\\)."
SHORT_ITEM_INSIDE = "First evaluate log2 64 with the definition of the logarithm, then check the result."
CLEAN = "The derivative of a product follows the product rule, which we prove from the limit definition."


def write_benchmarks(root: Path) -> dict[str, Path]:
    """Write every benchmark under root; return name -> path (file or directory)."""
    paths = {}
    gsm8k = root / "gsm8k"
    gsm8k.mkdir(parents=True)
    (gsm8k / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K) + "\n")
    paths["gsm8k"] = gsm8k
    for relative, problem in MATH_PROBLEMS.items():
        target = root / "math" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(problem, indent=4))
    paths["math"] = root / "math"
    (root / "cmath").mkdir()
    (root / "cmath" / "cmath_test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in CMATH))
    paths["cmath"] = root / "cmath"
    (root / "agieval").mkdir()
    (root / "agieval" / "sat-math.jsonl").write_text("".join(json.dumps(r) + "\n" for r in AGIEVAL_SAT))
    paths["agieval"] = root / "agieval"
    (root / "extra.json").write_text(json.dumps(GENERIC))
    paths["extra"] = root / "extra.json"
    return paths
