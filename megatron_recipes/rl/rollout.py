"""Rollouts: G samples per question from the policy, rewards from the verifiers, advantages, and
the padded tensors the GRPO loss trains on.

    samples = generate_rollouts(generator, records, group_size, params, tokenizer, template,
                                tool_runner=None, max_tool_calls=4)
    compute_rewards(samples, reward_names, reward_weights, checker, step_reward=None, reward_options=None,
                    model_scores=None)
    batch = rollout_batch(samples, tokenizer.eod, rl.advantage_estimator, rl.advantage_epsilon)

Tool-integrated reasoning (rl.tool_use): generation stops when a sample closes a ```python block
(or at EOD / the length budget); `tool_runner(codes) -> outputs` runs the blocks (the sandbox
pool) and each output, wrapped by the chat template's tool turn, is appended to the sample's
context as tokens that are *not* trained (mask 0); the sample then continues, up to
`max_tool_calls` executions and `params.max_new_tokens` response tokens in total (model tokens
and output tokens together).

Rewards: the sum over `reward_names` of weight x reward; a reward function returning None
(the reference answer itself cannot be parsed) makes the sample ungradable: its whole group is
left out of the loss and counted. The first reward is reported as `accuracy`. Rewards registered
with `inputs=("questions",)` (language consistency, a reward model) also receive each sample's
question text; `reward_options[name]` (rl.reward_options) is passed to reward `name` as keywords.
A learned reward model (rl.reward_model) adds its scores (`ModelScores`, probabilities from
reward_models/scoring.py) with rl.reward_model_weight: an outcome reward model's score joins the
sum (outcome supervision: the group normalises the total); a process reward model's step
scores become the sample's steps (process supervision), the weighted rule-based sum added to
the last step. `rewards["reward_model"]` records the score (a PRM's: its lowest step score).

RolloutBatch (this rank's share; N outputs, S = longest prompt + response - 1, padded to a
multiple of 8): tokens / labels [N, S] int64 (labels[t] = tokens[t + 1] of the sequence),
position_ids [N, S], mask [N, S] float (1 where the label is a trained response token),
advantages [N, S] float, group [N] int64, zero_variance [N] bool, ungradable [N] bool,
rewards [N] float; sampler_logp [N, S] the sampler's log-probs at the response positions (0
elsewhere and at tool-output tokens; None when a sample's response has tokens without one);
old_logp / ref_logp [N, S] are filled by the trainer (forward passes, or old_logp = sampler_logp;
old_logp only for the rows it needs) and,
for PPO, old_values / returns [N, S] and the advantages after the critic's.

Cost: generation dominates (see generation/megatron.py); rewards are checked in one batch; the
tensors are O(N x S).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from megatron_recipes.generation.interface import SamplingParams
from megatron_recipes.rewards import get_reward, reward_inputs
from megatron_recipes.rl.config import STEP_ESTIMATORS
from megatron_recipes.rl.objectives import AdvantageInputs, get_advantage_estimator
from megatron_recipes.rl.step_rewards import Step, get_step_reward, split_steps, step_end_tokens, step_reward_inputs

# The key of a learned reward model's score in a sample's `rewards`.
MODEL_REWARD = "reward_model"

_CLOSED_PYTHON_BLOCK = re.compile(r"```python[ \t]*\n(.*?)\n?```", re.DOTALL)


@dataclass
class RolloutSample:
    group: int  # index of the question in this rank's rollout batch
    question_id: str
    reference: str
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    trained: list[bool] = field(default_factory=list)  # per response token: False for tool outputs
    sampler_logprobs: list[float] = field(default_factory=list)  # NaN for tool-output tokens
    text: str = ""  # the decoded response, tool outputs included
    finish_reason: str = "length"
    tool_calls: int = 0
    rewards: dict[str, float | None] = field(default_factory=dict)
    reward: float | None = None
    steps: list | None = None  # process supervision: [Step(end, reward)] on `text`
    question: str = ""  # the question text of the prompt (for rewards that read it)

    @property
    def generated_tokens(self) -> int:
        return sum(self.trained)


def pending_python_code(text: str, executed: int) -> str | None:
    """The code of the next closed ```python block after the `executed` ones, if any."""
    blocks = _CLOSED_PYTHON_BLOCK.findall(text)
    return blocks[executed].strip("\n") if len(blocks) > executed else None


def tool_output_text(output: str, template) -> str:
    return template.tool.replace("{content}", output)


def generate_rollouts(
    generator,
    records: Sequence,
    group_size: int,
    params: SamplingParams,
    tokenizer,
    template=None,
    tool_runner: Callable[[list[str]], list[str]] | None = None,
    max_tool_calls: int = 0,
) -> list[RolloutSample]:
    """`group_size` samples for each record (PromptRecord: prompt, answer, id), group-contiguous."""
    samples = []
    for group, record in enumerate(records):
        prompt_ids = tokenizer.encode(record.prompt)
        samples.extend(
            RolloutSample(group, record.id, record.answer, list(prompt_ids), question=record.question)
            for _ in range(group_size)
        )
    active = list(range(len(samples)))
    round_params = params
    calls_left = max_tool_calls if tool_runner is not None else 0
    while active:
        contexts = [samples[i].prompt_ids + samples[i].response_ids for i in active]
        budgets = [params.max_new_tokens - len(samples[i].response_ids) for i in active]
        round_params = replace(params, max_new_tokens=max(min(budgets), 1))
        outputs = _generate_with_budgets(
            generator, contexts, budgets, round_params, tool_runner is not None and calls_left > 0
        )
        needs_tool: list[tuple[int, str]] = []
        for index, output in zip(active, outputs):
            sample = samples[index]
            sample.response_ids.extend(output.token_ids)
            sample.trained.extend([True] * len(output.token_ids))
            sample.sampler_logprobs.extend(output.logprobs)
            sample.finish_reason = output.finish_reason
            if tool_runner is not None and calls_left > 0 and output.finish_reason == "tool":
                code = pending_python_code(tokenizer.decode(sample.response_ids), sample.tool_calls)
                if code is not None and len(sample.response_ids) < params.max_new_tokens:
                    needs_tool.append((index, code))
        if not needs_tool:
            break
        results = tool_runner([code for _, code in needs_tool])
        for (index, _), result in zip(needs_tool, results):
            sample = samples[index]
            output_ids = tokenizer.encode(tool_output_text(result, template))
            room = params.max_new_tokens - len(sample.response_ids)
            output_ids = output_ids[:room]
            sample.response_ids.extend(output_ids)
            sample.trained.extend([False] * len(output_ids))
            sample.sampler_logprobs.extend([math.nan] * len(output_ids))
            sample.tool_calls += 1
        calls_left -= 1
        active = [index for index, _ in needs_tool if len(samples[index].response_ids) < params.max_new_tokens]
    for sample in samples:
        eod_trimmed = (
            sample.response_ids[:-1]
            if sample.response_ids and sample.response_ids[-1] == tokenizer.eod
            else sample.response_ids
        )
        text = tokenizer.decode(eod_trimmed)
        for stop in params.stop:
            if stop and stop in text:
                text = text[: text.index(stop)]
        sample.text = text
        if sample.finish_reason == "tool":
            sample.finish_reason = "length"  # ran out of tool calls or budget right after a block
    return samples


def _generate_with_budgets(generator, contexts, budgets, params, stop_at_code_blocks: bool):
    """generate_ids per distinct budget (rows of one call share max_new_tokens)."""
    by_budget: dict[int, list[int]] = {}
    for row, budget in enumerate(budgets):
        by_budget.setdefault(budget, []).append(row)
    outputs: list = [None] * len(contexts)
    for budget, rows in by_budget.items():
        call_params = replace(params, max_new_tokens=budget)
        if stop_at_code_blocks:
            results = generator.generate_ids([contexts[r] for r in rows], call_params, stop_at_code_block=True)
        else:
            results = generator.generate_ids([contexts[r] for r in rows], call_params)
        for row, result in zip(rows, results):
            outputs[row] = result
    return outputs


@dataclass(frozen=True)
class ModelScores:
    """A reward model's probabilities for a batch of samples: `scores[i]` is [p] (outcome) or one
    p per step of sample i's text (per_step: steps split at `separator`)."""

    per_step: bool
    scores: Sequence[Sequence[float]]
    weight: float = 1.0
    separator: str = "\n"


def compute_rewards(
    samples: Sequence[RolloutSample],
    reward_names: Sequence[str],
    reward_weights: Sequence[float],
    checker=None,
    step_reward: str | None = None,
    reward_options: dict | None = None,
    model_scores: ModelScores | None = None,
) -> None:
    """Fill each sample's rewards (per name), total reward (None if ungradable) and, with a
    `step_reward` or a process reward model's scores (process supervision), its steps. The one
    scorer of rollouts and of the held-out check."""
    texts = [sample.text for sample in samples]
    references = [sample.reference for sample in samples]
    per_name: dict[str, list] = {}
    for name in reward_names:
        function = get_reward(name)
        options = {"checker": checker} if checker is not None and name.endswith("_accuracy") else {}
        if "questions" in reward_inputs(name):
            options["questions"] = [sample.question for sample in samples]
        options.update((reward_options or {}).get(name) or {})
        per_name[name] = function(texts, references, **options)
    for index, sample in enumerate(samples):
        sample.rewards = {name: per_name[name][index] for name in reward_names}
        values = list(sample.rewards.values())
        sample.reward = (
            None if any(v is None for v in values) else float(sum(w * v for w, v in zip(reward_weights, values)))
        )
    if model_scores is not None:
        _add_model_scores(samples, model_scores)
    if step_reward is not None:
        function = get_step_reward(step_reward)
        first = reward_names[0]
        step_options = dict((reward_options or {}).get(step_reward) or {})
        for sample in samples:
            if "question" in step_reward_inputs(step_reward):
                step_options["question"] = sample.question
            sample.steps = function(sample.text, sample.reference, outcome=sample.rewards.get(first), **step_options)


def _add_model_scores(samples: Sequence[RolloutSample], model_scores: ModelScores) -> None:
    if len(model_scores.scores) != len(samples):
        raise ValueError(f"{len(model_scores.scores)} reward-model scores for {len(samples)} samples")
    for sample, scores in zip(samples, model_scores.scores):
        scores = list(scores)
        if not model_scores.per_step:
            sample.rewards[MODEL_REWARD] = scores[0] if scores else 0.0
            if sample.reward is not None:
                sample.reward += model_scores.weight * sample.rewards[MODEL_REWARD]
            continue
        sample.rewards[MODEL_REWARD] = min(scores) if scores else 0.0
        ends = [step.end for step in split_steps(sample.text, model_scores.separator)]
        if len(ends) != len(scores):
            raise ValueError(f"{len(scores)} step scores for {len(ends)} steps of a sample")
        rule_based = sample.reward or 0.0
        steps = [Step(end, model_scores.weight * score) for end, score in zip(ends, scores)]
        if steps:
            steps[-1] = Step(steps[-1].end, steps[-1].reward + rule_based)
        else:
            steps = [Step(len(sample.text), rule_based)]
        sample.steps = steps


@dataclass
class RolloutBatch:
    tokens: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    group: torch.Tensor
    zero_variance: torch.Tensor
    ungradable: torch.Tensor
    rewards: torch.Tensor
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    sampler_logp: torch.Tensor | None = None
    # PPO (rl.advantage_estimator=gae): the critic's values before the update and its targets.
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def rows(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """A micro-batch (dict for the training loop) of the given rows."""
        batch = {
            "tokens": self.tokens[indices],
            "labels": self.labels[indices],
            "position_ids": self.position_ids[indices],
            "loss_mask": self.mask[indices],
            "advantages": self.advantages[indices],
        }
        if self.old_logp is not None:
            batch["old_logp"] = self.old_logp[indices]
        if self.ref_logp is not None:
            batch["ref_logp"] = self.ref_logp[indices]
        if self.old_values is not None:
            batch["old_values"] = self.old_values[indices]
        if self.returns is not None:
            batch["returns"] = self.returns[indices]
        return batch

    def state(self) -> dict[str, torch.Tensor | None]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_state(cls, state: dict) -> "RolloutBatch":
        return cls(**state)


def rollout_batch(
    samples: Sequence[RolloutSample],
    pad_id: int,
    estimator: str,
    epsilon: float,
    decode: Callable[[Sequence[int]], str] | None = None,
    multiple: int = 8,
) -> RolloutBatch:
    """Padded tensors and advantages of this rank's samples (see module docstring)."""
    count = len(samples)
    longest = max(len(s.prompt_ids) + len(s.response_ids) for s in samples) - 1
    length = max(multiple, -(-longest // multiple) * multiple)
    tokens = torch.full((count, length), pad_id, dtype=torch.long)
    labels = torch.full((count, length), pad_id, dtype=torch.long)
    mask = torch.zeros(count, length)
    uses_steps = estimator in STEP_ESTIMATORS
    step_rewards = torch.zeros(count, length) if uses_steps else None
    step_mask = torch.zeros(count, length) if uses_steps else None
    ungradable_groups = {s.group for s in samples if s.reward is None}
    has_sampler_logp = all(len(s.sampler_logprobs) == len(s.response_ids) for s in samples)
    sampler_logp = torch.zeros(count, length) if has_sampler_logp else None
    for row, sample in enumerate(samples):
        sequence = torch.tensor(sample.prompt_ids + sample.response_ids, dtype=torch.long)
        used = len(sequence) - 1
        tokens[row, :used] = sequence[:-1]
        labels[row, :used] = sequence[1:]
        first = len(sample.prompt_ids) - 1  # label position of the first response token
        if sample.response_ids:
            mask[row, first : first + len(sample.response_ids)] = torch.tensor(sample.trained, dtype=torch.float32)
            if sampler_logp is not None:  # tool-output tokens (NaN) are masked from the loss: 0 keeps ratios finite
                values = torch.tensor(sample.sampler_logprobs, dtype=torch.float32).nan_to_num(0.0)
                sampler_logp[row, first : first + len(sample.response_ids)] = values
        if uses_steps and sample.steps and sample.response_ids:
            if decode is None:
                raise ValueError("process supervision needs `decode` to map step ends to tokens")
            for step, position in zip(sample.steps, step_end_tokens(sample.steps, sample.response_ids, decode)):
                step_rewards[row, first + position] += step.reward
                step_mask[row, first + position] = 1.0
    group = torch.tensor([s.group for s in samples], dtype=torch.long)
    ungradable = torch.tensor([s.group in ungradable_groups for s in samples], dtype=torch.bool)
    rewards = torch.tensor([s.reward if s.reward is not None else 0.0 for s in samples], dtype=torch.float32)
    position_ids = torch.arange(length).unsqueeze(0).expand(count, -1).contiguous()
    function = get_advantage_estimator(estimator)
    if getattr(function, "needs_values", False):
        # PPO: the trainer fills the advantages after the critic's forward pass (rl/trainer.py).
        return RolloutBatch(
            tokens,
            labels,
            position_ids,
            mask,
            torch.zeros(count, length),
            group,
            torch.zeros(count, dtype=torch.bool),
            ungradable,
            rewards,
            sampler_logp=sampler_logp,
        )
    # Ungradable groups are left out of the statistics: give them their own (masked) values.
    inputs = AdvantageInputs(rewards, group, mask, epsilon, step_rewards, step_mask)
    advantages = function(inputs)
    tokens_advantages = torch.where(ungradable.unsqueeze(1), torch.zeros_like(advantages.tokens), advantages.tokens)
    zero_variance = advantages.zero_variance & ~ungradable
    return RolloutBatch(
        tokens,
        labels,
        position_ids,
        mask,
        tokens_advantages,
        group,
        zero_variance,
        ungradable,
        rewards,
        sampler_logp=sampler_logp,
    )
