"""Corrupt or mismatched HF checkpoints fail with the tensor (or file, or field) named, before
anything is written: the import's checks run on headers only, ahead of torch and megatron."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from megatron_recipes.convert import ConversionError, hf_to_megatron
from tests.support import run_module

INDEX = "model.safetensors.index.json"


@pytest.fixture
def broken(tiny_hf, tmp_path, monkeypatch):
    """A private copy of the sharded tiny model to damage, and the import to run on it. Reaching
    the writing stage means the checks missed the damage: that fails the test instead."""
    copy = tmp_path / "hf"
    shutil.copytree(tiny_hf["gqa"], copy)

    def must_not_write():
        raise AssertionError("the import got past its checks and would write a checkpoint")

    monkeypatch.setattr(hf_to_megatron, "single_process_parallel_state", must_not_write)

    def run_import():
        target = tmp_path / "megatron"
        with pytest.raises(ConversionError) as raised:
            hf_to_megatron.import_hf_checkpoint(copy, target)
        assert not target.exists()
        return str(raised.value)

    return copy, run_import


def weight_map(directory):
    return json.loads((directory / INDEX).read_text())["weight_map"]


def rewrite_shard(directory, tensor_name, change):
    """Re-save the shard holding `tensor_name` after `change(tensors)` edits its dict."""
    path = directory / weight_map(directory)[tensor_name]
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})
    return path.name


def test_missing_shard_names_its_tensors(broken):
    directory, run_import = broken
    shard = weight_map(directory)["model.layers.2.mlp.up_proj.weight"]
    (directory / shard).unlink()
    message = run_import()
    assert f"shard {shard}" in message and "is missing" in message and "model.layers.2.mlp.up_proj.weight" in message


def test_truncated_shard_names_the_tensor_past_the_end(broken):
    directory, run_import = broken
    path = directory / weight_map(directory)["model.layers.1.self_attn.o_proj.weight"]
    path.write_bytes(path.read_bytes()[:-100])
    assert "is truncated: tensor model.layers.1.self_attn.o_proj.weight ends at byte" in run_import()


@pytest.mark.parametrize("kept", ["four bytes", "the length only", "half the header", "all but one header byte"])
def test_a_shard_cut_inside_its_header_is_reported_as_truncated_only(broken, kept):
    """One cause per message: a download cut before the end of the header is truncated, and the
    JSON parser's complaint about the partial header must not be reported beside it."""
    directory, run_import = broken
    path = directory / weight_map(directory)["model.norm.weight"]
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    cut = {"four bytes": 4, "the length only": 8, "half the header": 8 + length // 2}.get(kept, 8 + length - 1)
    path.write_bytes(data[:cut])
    message = run_import()
    assert message.startswith(f"{path} is truncated"), message
    assert "JSON" not in message and " or " not in message


def test_corrupt_header(broken):
    directory, run_import = broken
    path = directory / weight_map(directory)["model.norm.weight"]
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    data[8 : 8 + length] = b"{" * length
    path.write_bytes(bytes(data))
    assert f"{path.name}: the safetensors header is not valid JSON" in run_import()


def test_wrong_shape_names_tensor_file_and_shapes(broken):
    directory, run_import = broken
    name = "model.layers.3.self_attn.k_proj.weight"
    shard = rewrite_shard(directory, name, lambda tensors: tensors.update({name: torch.zeros(16, 64)}))
    assert f"tensor {name} in {shard} has shape [16, 64], expected [32, 64] from config.json" in run_import()


def test_config_that_does_not_match_the_weights(broken):
    directory, run_import = broken
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 128
    (directory / "config.json").write_text(json.dumps(config))
    assert "tensor model.layers.0.mlp.gate_proj.weight" in run_import() and "expected [128, 64]" in run_import()


def test_missing_and_unexpected_tensors(broken):
    directory, run_import = broken
    index = json.loads((directory / INDEX).read_text())
    holder = index["weight_map"].pop("model.layers.0.post_attention_layernorm.weight")
    index["weight_map"]["model.layers.0.self_attn.q_proj.bias"] = holder
    (directory / INDEX).write_text(json.dumps(index))
    rewrite_shard(
        directory,
        "model.layers.0.self_attn.q_proj.bias",
        lambda tensors: tensors.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}),
    )
    message = run_import()
    assert "tensor model.layers.0.post_attention_layernorm.weight is missing" in message
    assert "unexpected tensor model.layers.0.self_attn.q_proj.bias" in message and "biases are not supported" in message


def test_index_that_places_a_tensor_in_the_wrong_shard(broken):
    directory, run_import = broken
    index = json.loads((directory / INDEX).read_text())
    index["weight_map"]["lm_head.weight"] = index["weight_map"]["model.embed_tokens.weight"]
    (directory / INDEX).write_text(json.dumps(index))
    assert "places tensor lm_head.weight in" in run_import()


def test_wrong_architecture(broken):
    directory, run_import = broken
    config = json.loads((directory / "config.json").read_text())
    config.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (directory / "config.json").write_text(json.dumps(config))
    assert "architecture ['GPT2LMHeadModel']" in run_import()


def test_pickled_checkpoints_are_refused_with_a_hint(broken):
    directory, run_import = broken
    for path in directory.glob("model*"):
        path.unlink()
    (directory / "pytorch_model.bin").write_bytes(b"not read")
    assert "pytorch_model.bin" in run_import() and "safe_serialization" in run_import()


def test_entry_point_prints_one_line_and_exits_2(tiny_hf, tmp_path):
    copy = tmp_path / "hf"
    shutil.copytree(tiny_hf["gqa"], copy)
    (copy / weight_map(copy)["lm_head.weight"]).unlink()
    result = run_module(
        "megatron_recipes.convert", "mode=import", f"hf_dir={copy}", f"megatron_dir={tmp_path / 'out'}", timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: shard ") and "lm_head.weight" in lines[-1]
    assert not (tmp_path / "out").exists()
