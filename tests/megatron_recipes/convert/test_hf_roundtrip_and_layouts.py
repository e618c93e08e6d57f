"""HF -> megatron -> HF on tiny random LlamaForCausalLM models, with real processes throughout.

One module fixture runs the real entry points: `python -m megatron_recipes.convert mode=import`
on a GQA model stored in many small shards and on a tied-embedding model stored as one file;
one torchrun launch (2 processes, layout_driver.py) that loads them at TP=1 (x DP=2), TP=2 and
PP=2, both from the converted checkpoint and straight from the HF files, computes logits and
greedy generations, and saves the PP=2 / TP=2 models again at that layout; then
`mode=export` from those re-saved checkpoints. transformers itself is the reference: its logits
and its own greedy `generate`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from megatron_recipes.convert.config import parse_size
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.training.checkpointing import model_config_from_checkpoint, read_checkpoint_info
from tests.megatron_recipes.convert.tiny_models import greedy_generate
from tests.support import REPO_ROOT, run_module, subprocess_env

DRIVER = Path(__file__).with_name("layout_driver.py")
LAYOUTS = {"tp1": (1, 1), "tp2": (2, 1), "pp2": (1, 2)}
NEW_TOKENS = 8
LOGIT_TOLERANCE = 1e-4
EXPORT_SHARD = "30KB"


def convert(*arguments: str):
    result = run_module("megatron_recipes.convert", *arguments, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def converted(tiny_hf, tmp_path_factory):
    work = tmp_path_factory.mktemp("convert")
    for name in ("gqa", "tied"):
        convert("mode=import", f"hf_dir={tiny_hf[name]}", f"megatron_dir={work / f'megatron_{name}'}")
    cases = []
    for layout, (tp, pp) in LAYOUTS.items():
        for source, path in (("checkpoint", work / "megatron_gqa"), ("hf", tiny_hf["gqa"])):
            cases.append({"name": f"gqa_{layout}_{source}", "tp": tp, "pp": pp, "source": source, "path": str(path)})
    cases[-2]["save_to"] = str(work / "resaved_gqa_pp2")  # gqa_pp2_checkpoint
    cases += [
        {
            "name": "tied_tp2_checkpoint",
            "tp": 2,
            "pp": 1,
            "source": "checkpoint",
            "path": str(work / "megatron_tied"),
            "save_to": str(work / "resaved_tied_tp2"),
        },
        {"name": "tied_pp2_checkpoint", "tp": 1, "pp": 2, "source": "checkpoint", "path": str(work / "megatron_tied")},
        {"name": "tied_pp2_hf", "tp": 1, "pp": 2, "source": "hf", "path": str(tiny_hf["tied"])},
        {"name": "gqa_tp1_random", "tp": 1, "pp": 1, "source": "none", "path": str(work / "megatron_gqa")},
    ]
    (work / "cases.json").write_text(json.dumps(cases))
    torch.save(torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(1)), work / "prompts.pt")
    launch = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(DRIVER),
            "--work",
            str(work),
        ],
        cwd=REPO_ROOT,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launch.returncode == 0, launch.stderr[-4000:]
    convert(
        "mode=export",
        f"megatron_dir={work / 'resaved_gqa_pp2'}",
        f"hf_dir={work / 'hf_gqa'}",
        f"max_shard_size={EXPORT_SHARD}",
    )
    convert("mode=export", f"megatron_dir={work / 'resaved_tied_tp2'}", f"hf_dir={work / 'hf_tied'}")
    return work


@pytest.fixture(scope="module")
def reference(tiny_hf, converted):
    """transformers' logits and greedy tokens for the prompts, per model."""
    prompts = torch.load(converted / "prompts.pt")
    out = {}
    for name, directory in tiny_hf.items():
        model = AutoModelForCausalLM.from_pretrained(directory).eval()
        with torch.no_grad():
            out[name] = {"logits": model(prompts).logits, "greedy": greedy_generate(model, prompts, NEW_TOKENS)}
    return out


MEGATRON_CASES = [f"gqa_{layout}_{source}" for layout in LAYOUTS for source in ("checkpoint", "hf")] + [
    "tied_tp2_checkpoint",
    "tied_pp2_checkpoint",
    "tied_pp2_hf",
]


@pytest.mark.integration
@pytest.mark.parametrize("case", MEGATRON_CASES)
def test_megatron_logits_and_greedy_tokens_match_transformers(converted, reference, case):
    result = torch.load(converted / f"{case}.pt")
    expected = reference[case.split("_")[0]]
    assert result["logits"].shape == expected["logits"].shape  # padding rows are not part of the vocabulary
    difference = (result["logits"] - expected["logits"]).abs().max().item()
    assert difference <= LOGIT_TOLERANCE, (case, difference)
    assert torch.equal(result["greedy"], expected["greedy"]), (case, result["greedy"], expected["greedy"])


@pytest.mark.integration
def test_negative_control_random_weights_do_not_match(converted, reference):
    result = torch.load(converted / "gqa_tp1_random.pt")
    assert (result["logits"] - reference["gqa"]["logits"]).abs().max().item() > 0.1
    assert not torch.equal(result["greedy"], reference["gqa"]["greedy"])


def safetensors_of(directory: Path) -> dict:
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


CONFIG_FIELDS = (
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "vocab_size",
    "max_position_embeddings",
    "tie_word_embeddings",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
    "bos_token_id",
    "eos_token_id",
)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["gqa", "tied"])
def test_round_trip_reproduces_every_tensor_and_the_config(tiny_hf, converted, name):
    original, exported = safetensors_of(tiny_hf[name]), safetensors_of(converted / f"hf_{name}")
    assert sorted(exported) == sorted(original)
    for tensor_name, tensor in original.items():
        assert exported[tensor_name].dtype == tensor.dtype, tensor_name
        assert torch.equal(exported[tensor_name], tensor), tensor_name
    before = json.loads((tiny_hf[name] / "config.json").read_text())
    after = json.loads((converted / f"hf_{name}" / "config.json").read_text())
    for field in CONFIG_FIELDS:
        assert after.get(field) == before.get(field), field
    assert after["rope_parameters"]["rope_theta"] == before["rope_parameters"]["rope_theta"]


@pytest.mark.integration
def test_export_is_sharded_by_size_with_an_index(converted):
    directory = converted / "hf_gqa"
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    files = sorted(directory.glob("model-*.safetensors"))
    assert len(files) > 5 and set(index["weight_map"].values()) == {path.name for path in files}
    tensors = safetensors_of(directory)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    limit = parse_size(EXPORT_SHARD)

    for path in files:
        with safe_open(str(path), "pt") as handle:
            sizes = [handle.get_slice(key).get_shape() for key in handle.keys()]
        payload = sum(4 * (shape[0] * (shape[1] if len(shape) > 1 else 1)) for shape in sizes)
        assert payload <= limit or len(sizes) == 1, path.name
    # The single-file case: everything fits in one model.safetensors, no index.
    assert [path.name for path in (converted / "hf_tied").glob("*.safetensors")] == ["model.safetensors"]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["gqa", "tied"])
def test_transformers_loads_the_export_with_identical_logits(converted, reference, name):
    model = AutoModelForCausalLM.from_pretrained(converted / f"hf_{name}").eval()
    with torch.no_grad():
        logits = model(torch.load(converted / "prompts.pt")).logits
    assert torch.equal(logits, reference[name]["logits"])


@pytest.mark.integration
def test_converted_checkpoint_records_the_hf_architecture(tiny_hf, converted):
    info = read_checkpoint_info(converted / "megatron_gqa")
    assert info["iteration"] == 0 and not info["has_optimizer"] and info["layout"]["tensor_parallel"] == 1
    record = info["model_config"]
    hf = json.loads((tiny_hf["gqa"] / "config.json").read_text())
    assert (
        record["num_layers"],
        record["hidden_size"],
        record["ffn_hidden_size"],
        record["num_attention_heads"],
        record["num_query_groups"],
        record["vocab_size"],
        record["norm_epsilon"],
        record["rotary_base"],
        record["max_position_embeddings"],
        record["untie_embeddings_and_output_weights"],
    ) == (
        hf["num_hidden_layers"],
        hf["hidden_size"],
        hf["intermediate_size"],
        hf["num_attention_heads"],
        hf["num_key_value_heads"],
        hf["vocab_size"],
        hf["rms_norm_eps"],
        hf["rope_parameters"]["rope_theta"],
        hf["max_position_embeddings"],
        True,
    )
    assert record["padded_vocab_size"] == 384 and record["hf_config"] == hf
    built = model_config_from_checkpoint(converted / "megatron_gqa")
    assert isinstance(built, ModelConfig) and built.num_query_groups == 2
    tied = read_checkpoint_info(converted / "megatron_tied")["model_config"]
    assert tied["untie_embeddings_and_output_weights"] is False and tied["num_query_groups"] is None


@pytest.mark.integration
def test_export_of_a_damaged_checkpoint_fails_before_writing(converted, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(converted / "megatron_gqa", damaged)
    iteration = damaged / "iter_0000000"
    info = json.loads((iteration / "checkpoint_info.json").read_text())
    info["model_config"]["ffn_hidden_size"] = 128  # a model_config that does not describe the tensors
    (iteration / "checkpoint_info.json").write_text(json.dumps(info))
    result = run_module(
        "megatron_recipes.convert", "mode=export", f"megatron_dir={damaged}", f"hf_dir={tmp_path / 'out'}", timeout=300
    )
    assert result.returncode == 2
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert (
        last.startswith("error: ")
        and "decoder.layers.mlp.linear_fc1.weight has shape [4, 192, 64], expected [4, 256, 64]" in last
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.incomplete").exists()
