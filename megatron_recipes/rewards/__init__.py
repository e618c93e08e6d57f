"""Verifiable math rewards: answer extraction, answer equivalence, reward functions by name.

The equivalence rules (what counts as the same answer) are listed in `equivalence.py`. No entry
point raises on model output: over-long or too deeply nested answers are refused (not equal /
unparseable reference), and every symbolic step runs in a worker under a hard deadline.

Public API (importing this package does not import sympy; sympy runs in worker processes, whose
entry point is `worker_tasks.py`):

    extract_answer(text, strategies=STYLE_STRATEGIES["math"], boxed="last", last_number_fallback=False) -> str | None
    follows_think_format(text, require_answer_tags=False) -> bool
    normalize_answer(answer) -> str
    AnswerChecker(options=CheckOptions(), pool=None, timeout_s=None).check_batch(predictions, references)
        -> list["equal" | "not_equal" | "unparseable_reference"];  .equal(prediction, reference) -> bool
    answers_equal(prediction, reference) -> bool
    DeadlineWorkerPool(num_workers, task_timeout_s, ...)       the sympy process pool
    get_reward(name)(completions, references, **options) -> list[float | None]
    register_reward(name), REWARD_FUNCTIONS
"""

from megatron_recipes.rewards.equivalence import (
    EQUAL,
    NOT_EQUAL,
    UNPARSEABLE_REFERENCE,
    AnswerChecker,
    CheckOptions,
    answers_equal,
)
from megatron_recipes.rewards.extraction import (
    EXTRACTION_STRATEGIES,
    STYLE_STRATEGIES,
    extract_answer,
    find_boxed,
    follows_think_format,
)
from megatron_recipes.rewards.functions import REWARD_FUNCTIONS, get_reward, reference_answer, register_reward
from megatron_recipes.rewards.normalization import normalize_answer, parse_number
from megatron_recipes.rewards.worker_pool import DeadlineWorkerPool, default_pool

__all__ = [
    "EQUAL",
    "NOT_EQUAL",
    "UNPARSEABLE_REFERENCE",
    "AnswerChecker",
    "CheckOptions",
    "answers_equal",
    "EXTRACTION_STRATEGIES",
    "STYLE_STRATEGIES",
    "extract_answer",
    "find_boxed",
    "follows_think_format",
    "REWARD_FUNCTIONS",
    "get_reward",
    "reference_answer",
    "register_reward",
    "normalize_answer",
    "parse_number",
    "DeadlineWorkerPool",
    "default_pool",
]
