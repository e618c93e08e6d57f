"""GPU training throughput of the 1.3B preset on one GPU: tokens/s per GPU and MFU, per layer spec.

    python benchmarks/train_step_gpu.py                       # deepseek_1p3b, bf16, seq 4096
    python benchmarks/train_step_gpu.py --specs local --micro-batch-size 1 --recompute selective
    python benchmarks/train_step_gpu.py --save benchmarks/results/train_step_gpu_h100.json

Each layer spec (megatron-core's local spec; Transformer Engine's when `transformer_engine`
imports) runs in its own subprocess (fresh CUDA context) through the recipe's own code:
setup_training (GPTModel, DDP, distributed optimizer, bf16) and train_step on synthetic tokens
(megatron's MockGPTDataset). Prints ONE JSON line with tokens/s/GPU, MFU (model FLOPs per token
from models.training_flops_per_token, PaLM's count, over the GPU's dense bf16 peak - 989
TFLOP/s on H100/H200 SXM) and peak memory per spec, beside Megatron-LM's published ~47% MFU on
H100 at scale (the peer figure). Without CUDA it refuses: one JSON line saying so, exit 2.
`--cpu-smoke` runs the same measurement on the tiny model on the CPU (figures meaningless; it
only keeps this script from rotting where no GPU is available).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from megatron_recipes.config import register_configs  # noqa: E402
from megatron_recipes.models.llama import training_flops_per_token, transformer_engine_importable  # noqa: E402
from megatron_recipes.training.loop import train_step  # noqa: E402
from megatron_recipes.training.metrics import memory_gib, peak_tflops_per_device  # noqa: E402
from megatron_recipes.training.session import setup_training  # noqa: E402
from stack_common.cli import compose_config  # noqa: E402

MEGATRON_LM_PUBLISHED_MFU_H100 = 0.47


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deepseek_1p3b")
    parser.add_argument("--seq-length", type=int, default=4096)
    parser.add_argument("--micro-batch-size", type=int, default=1)
    parser.add_argument("--global-batch-size", type=int, default=8)
    parser.add_argument("--recompute", default="none", choices=["none", "selective", "full"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--specs", default="local,transformer_engine")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak; default from the GPU's name")
    parser.add_argument("--save", default=None, help="also write the JSON line to this file")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU (checks the code path only)")
    parser.add_argument("--one-spec", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.seq_length, args.global_batch_size, args.micro_batch_size = min(args.seq_length, 64), 4, 2
        args.warmup, args.steps, args.specs = 1, 2, "local"
    return args


def measure(args, spec: str) -> dict:
    """Build the preset with one layer spec and time train steps (runs in a fresh process)."""
    device_overrides = (
        ["trainer=cpu", "model=tiny", "model.vocab_size=512"]
        if args.cpu_smoke
        else ["trainer=gpu", f"model={args.model}"]
    )
    config = compose_config(
        "pretrain",
        [
            *device_overrides,
            f"model.transformer_impl={spec}",
            f"model.recompute={args.recompute}",
            "data=mock",
            f"data.seq_length={args.seq_length}",
            f"trainer.micro_batch_size={args.micro_batch_size}",
            f"trainer.global_batch_size={args.global_batch_size}",
            "trainer.train_steps=1000",
            "optimizer=adamw_cosine",
            "optimizer.warmup_steps=10",
            "checkpoint.dir=null",
        ],
        register_configs,
    )
    vocab = config.model.vocab_size or 32000
    session = setup_training(
        config.model, config.parallelism, config.optimizer, config.trainer, config.checkpoint, vocab_size=vocab
    )
    device = session.runtime.torch_device()
    generator = torch.Generator().manual_seed(0)
    micro_batches = []
    for _ in range(session.num_microbatches):
        sample = torch.randint(0, vocab, (args.micro_batch_size, args.seq_length + 1), generator=generator)
        micro_batches.append(
            {
                "tokens": sample[:, :-1].contiguous().to(device),
                "labels": sample[:, 1:].contiguous().to(device),
                "loss_mask": torch.ones(args.micro_batch_size, args.seq_length, device=device),
                "position_ids": torch.arange(args.seq_length, device=device)
                .expand(args.micro_batch_size, -1)
                .contiguous(),
            }
        )

    def synchronize():
        if session.runtime.device == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        train_step(session, micro_batches)
    synchronize()
    if session.runtime.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, losses = [], []
    for _ in range(args.steps):
        started = time.perf_counter()
        result = train_step(session, micro_batches)
        synchronize()
        seconds.append(time.perf_counter() - started)
        losses.append(result.loss)
    step_seconds = statistics.median(seconds)
    tokens_per_step = args.global_batch_size * args.seq_length
    tokens_per_second = tokens_per_step / step_seconds
    flops_per_token = training_flops_per_token(config.model, vocab, args.seq_length)
    peak = peak_tflops_per_device(args.peak_tflops, session.runtime.device, session.precision)
    return {
        "layer_spec": session.layer_spec,
        "precision": session.precision,
        "device_name": torch.cuda.get_device_name() if session.runtime.device == "cuda" else "cpu",
        "step_seconds": round(step_seconds, 4),
        "tokens_per_second_per_gpu": round(tokens_per_second, 1),
        "model_tflops_per_second": round(tokens_per_second * flops_per_token / 1e12, 2),
        "mfu": round(tokens_per_second * flops_per_token / (peak * 1e12), 4) if peak else None,
        "peak_memory_gib": round(memory_gib(session.runtime.device), 2),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
    }


def spec_available(spec: str) -> tuple[bool, str]:
    if spec == "local":
        return True, ""

    return (True, "") if transformer_engine_importable() else (False, "transformer_engine does not import here")


def main(argv=None) -> int:
    args = arguments(argv)
    if args.one_spec:
        print(json.dumps(measure(args, args.one_spec)))
        return 0

    if not args.cpu_smoke and not torch.cuda.is_available():
        print(
            json.dumps(
                {
                    "benchmark": "train_step_gpu",
                    "model": args.model,
                    "not_run": "needs a CUDA device (torch sees none); run it on a GPU machine",
                }
            )
        )
        return 2
    results: dict[str, dict] = {}
    for spec in args.specs.split(","):
        available, reason = (True, "") if args.cpu_smoke else spec_available(spec)
        if not available:
            results[spec] = {"not_run": reason}
            continue
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--one-spec",
            spec,
            *(argv if argv is not None else sys.argv[1:]),
        ]
        child = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        results[spec] = (
            json.loads(lines[-1])
            if child.returncode == 0 and lines
            else {"failed": (child.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        )
    line = json.dumps(
        {
            "benchmark": "train_step_gpu",
            "model": "tiny (cpu smoke: figures meaningless)" if args.cpu_smoke else args.model,
            "seq_length": args.seq_length,
            "global_batch_size": args.global_batch_size,
            "micro_batch_size": args.micro_batch_size,
            "recompute": args.recompute,
            "results": results,
            "megatron_lm_published_mfu_h100": MEGATRON_LM_PUBLISHED_MFU_H100,
        }
    )
    print(line)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(line + "\n")
    return 0 if all("failed" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
