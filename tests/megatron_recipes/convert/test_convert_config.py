"""config.json <-> ModelConfig, the convert composition, and model.init_from_hf in the recipes' configs."""

from __future__ import annotations

import json

import pytest

from megatron_recipes.config import register_configs
from megatron_recipes.convert import ConversionError, HFArchitecture, hf_architecture
from megatron_recipes.convert.architecture import hf_config_for_export
from megatron_recipes.convert.config import ConvertConfig, parse_size
from megatron_recipes.convert.hf_checkpoint import plan_shards
from megatron_recipes.convert.hf_to_megatron import _locate, _model_state, _sharded_tensors
from megatron_recipes.convert.mapping import QKV, TensorMapping
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.models.llama import build_model
from megatron_recipes.runtime.config import ParallelismConfig
from stack_common.cli import compose_config
from stack_common.errors import ConfigError

# The published config.json of DeepSeekMath-Base 7B / DeepSeek-Coder-7B-Base-v1.5 (transformers 4 spelling).
DEEPSEEK_MATH_7B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 30,
    "num_key_value_heads": 32,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1",
    "use_cache": True,
    "vocab_size": 102400,
}


def write_config(directory, config):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_deepseek_math_7b_config_gives_the_preset_architecture():
    preset = compose_config("pretrain", ["model=deepseek_math_7b"], register_configs).model
    fields = hf_architecture(DEEPSEEK_MATH_7B).model_config_fields()
    for name, value in fields.items():
        assert getattr(preset, name) == value, name


def test_transformers_5_rope_parameters_are_read():
    config = {key: value for key, value in DEEPSEEK_MATH_7B.items() if key not in ("rope_theta", "rope_scaling")}
    config["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "default"}
    config["num_key_value_heads"] = 8
    architecture = hf_architecture(config)
    assert architecture.rotary_base == 500000.0
    assert architecture.model_config_fields()["num_query_groups"] == 8


@pytest.mark.parametrize(
    "change,named",
    [
        ({"rope_scaling": {"type": "linear", "factor": 4.0}}, "'linear'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "'llama3'"),
        ({"rope_parameters": {"rope_theta": 1e4, "rope_type": "yarn", "factor": 4.0}}, "'yarn'"),
        ({"architectures": ["MistralForCausalLM"], "model_type": "mistral"}, "MistralForCausalLM"),
        ({"architectures": ["Qwen2ForCausalLM"]}, "Qwen2ForCausalLM"),
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"head_dim": 64}, "head_dim"),
        ({"num_key_value_heads": 5}, "num_key_value_heads"),
        ({"intermediate_size": None}, "intermediate_size"),
    ],
)
def test_unsupported_configs_are_refused_with_the_field_named(change, named):
    with pytest.raises(ConversionError, match=named.replace("[", r"\[").replace("(", r"\(")):
        hf_architecture({**DEEPSEEK_MATH_7B, **change}, "/models/x")


def test_export_config_keeps_template_fields_and_spelling():
    architecture = hf_architecture(DEEPSEEK_MATH_7B)
    config = hf_config_for_export(architecture, "bfloat16", DEEPSEEK_MATH_7B)
    assert config["bos_token_id"] == 100000 and config["eos_token_id"] == 100001
    assert config["rope_theta"] == 10000.0 and config["rope_scaling"] is None
    assert hf_architecture(config) == architecture
    v5 = {**DEEPSEEK_MATH_7B, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}}
    del v5["rope_theta"], v5["rope_scaling"]
    assert "rope_theta" not in hf_config_for_export(architecture, "bfloat16", v5)
    # The record a checkpoint stores rebuilds the same architecture.
    assert HFArchitecture.from_model_config(architecture.model_config_fields()) == architecture


def test_qkv_rows_interleave_query_groups():
    config = {
        **DEEPSEEK_MATH_7B,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 96,
        "num_hidden_layers": 1,
        "vocab_size": 300,
    }
    mapping = TensorMapping(hf_architecture(config), padded_vocab_size=384)
    blocks = [(block.hf_name.split(".")[-2], block.hf_row, block.rows) for block in mapping.lookup(QKV, 0).blocks]
    # group 0: query heads 0-1, key head 0, value head 0; group 1: query heads 2-3, key 1, value 1
    assert blocks == [
        ("q_proj", 0, 32),
        ("k_proj", 0, 16),
        ("v_proj", 0, 16),
        ("q_proj", 32, 32),
        ("k_proj", 16, 16),
        ("v_proj", 16, 16),
    ]


def test_mapping_covers_every_tensor_of_the_7b_model(single_process_groups):
    """Every sharded tensor megatron-core's 7B GPTModel stores is found in the table with its shape."""
    architecture = hf_architecture(DEEPSEEK_MATH_7B)
    model = ModelConfig(**architecture.model_config_fields())
    chunk = build_model(model, ParallelismConfig(world_size=1), 102400, meta_device=True)[0]
    mapping = TensorMapping(architecture, 102400)
    located = {
        (_locate(sharded, mapping)[0].key, _locate(sharded, mapping)[0].layer)
        for _, _, sharded in _sharded_tensors(_model_state(chunk))
    }
    assert located == set(mapping.tensors)
    assert len(located) == 6 * 30 + 3


def test_shard_plan_and_sizes():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size(1000) == 1000
    with pytest.raises(ConversionError, match="size"):
        parse_size("five gigs")
    # In order, at most 100 bytes per file; a tensor larger than that gets a file of its own.
    plan = plan_shards([("a", 60), ("b", 30), ("c", 200), ("d", 10), ("e", 5)], max_shard_bytes=100)
    assert plan.files == (
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    )
    assert [plan.file_of[name] for name in "abcde"] == [plan.files[i] for i in (0, 0, 1, 2, 2)]
    assert plan.total_bytes == 305
    assert plan_shards([("a", 60)], 100).files == ("model.safetensors",)


def test_convert_composition_and_bad_values(tmp_path):
    hf = write_config(tmp_path / "hf", DEEPSEEK_MATH_7B)
    config = compose_config(
        "convert", ["mode=import", f"hf_dir={hf}", f"megatron_dir={tmp_path / 'out'}"], register_configs
    )
    assert isinstance(config, ConvertConfig) and config.dtype == "auto" and config.max_shard_size == "5GB"
    bad = {
        "mode=sideways": "mode='sideways'",
        "dtype=int8": "dtype='int8'",
        "max_shard_size=lots": "size",
        f"hf_dir={tmp_path / 'absent'}": "does not exist",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            compose_config("convert", [f"hf_dir={hf}", f"megatron_dir={tmp_path / 'out'}", override], register_configs)
    with pytest.raises(ConfigError, match="set both"):
        compose_config("convert", [f"hf_dir={hf}"], register_configs)


def test_init_from_hf_takes_the_architecture_from_config_json(tmp_path):
    hf = write_config(tmp_path / "hf", {**DEEPSEEK_MATH_7B, "num_key_value_heads": 8})
    config = compose_config(
        "pretrain",
        [
            "model=tiny",
            f"model.init_from_hf={hf}",
            "data=mock",
            "parallelism=tp8_sp",
            "parallelism.world_size=8",
            "trainer.global_batch_size=8",
            "trainer.micro_batch_size=1",
        ],
        register_configs,
    )
    model = config.model
    assert (model.num_layers, model.hidden_size, model.ffn_hidden_size, model.num_query_groups, model.vocab_size) == (
        30,
        4096,
        11008,
        8,
        102400,
    )
    assert model.name == "tiny"  # training choices stay the preset's
    # A layout the HF architecture cannot take is refused at composition, against the HF sizes.
    with pytest.raises(ConfigError, match="num_query_groups=8 is not divisible by tensor_model_parallel_size=16"):
        compose_config(
            "pretrain",
            [
                f"model.init_from_hf={hf}",
                "data=mock",
                "parallelism.tensor_model_parallel_size=16",
                "parallelism.world_size=16",
                "trainer.global_batch_size=8",
                "trainer.micro_batch_size=1",
            ],
            register_configs,
        )
    with pytest.raises(ConfigError, match="not both"):
        compose_config(
            "pretrain", [f"model.init_from_hf={hf}", "data=mock", f"checkpoint.init_from={tmp_path}"], register_configs
        )
    with pytest.raises(ConfigError, match="nothing is not a directory"):
        compose_config("pretrain", [f"model.init_from_hf={tmp_path / 'nothing'}", "data=mock"], register_configs)
    mistral = write_config(tmp_path / "mistral", {**DEEPSEEK_MATH_7B, "architectures": ["MistralForCausalLM"]})
    with pytest.raises(ConfigError, match="MistralForCausalLM"):
        compose_config("pretrain", [f"model.init_from_hf={mistral}", "data=mock"], register_configs)
