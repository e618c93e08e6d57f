"""Every conf/ composition of SFT and GRPO composes (presets, experiments, the rl group, the
megatron generator of evaluate); impossible values fail with one line before any work."""

from __future__ import annotations

import re

import pytest

from megatron_recipes.config import EvaluateConfig, GrpoConfig, SftConfig, register_configs
from megatron_recipes.rl.objectives import check_objective_names
from stack_common.cli import compose_config
from stack_common.errors import ConfigError
from tests.support import REPO_ROOT, run_module

CONF = REPO_ROOT / "conf"
RL_PRESETS = sorted(
    ["iterative", "paper", "process", "tiny_cpu"]
    + ["r1_final", "r1_final_tiny_cpu", "r1_reasoning", "r1_reasoning_tiny_cpu", "r1_zero", "r1_zero_tiny_cpu"]
)


def sft(*overrides: str) -> SftConfig:
    return compose_config("sft", ["sft_data.paths=[data.jsonl]", *overrides], register_configs)


def grpo(*overrides: str) -> GrpoConfig:
    return compose_config("grpo", list(overrides), register_configs)


def test_rl_presets_are_all_composed():
    assert sorted(path.stem for path in (CONF / "rl").glob("*.yaml")) == RL_PRESETS


def test_sft_defaults_and_the_paper_preset():
    config = sft()
    assert config.optimizer.lr_schedule == "constant" and config.trainer.output_dir == "outputs/sft/tiny"
    assert config.chat_template.user == "User: {content}\n\n" and config.chat_template.assistant_header == "Assistant:"
    paper = sft("+experiment=sft_paper_7b", "parallelism.world_size=64")
    assert (
        paper.sft_data.seq_length,
        paper.trainer.global_batch_size,
        paper.optimizer.lr,
        paper.trainer.train_steps,
    ) == (4096, 256, 5e-5, 500)
    assert paper.optimizer.lr_schedule == "constant" and paper.sft_data.pack and paper.model.name == "deepseek_math_7b"
    tiny = sft("+experiment=sft_tiny_cpu")
    assert tiny.trainer.device == "cpu" and tiny.sft_data.seq_length == 512


@pytest.mark.parametrize("preset", RL_PRESETS)
def test_every_rl_preset_composes(preset):
    # The 7B architecture with a 40K context: it holds DeepSeekMath's 1,024-token answers and R1's 32K ones.
    config = grpo(
        f"rl={preset}",
        "model=deepseek_math_7b",
        "model.max_position_embeddings=40960",
        "trainer.global_batch_size=64",
        "trainer.micro_batch_size=8",
    )
    assert config.rl.name == preset


def test_grpo_paper_settings():
    config = grpo("+experiment=grpo_paper_7b", "parallelism.world_size=64")
    rl = config.rl
    assert (rl.group_size, rl.questions_per_step, rl.max_new_tokens, rl.kl_coefficient, rl.kl_estimator) == (
        64,
        16,
        1024,
        0.04,
        "k3",
    )
    assert (rl.epsilon_low, rl.epsilon_high, rl.updates_per_rollout, rl.loss_aggregation) == (
        0.2,
        0.2,
        1,
        "sequence_mean",
    )
    assert config.trainer.global_batch_size == config.rollout_outputs() == 1024  # one update per rollout
    # The paper's objective keeps every group; skipping zero-variance groups stays an option.
    assert rl.skip_zero_variance_groups is False
    assert grpo(
        "+experiment=grpo_paper_7b", "parallelism.world_size=64", "rl.skip_zero_variance_groups=true"
    ).rl.skip_zero_variance_groups
    for variant in ("iterative", "process"):
        assert not grpo(
            "+experiment=grpo_paper_7b", "parallelism.world_size=64", f"rl={variant}"
        ).rl.skip_zero_variance_groups
    assert config.optimizer.lr == 1e-6 and config.parallelism.tensor_model_parallel_size == 8
    assert not config.parallelism.sequence_parallel and not config.parallelism.overlap_param_gather
    assert (
        grpo("+experiment=grpo_paper_7b", "parallelism.world_size=64", "rl=iterative").rl.reference_reset_interval
        == 100
    )
    process = grpo("+experiment=grpo_paper_7b", "parallelism.world_size=64", "rl=process").rl
    assert process.advantage_estimator == "process" and process.step_reward == "arithmetic_steps"


def test_grpo_tiny_preset_and_held_out_prompts():
    assert grpo().rl.name == "tiny_cpu"  # the bare command is the small local run
    config = grpo("+experiment=grpo_tiny_cpu")
    assert config.rl.group_size == 8 and config.rollout_outputs() // config.trainer.global_batch_size == 2
    # Held-out: the other side of the question split of the same task (never a training question).
    assert (config.prompts.split, config.eval_prompts.split) == ("train", "held_out")
    assert config.eval_prompts.tasks == config.prompts.tasks and config.eval_prompts.limit == 64
    assert config.trainer.device == "cpu"


def test_evaluate_with_the_megatron_generator_composes():
    config = compose_config("evaluate", ["generator=megatron", "generator.checkpoint=/ckpt/run"], register_configs)
    assert isinstance(config, EvaluateConfig) and config.generator.name == "megatron"
    assert config.generator.checkpoint == "/ckpt/run" and config.generator.max_batch_size == 32


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["rl.group_size=1"], "rl.group_size=1 must be >= 2"),
        (["rl.rewards=[no_such_reward]"], "rl.rewards[0]='no_such_reward' is not one of"),
        (
            ["rl.advantage_estimator=process"],
            "needs step rewards: rl.reward_model=<a PRM checkpoint> or rl.step_reward",
        ),
        (
            ["trainer.global_batch_size=48", "trainer.micro_batch_size=8"],
            "is not a multiple of trainer.global_batch_size=48",
        ),
        (
            [
                "parallelism=pp2",
                "parallelism.world_size=2",
                "trainer.global_batch_size=64",
                "trainer.micro_batch_size=8",
            ],
            "pipeline_model_parallel_size must be 1",
        ),
        (
            [
                "parallelism=tp2_sp",
                "parallelism.world_size=2",
                "trainer.global_batch_size=64",
                "trainer.micro_batch_size=8",
            ],
            "set parallelism.sequence_parallel=false",
        ),
        (
            [
                "parallelism.world_size=3",
                "trainer.global_batch_size=24",
                "trainer.micro_batch_size=8",
                "rl.questions_per_step=4",
                "rl.group_size=6",
            ],
            "rl.questions_per_step=4 is not divisible by the data-parallel size 3",
        ),
        (["rl.max_new_tokens=1024"], "rl.max_new_tokens=1024 leaves no room for the prompt"),
        (["parallelism.overlap_param_gather=true"], "set parallelism.overlap_param_gather=false"),
        (["prompts.source=gsm8k"], "prompts.source=gsm8k reads local files"),
        (["prompts.question_template=no placeholder"], "must contain {question}"),
    ],
)
def test_bad_grpo_values_fail_with_one_line(overrides, message):
    base = (
        []
        if any(o.startswith("trainer.global_batch_size") for o in overrides)
        else ["trainer.global_batch_size=32", "trainer.micro_batch_size=8"]
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        grpo(*base, *overrides)


@pytest.mark.parametrize(
    "override,message",
    [
        ("rl.kl_estimator=k4", "rl.kl_estimator='k4' is not one of k1, k2, k3"),
        ("rl.loss_aggregation=mean", "rl.loss_aggregation='mean' is not one of sequence_mean, token_mean"),
        ("rl.advantage_estimator=ppo", "rl.advantage_estimator='ppo' is not one of outcome, outcome_unscaled, process"),
    ],
)
def test_unregistered_objective_names_fail_with_one_line(override, message):
    """These names are checked against the torch registries when python -m megatron_recipes.grpo starts."""
    config = grpo("trainer.global_batch_size=32", "trainer.micro_batch_size=8", override)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_objective_names(config.rl)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["sft_data.paths=[]"], "sft_data.paths is empty"),
        (["sft_data.long_examples=wrap"], "sft_data.long_examples='wrap' is not one of truncate, drop"),
        (["chat_template.user=User:"], "chat_template.user='User:' must contain"),
        (["sft_data.seq_length=8192"], "sft_data.seq_length=8192 exceeds model.max_position_embeddings=1024"),
    ],
)
def test_bad_sft_values_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        sft(*overrides)


def test_entry_points_refuse_bad_settings_before_any_work(tmp_path):
    result = run_module("megatron_recipes.grpo", "rl.kl_estimator=k9")
    assert result.returncode == 2 and "error: rl.kl_estimator='k9'" in result.stderr
    result = run_module("megatron_recipes.sft", f"sft_data.paths=[{tmp_path / 'missing.jsonl'}]", "trainer=cpu")
    assert result.returncode == 2 and "does not exist" in result.stderr
