"""Peak memory of checkpoint conversion vs a naive converter, in one run.

    python benchmarks/convert_memory.py [--layers 8 --hidden 1536 --ffn 4096 --vocab 32000]

Writes a random `transformers` LlamaForCausalLM (fp32, sharded safetensors) to a scratch
directory, then measures the peak resident memory (ru_maxrss of each child process) of:
1. `python -m megatron_recipes.convert mode=import` (HF -> megatron dist checkpoint);
2. `python -m megatron_recipes.convert mode=export` (megatron -> HF safetensors);
3. the naive peer: `AutoModelForCausalLM.from_pretrained` then a copy of its state dict into new
   tensors (what a load-everything-then-rename converter holds).
Each figure is also given as a multiple of the checkpoint's size on disk; an empty Python with
torch imported is measured too (the interpreter's own floor).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

REPO_ROOT = Path(__file__).resolve().parents[1]


def peak_rss_of(command: list[str]) -> float:
    """Run a child to completion; its peak RSS in MB (children's ru_maxrss is the largest child's,
    so each measurement runs in a fresh wrapper process)."""
    wrapper = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command], cwd=REPO_ROOT, env=environment, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--ffn", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        hf_dir, megatron_dir, export_dir = Path(scratch, "hf"), Path(scratch, "megatron"), Path(scratch, "export")
        config = LlamaConfig(
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=args.ffn,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_key_value_heads=args.heads,
            max_position_embeddings=1024,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        )
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        parameters = sum(p.numel() for p in model.parameters())
        model.save_pretrained(hf_dir, safe_serialization=True, max_shard_size="200MB")
        del model
        checkpoint_mb = sum(f.stat().st_size for f in hf_dir.glob("*.safetensors")) / 2**20
        floor = peak_rss_of([sys.executable, "-c", "import torch, megatron.core"])
        imported = peak_rss_of(
            [
                sys.executable,
                "-m",
                "megatron_recipes.convert",
                "mode=import",
                f"hf_dir={hf_dir}",
                f"megatron_dir={megatron_dir}",
            ]
        )
        exported = peak_rss_of(
            [
                sys.executable,
                "-m",
                "megatron_recipes.convert",
                "mode=export",
                f"megatron_dir={megatron_dir}",
                f"hf_dir={export_dir}",
                "max_shard_size=200MB",
            ]
        )
        naive = peak_rss_of(
            [
                sys.executable,
                "-c",
                "import sys, torch; from transformers import AutoModelForCausalLM; "
                "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32); "
                "copy = {k: v.clone() for k, v in m.state_dict().items()}",
                str(hf_dir),
            ]
        )
    figures = {
        "benchmark": "convert_memory",
        "parameters": parameters,
        "checkpoint_mb": round(checkpoint_mb),
        "python_torch_floor_mb": round(floor),
        "import_peak_mb": round(imported),
        "export_peak_mb": round(exported),
        "naive_peak_mb": round(naive),
        "import_over_checkpoint": round((imported - floor) / checkpoint_mb, 2),
        "export_over_checkpoint": round((exported - floor) / checkpoint_mb, 2),
        "naive_over_checkpoint": round((naive - floor) / checkpoint_mb, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
