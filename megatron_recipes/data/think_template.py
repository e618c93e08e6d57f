"""The R1 prompt and response format, in one place (prompts, SFT data, rewards and the evaluation
prompt style `think` all read it).

The prompt (our wording of R1-Zero's template): an instruction to reason inside <think> ... </think>
and to give only the final answer inside <answer> ... </answer>, then the question (last, right
before the reply, as in R1-Zero's template), in the DeepSeekMath-Instruct chat format of
ChatTemplateConfig:

    User: Think it through first, writing your reasoning between <think> and </think>; then write
    only the final answer between <answer> and </answer>.
    Calculate 3 + 4.

    Assistant:

A response in this format: " <think> 3 + 4 = 7 </think> <answer> 7 </answer>". The accuracy reward
(`think_accuracy`) reads the answer from the part after </think> only; `think_format` checks the
shape.

Cold-start SFT data (R1's readable long chains of thought) is a reasoning and a summary; the
assistant turn is COLD_START_RESPONSE with both filled in: the reasoning inside the think tags, the
summary (ending with the answer) inside the answer tags.
"""

from __future__ import annotations

THINK_INSTRUCTION = (
    "Think it through first, writing your reasoning between <think> and </think>; "
    "then write only the final answer between <answer> and </answer>."
)
# prompts.question_template / eval_prompts.question_template of the R1 presets.
THINK_QUESTION_TEMPLATE = THINK_INSTRUCTION + "\n{question}"
# sft_data.reasoning_template default: a record's reasoning and summary -> the assistant turn.
COLD_START_RESPONSE = "<think>\n{reasoning}\n</think>\n<answer>\n{summary}\n</answer>"


def think_prompt(question: str) -> str:
    """The generation prompt of the `think` evaluation style: what PromptStream renders with the
    default chat template and THINK_QUESTION_TEMPLATE."""
    return f"User: {THINK_QUESTION_TEMPLATE.replace('{question}', question)}\n\nAssistant:"


def think_response(reasoning: str, answer: str) -> str:
    """A compact R1-format response (the shape R1-Zero's format reward asks for)."""
    return f"<think> {reasoning} </think> <answer> {answer} </answer>"


def cold_start_response(reasoning: str, summary: str, template: str = COLD_START_RESPONSE) -> str:
    return template.replace("{reasoning}", reasoning.strip()).replace("{summary}", summary.strip())
