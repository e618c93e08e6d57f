"""Every conf/ composition of the training recipes composes; bad values fail with one line."""

from __future__ import annotations

import pytest

from megatron_recipes.config import PretrainConfig, register_configs
from stack_common.cli import compose_config
from stack_common.errors import ConfigError
from tests.support import REPO_ROOT, run_module

CONF = REPO_ROOT / "conf"


# The presets of the pretraining recipe (other recipes' presets are composed by their own tests).
PRESETS = {
    "model": ["deepseek_1p3b", "deepseek_math_7b", "small_cpu", "tiny", "tiny_gqa"],
    "parallelism": ["pp2", "pp2_interleaved", "single", "tp2", "tp2_sp", "tp8_sp"],
    "optimizer": ["adamw_cosine", "adamw_multistep"],
    "data": ["corpus_comparison", "deepseekmath_base", "local", "mock"],
    "trainer": ["cpu", "default", "gpu"],
    "experiment": ["corpus_comparison_1p3b", "deepseekmath_base_7b", "tiny_cpu"],
}


def names(group: str) -> list[str]:
    present = {path.stem for path in (CONF / group).glob("*.yaml")}
    assert set(PRESETS[group]) <= present
    return PRESETS[group]


def compose(*overrides: str) -> PretrainConfig:
    return compose_config("pretrain", list(overrides), register_configs)


def test_default_composition_is_the_local_demo():
    config = compose()
    assert isinstance(config, PretrainConfig)
    assert config.model.name == "tiny" and config.data.name == "local"
    assert config.data.sources == {"math_corpus": ["outputs/corpus/sample/tokenized/math_corpus"]}
    assert config.checkpoint.dir == "outputs/pretrain/tiny/checkpoints"
    assert config.optimizer.lr_schedule == "multistep"


@pytest.mark.parametrize("group", ["model", "parallelism", "optimizer", "data", "trainer"])
def test_every_group_preset_composes(group):
    presets = names(group)
    assert presets
    for preset in presets:
        # 8 processes so that every parallel preset (up to TP=8) is a possible layout.
        overrides = [
            f"{group}={preset}",
            "parallelism.world_size=8",
            "trainer.global_batch_size=16",
            "trainer.micro_batch_size=2",
        ]
        if group != "model":
            overrides.append("model=deepseek_1p3b")  # 16 heads, 24 layers, 4K context: fits every preset
        config = compose(*overrides)
        assert getattr(config, group) is not None


def test_model_presets_have_the_published_sizes():
    seven_b = compose("model=deepseek_math_7b").model
    assert (
        seven_b.num_layers,
        seven_b.hidden_size,
        seven_b.num_attention_heads,
        seven_b.ffn_hidden_size,
        seven_b.vocab_size,
        seven_b.max_position_embeddings,
    ) == (30, 4096, 32, 11008, 102400, 4096)
    assert (
        seven_b.rotary_base == 10000.0 and seven_b.norm_epsilon == 1e-6 and seven_b.untie_embeddings_and_output_weights
    )
    small = compose("model=deepseek_1p3b").model
    assert (small.num_layers, small.hidden_size, small.num_attention_heads, small.ffn_hidden_size) == (
        24,
        2048,
        16,
        5504,
    )


def test_paper_experiments():
    seven_b = compose("+experiment=deepseekmath_base_7b", "parallelism.world_size=64")
    assert seven_b.model.name == "deepseek_math_7b" and seven_b.optimizer.lr == 4.2e-4
    tokens_per_batch = seven_b.trainer.global_batch_size * seven_b.data.seq_length
    assert 9.5e6 <= tokens_per_batch <= 10.5e6 * 1.01  # "10M-token batches"
    assert seven_b.data.weights == {
        "math_corpus": 0.56,
        "algebraic_stack": 0.04,
        "arxiv": 0.10,
        "github_code": 0.20,
        "common_crawl": 0.10,
    }
    # The prefixes the tokenize step writes: <corpus.work_dir>/tokenized/<source>.bin/.idx
    assert seven_b.data.sources["arxiv"] == ["outputs/corpus/sample/tokenized/arxiv"]
    assert seven_b.optimizer.multistep_milestones == [0.8, 0.9] and seven_b.optimizer.multistep_factors == [0.316, 0.1]
    assert seven_b.optimizer.warmup_steps == 2000
    assert (seven_b.optimizer.adam_beta1, seven_b.optimizer.adam_beta2, seven_b.optimizer.weight_decay) == (
        0.9,
        0.95,
        0.1,
    )
    small = compose("+experiment=corpus_comparison_1p3b", "parallelism.world_size=64")
    assert small.model.name == "deepseek_1p3b" and small.optimizer.lr == 5.3e-4
    assert 4.0e6 <= small.trainer.global_batch_size * small.data.seq_length <= 4.2e6 * 1.01
    assert list(small.data.weights) == ["math_corpus"]
    demo = compose("+experiment=tiny_cpu")
    assert demo.trainer.device == "cpu" and demo.model.name == "tiny"
    assert names("experiment") == ["corpus_comparison_1p3b", "deepseekmath_base_7b", "tiny_cpu"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["parallelism=tp2", "parallelism.world_size=2", "model.num_attention_heads=3", "model.hidden_size=63"],
            "num_attention_heads=3 is not divisible by tensor_model_parallel_size=2",
        ),
        (
            ["parallelism=pp2", "parallelism.world_size=2", "model.num_layers=3"],
            "num_layers=3 is not divisible by pipeline",
        ),
        (
            ["parallelism=pp2_interleaved", "parallelism.world_size=2", "model.num_layers=6"],
            "num_layers=6 is not divisible",
        ),
        (
            ["trainer.global_batch_size=6", "parallelism.world_size=2"],
            "global_batch_size=6 is not divisible by micro_batch_size x data-parallel size = 2x2",
        ),
        (["parallelism.tensor_model_parallel_size=3", "parallelism.world_size=4"], "world size 4 is not divisible"),
        (["parallelism.sequence_parallel=true"], "sequence_parallel=true needs tensor_model_parallel_size > 1"),
        (["data.seq_length=2048"], "exceeds model.max_position_embeddings=1024"),
        (["data.weights.math_corpus=-1"], "data.weights.math_corpus=-1.0 must be >= 0"),
        (["+data.weights.other=1.0"], "must name the same sources; differing: other"),
        (["data.weights={other: 1.0}"], "Could not override 'data.weights'"),  # presets' sources are extended with +
        (["trainer.device=tpu"], "trainer.device='tpu' is not one of"),
        (["trainer=cpu", "trainer.precision=bf16"], "not supported on the CPU"),
        (["trainer.fp8=hybrid", "model.transformer_impl=local"], "trainer.fp8 needs"),
        (["trainer.exit_signals=[SIGKILL]"], "trainer.exit_signals[0]='SIGKILL' is not one of SIGTERM"),
        (["optimizer.lr_schedule=exponential"], "optimizer.lr_schedule='exponential' is not one of"),
        (["optimizer.multistep_factors=[0.5]"], "optimizer.multistep_factors has 1"),
        (["checkpoint.optimizer_format=zero3"], "checkpoint.optimizer_format='zero3'"),
        (["model=does_not_exist"], "model"),
        (["trainer.not_a_key=1"], "not_a_key"),
        (["trainer.train_steps=many"], "train_steps"),
    ],
)
def test_bad_values_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        compose(*overrides)
    text = str(error.value)
    assert message in text, text
    assert "\n" not in text


def test_entry_point_refuses_before_any_process_group(tmp_path):
    result = run_module(
        "megatron_recipes.pretrain",
        "parallelism=tp2",
        "model.num_attention_heads=3",
        "model.hidden_size=63",
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert (
        lines == ["error: model.num_attention_heads=3 is not divisible by tensor_model_parallel_size=2"]
        or lines[-1].startswith("error: ")
        and len(lines) == 1
    ), result.stderr
    # Missing data is found before any process group too (the sample corpus is not built here).
    missing = run_module("megatron_recipes.pretrain", f"corpus.work_dir={tmp_path}/nothing", timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: data source math_corpus: {tmp_path}/nothing/tokenized/math_corpus is neither a dataset prefix"
        " (.bin + .idx) nor a directory"
    ], missing.stderr
    empty = run_module("megatron_recipes.pretrain", f"data.sources.math_corpus=[{tmp_path}]", timeout=120)
    assert empty.stderr.strip().splitlines() == [
        f"error: data source math_corpus: directory {tmp_path} holds no .bin/.idx dataset (run the tokenize step?)"
    ], empty.stderr
    no_gpu = run_module("megatron_recipes.pretrain", "trainer=gpu", "data=mock", "data.seq_length=512", timeout=120)
    assert no_gpu.returncode == 2
    assert no_gpu.stderr.strip().splitlines() == [
        "error: trainer.device=cuda but torch sees no CUDA device (use trainer.device=cpu or auto)"
    ], no_gpu.stderr
    small_vocab = run_module("megatron_recipes.pretrain", "model.vocab_size=1000", timeout=120)
    assert small_vocab.returncode == 2
    assert (
        "tokens but model.vocab_size=1000" in small_vocab.stderr and len(small_vocab.stderr.strip().splitlines()) == 1
    )
