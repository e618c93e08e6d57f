"""Every conf/ composition of the reward-model recipes composes (reward_model with its paper and
CPU presets, label_steps, iterative_rl with its two experiments, GRPO with a learned reward or
PPO); impossible values fail with one line and exit status 2 before any work."""

from __future__ import annotations

import pytest

from megatron_recipes.config import register_configs
from stack_common.cli import compose_config
from stack_common.errors import ConfigError
from tests.support import run_module


def compose(name: str, *overrides: str):
    return compose_config(name, list(overrides), register_configs)


def test_reward_model_presets():
    bare = compose("reward_model", "reward_model.train_paths=[labels]")
    assert bare.reward_model.kind == "orm" and bare.optimizer.lr == 2e-5 and bare.model.name == "tiny"
    paper = compose(
        "reward_model", "+experiment=reward_model_paper_7b", "parallelism.world_size=64", "reward_model.train_paths=[x]"
    )
    # The paper trains its reward model from DeepSeekMath-Base 7B with a learning rate of 2e-5.
    assert paper.optimizer.lr == 2e-5 and paper.model.name == "deepseek_math_7b"
    assert paper.parallelism.sequence_parallel and paper.reward_model.seq_length == 2048
    tiny = compose("reward_model", "+experiment=reward_model_tiny_cpu", "reward_model.train_paths=[x]")
    assert tiny.trainer.device == "cpu" and tiny.trainer.eval_interval == 50
    prm = compose(
        "reward_model", "+experiment=reward_model_tiny_cpu", "reward_model.train_paths=[x]", "reward_model.kind=prm"
    )
    assert prm.reward_model.kind == "prm" and prm.reward_model.step_separator == "\n"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["reward_model.train_paths=[x]", "reward_model.kind=xrm"], "reward_model.kind='xrm' is not one of orm, prm"),
        (["reward_model.train_paths=[x]", "reward_model.replay_fraction=0.1"], "needs reward_model.replay_paths"),
        (
            ["reward_model.train_paths=[x]", "reward_model.replay_paths=[y]", "reward_model.replay_fraction=0.1"],
            "is not a whole number of records",
        ),
        (["reward_model.train_paths=[]"], "reward_model.train_paths"),
    ],
)
def test_bad_reward_model_settings_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose("reward_model", *overrides)


def test_label_steps_and_iterative_rl_compose():
    labels = compose("label_steps", "policy=ckpt", "label.method=math_shepherd")
    assert labels.sampling.temperature == 1.0 and labels.label.completions == 8 and labels.label.step_label == "soft"
    with pytest.raises(ConfigError, match="label_steps needs policy="):
        compose("label_steps")
    required = ["iterative.policy=p", "iterative.reward_model=r", "iterative.reward_model_data=[d]"]
    paper = compose("iterative_rl", "+experiment=grpo_iterative", *required).iterative
    assert paper.replay_fraction == 0.1 and paper.iterations == 2
    assert paper.grpo_overrides == ["+experiment=grpo_paper_7b"] and paper.launcher[0] == "torchrun"
    tiny = compose("iterative_rl", "+experiment=grpo_iterative_tiny_cpu", *required).iterative
    assert tiny.grpo_steps == 3 and "+experiment=reward_model_tiny_cpu" in tiny.reward_model_overrides
    with pytest.raises(ConfigError, match="iterative.reward_model_data must list"):
        compose("iterative_rl", "iterative.policy=p", "iterative.reward_model=r")


def test_grpo_with_learned_rewards_and_ppo_compose():
    process = compose(
        "grpo",
        "+experiment=grpo_paper_7b",
        "parallelism.world_size=64",
        "rl=process",
        "rl.step_reward=null",
        "rl.reward_model=prm",
    )
    assert process.rl.advantage_estimator == "process" and process.rl.reward_model == "prm"
    ppo = compose("grpo", "+experiment=grpo_tiny_cpu", "rl.advantage_estimator=gae")
    assert ppo.rl.gae_gamma == 1.0 and ppo.rl.value_clip == 0.2
    with pytest.raises(ConfigError, match="rl.gae_lambda=1.5 must lie in"):
        compose("grpo", "rl.advantage_estimator=gae", "rl.gae_lambda=1.5")


def test_entry_points_refuse_bad_settings_before_any_work(tmp_path):
    result = run_module("megatron_recipes.reward_model", "reward_model.kind=xrm", "reward_model.train_paths=[x]")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: reward_model.kind")
    result = run_module("megatron_recipes.label_steps")
    assert result.returncode == 2 and "label_steps needs policy=" in result.stderr
    # A GRPO run naming a reward model that is not one: one line, from its checkpoint record.
    result = run_module("megatron_recipes.grpo", f"rl.reward_model={tmp_path}")
    assert result.returncode == 2 and "reward model checkpoint" in result.stderr.strip().splitlines()[-1]
