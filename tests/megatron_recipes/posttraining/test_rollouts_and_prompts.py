"""Rollout driver pieces without a model: prompt streams (reasoning-gym and local files),
rewards and ungradable groups, the padded training tensors, tool-integrated rollouts with the
real sandbox (a scripted policy stands in for the model: the sandbox and the token bookkeeping
are under test), and the arithmetic step reward of process supervision."""

from __future__ import annotations

import json
import math

import pytest
import torch

from megatron_recipes.data.config import ARITHMETIC_TASK, ChatTemplateConfig, PromptSourceConfig
from megatron_recipes.data.rl_prompts import PromptRecord, PromptStream, _main, parse_task_spec, sft_records
from megatron_recipes.generation.interface import SamplingParams
from megatron_recipes.generation.megatron import FINISH_TOOL, SampledSequence
from megatron_recipes.rl.config import RlConfig
from megatron_recipes.rl.rollout import RolloutSample, compute_rewards, generate_rollouts, rollout_batch
from megatron_recipes.rl.step_rewards import Step, arithmetic_steps, equation_holds, step_end_tokens
from megatron_recipes.sandbox import SandboxPool, format_output
from stack_common.errors import ConfigError
from tests.megatron_recipes.posttraining.arithmetic import prompt_config

TEMPLATE = ChatTemplateConfig()


def test_task_specs_parse_typed_options():
    assert parse_task_spec("chain_sum") == ("chain_sum", {})
    assert parse_task_spec("chain_sum:min_terms=2, max_terms=3,allow_negation=false,name=x") == (
        "chain_sum",
        {"min_terms": 2, "max_terms": 3, "allow_negation": False, "name": "x"},
    )
    with pytest.raises(ConfigError, match="key=value"):
        parse_task_spec("chain_sum:min_terms")


def test_reasoning_gym_stream_is_a_pure_function_of_the_index():
    stream = PromptStream(prompt_config(seed=5), TEMPLATE)
    again = PromptStream(prompt_config(seed=5), TEMPLATE)
    assert stream.take(10, 5) == again.take(10, 5)
    record = stream.record(3)
    assert (
        record.prompt == f"User: {record.question}\nPlease reason step by step, and put your final answer within "
        f"\\boxed{{}}.\n\nAssistant:"
    )
    first, *rest = record.question.removeprefix("Calculate ").rstrip(".").split()
    operators, terms = rest[0::2], [int(term) for term in rest[1::2]]
    assert set(operators) <= {"+", "-"} and terms
    expected = int(first) + sum(term if operator == "+" else -term for operator, term in zip(operators, terms))
    assert int(record.answer) == expected
    assert stream.take(0, 8) != PromptStream(prompt_config(seed=6), TEMPLATE).take(0, 8)
    with pytest.raises(ConfigError, match="prompts.tasks entry 'no_such_task'"):
        PromptStream(PromptSourceConfig(tasks=["no_such_task"]), TEMPLATE)


def test_file_streams_reshuffle_every_pass(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + 1?", "answer": f"It is {i + 1}.\n#### {i + 1}"}) + "\n"
            for i in range(7)
        )
    )
    stream = PromptStream(PromptSourceConfig(source="gsm8k", path=str(path), split="all"), TEMPLATE)
    assert len(stream) == 7
    first, second = stream.take(0, 7), stream.take(7, 7)
    assert sorted(r.id for r in first) == sorted(r.id for r in second) and [r.id for r in first] != [
        r.id for r in second
    ]
    record = first[0]
    assert record.answer == str(int(record.question.split()[2]) + 1)


def test_sft_records_and_the_cli(tmp_path):
    records = sft_records(PromptStream(prompt_config(), TEMPLATE), 3)
    assert records[0]["messages"][1]["content"].startswith("The answer is $\\boxed{") and records[0]["kind"] == "cot"
    out = tmp_path / "sft.jsonl"
    _main(["--out", str(out), "--count", "4", ARITHMETIC_TASK])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4 and all(line["messages"][0]["role"] == "user" for line in lines)


class ScriptedPolicy:
    """Stands in for MegatronGenerator.generate_ids: writes fixed texts, one per call round, and
    stops after a closed python block as the real generator does with stop_at_code_block."""

    def __init__(self, tokenizer, rounds):
        self.tokenizer, self.rounds, self.calls = tokenizer, rounds, []

    def generate_ids(self, prompt_ids, params, stop_at_code_block=False):
        self.calls.append((len(prompt_ids), params.max_new_tokens, stop_at_code_block))
        text = self.rounds[len(self.calls) - 1]
        outputs = []
        for _ in prompt_ids:
            ids = self.tokenizer.encode(text)
            ends_with_code = text.rstrip().endswith("```") and "```python" in text
            reason = FINISH_TOOL if ends_with_code and stop_at_code_block else "stop"
            if reason == "stop":
                ids = ids + [self.tokenizer.eod]
            outputs.append(
                SampledSequence([], ids[: params.max_new_tokens], [-0.5] * len(ids[: params.max_new_tokens]), reason)
            )
        return outputs


def test_tool_integrated_rollouts_run_code_and_mask_its_output(small_tokenizer):
    rounds = ["Let me compute.\n```python\nprint(6 * 7 + 1)\n```", "So the answer is $\\boxed{43}$."]
    policy = ScriptedPolicy(small_tokenizer, rounds)
    record = PromptRecord("q", "What is 6 * 7 + 1?", "43", "User: What is 6 * 7 + 1?\n\nAssistant:")
    with SandboxPool(max_workers=2) as sandbox:
        runner = lambda codes: [format_output(r)[len("```output\n") : -len("\n```\n")] for r in sandbox.map(codes)]  # noqa: E731
        samples = generate_rollouts(
            policy,
            [record],
            2,
            SamplingParams(1.0, max_new_tokens=200),
            small_tokenizer,
            TEMPLATE,
            tool_runner=runner,
            max_tool_calls=2,
        )
    assert [c[2] for c in policy.calls] == [True, True] and policy.calls[0][0] == 2
    sample = samples[0]
    assert sample.tool_calls == 1 and sample.finish_reason == "stop"
    assert sample.text == rounds[0] + "\n```output\n43\n```\n" + rounds[1]
    output_ids = small_tokenizer.encode("\n```output\n43\n```\n")
    first_round = len(small_tokenizer.encode(rounds[0]))
    assert sample.trained == [True] * first_round + [False] * len(output_ids) + [True] * (
        len(sample.trained) - first_round - len(output_ids)
    )
    assert all(math.isnan(v) for v in sample.sampler_logprobs[first_round : first_round + len(output_ids)])
    compute_rewards(samples, ["math_accuracy"], [1.0])
    assert [s.reward for s in samples] == [1.0, 1.0]
    rl = RlConfig()
    batch = rollout_batch(samples, small_tokenizer.eod, rl.advantage_estimator, rl.advantage_epsilon)
    start = len(sample.prompt_ids) - 1
    assert (
        batch.mask[0, start : start + first_round].all()
        and not batch.mask[0, start + first_round : start + first_round + len(output_ids)].any()
    )
    assert batch.zero_variance.all()  # both samples right: no signal
    # The sampler's log-probs sit where the loss reads pi_old: the model's tokens carry theirs,
    # tool-output tokens (masked) and everything outside the response are 0, never NaN.
    sampler_logp = batch.sampler_logp[0]
    response = len(sample.response_ids)
    assert torch.equal(
        sampler_logp[start : start + response],
        torch.tensor(sample.sampler_logprobs, dtype=torch.float32).nan_to_num(0.0),
    )
    assert (sampler_logp[start : start + first_round] == -0.5).all()
    assert not sampler_logp[:start].any() and not sampler_logp[start + response :].any()
    assert not sampler_logp[start + first_round : start + first_round + len(output_ids)].any()
    # A response token without a sampler log-prob: no sampler_logp (pi_old comes from a forward pass).
    samples[1].sampler_logprobs.pop()
    assert (
        rollout_batch(samples, small_tokenizer.eod, rl.advantage_estimator, rl.advantage_epsilon).sampler_logp is None
    )


def make_sample(group, prompt, response, reward, trained=None):
    sample = RolloutSample(group, f"q{group}", "1", list(prompt), list(response), trained or [True] * len(response))
    sample.reward = reward
    sample.rewards = {"math_accuracy": reward}
    return sample


def test_rollout_batch_aligns_labels_masks_and_ungradable_groups():
    samples = [
        make_sample(0, [5, 6, 7], [8, 9], 1.0),
        make_sample(0, [5, 6, 7], [10], 0.0),
        make_sample(1, [11], [12, 13, 14], None),
        make_sample(1, [11], [15], 1.0),
        make_sample(2, [20, 21], [22], 1.0),
        make_sample(2, [20, 21], [23, 24], 1.0),
    ]
    rl = RlConfig()
    batch = rollout_batch(samples, 0, rl.advantage_estimator, rl.advantage_epsilon, multiple=4)
    assert batch.tokens.shape == (6, 4)  # longest sequence 4 tokens -> 3 positions, padded to 4
    assert batch.tokens[0].tolist() == [5, 6, 7, 8] and batch.labels[0].tolist() == [6, 7, 8, 9]
    assert batch.mask[0].tolist() == [0, 0, 1, 1]  # labels 8 and 9 are the response
    assert batch.mask[2].tolist() == [1, 1, 1, 0]
    assert batch.ungradable.tolist() == [False, False, True, True, False, False]
    assert batch.zero_variance.tolist() == [False, False, False, False, True, True]
    assert (batch.advantages[2:4] == 0).all() and (batch.advantages[4:] == 0).all()
    assert batch.advantages[0, 2] > 0 > batch.advantages[1, 2]
    again = type(batch).from_state(batch.state())
    assert torch.equal(again.tokens, batch.tokens)


def test_arithmetic_step_rewards_and_their_tokens():
    assert equation_holds("3 + 4 * 2", "11") and not equation_holds("(3 + 4) * 2", "11")
    assert equation_holds("2 ^ 10", "1024") and equation_holds("7 / 2", "3.5") and equation_holds("1 / 0", "1") is None
    response = "First 3 + 4 = 7.\nThen 7 * 2 = 15.\nThe answer is $\\boxed{14}$."
    steps = arithmetic_steps(response, "14")
    assert steps == [Step(16, 1.0), Step(33, 0.0), Step(len(response), 1.0)]
    tokens = [ord(c) for c in response]
    decode = lambda ids: "".join(chr(i) for i in ids)  # noqa: E731
    assert step_end_tokens(steps, tokens, decode) == [15, 32, len(response) - 1]
    # Process advantages on the token grid of a rollout batch: a correct step is rewarded at its end.
    samples = [make_sample(0, [1, 2], tokens, 1.0), make_sample(0, [1, 2], tokens[:20], 0.0)]
    samples[0].steps, samples[1].steps = steps, arithmetic_steps(response[:20], "14")
    batch = rollout_batch(samples, 0, "process", RlConfig().advantage_epsilon, decode=decode)
    row = batch.advantages[0]
    first = 1  # label position of the first response token
    assert row[first] == pytest.approx(row[first + 15].item())  # all steps still ahead
    assert row[first + 16] < row[first + 15]  # the correct first step is behind it now
