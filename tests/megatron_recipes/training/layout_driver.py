"""Train the tiny model at several parallel layouts from one checkpoint; write the losses as JSON.

Run by tests/megatron_recipes/training/test_parallel_layouts.py (not collected by pytest itself):
    python layout_driver.py reference --work DIR            # 1 process: TP=1 reference run
    torchrun --nproc-per-node 2 layout_driver.py layouts --work DIR   # the 2-process layouts

The reference saves the initial weights (iteration 0, weights only) and a full training state
at step 3. Every layout loads the initial weights and trains STEPS steps on the same global
batches; the `resume_*` entries load the step-3 state saved at TP=1 (model, distributed
optimizer, scheduler) at their own layout and train the remaining steps. Comparing by seed
would be wrong: pipeline stages draw their initial weights from their own streams.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import megatron.core.pipeline_parallel.p2p_communication as p2p
import torch.distributed as dist

from megatron_recipes.config import register_configs
from megatron_recipes.data.mixture import SyntheticTokenizer
from megatron_recipes.data.pretraining import build_pretraining_datasets, pretraining_batches
from megatron_recipes.runtime import cpu
from megatron_recipes.runtime.distributed import shutdown_runtime
from megatron_recipes.training.checkpointing import save_checkpoint
from megatron_recipes.training.loop import train
from megatron_recipes.training.metrics import read_metrics
from megatron_recipes.training.session import setup_training
from stack_common.cli import compose_config

STEPS = 5
SAVE_STEP = 3
LAYOUTS = {
    "dp2": ["parallelism=single"],
    "tp2": ["parallelism=tp2"],
    "tp2_sequence_parallel": ["parallelism=tp2_sp"],
    "pp2": ["parallelism=pp2"],
    "pp2_interleaved": ["parallelism=pp2_interleaved"],
}
# Seeded instead of loaded: pipeline stages draw different initial weights (the negative control).
SEEDED_LAYOUTS = {"pp2_seeded": ["parallelism=pp2"]}
# Full training state saved at TP=1 x DP=1, loaded at another layout.
RESUMED_LAYOUTS = {
    "resume_dp2": ["parallelism=single"],
    "resume_tp2": ["parallelism=tp2"],
    "resume_pp2": ["parallelism=pp2"],
}
COMMON = [
    "model=tiny",
    "model.vocab_size=512",
    "data=mock",
    "data.seq_length=64",
    "data.num_workers=0",
    "trainer=cpu",
    f"trainer.train_steps={STEPS}",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=2",
    "trainer.tensorboard=false",
    "optimizer=adamw_cosine",
    "optimizer.lr=3e-3",
    "optimizer.warmup_steps=1",
    "checkpoint.dir=null",
]


def compose(overrides: list[str]):
    return compose_config("pretrain", [*COMMON, *overrides], register_configs)


def train_losses(config, output_dir: Path, steps: int) -> dict:
    """Train `config` (checkpoint settings included) up to `steps`; return the layout and {step: loss}."""
    config.trainer.output_dir = str(output_dir)
    config.trainer.train_steps = steps
    session = setup_training(
        config.model,
        config.parallelism,
        config.optimizer,
        config.trainer,
        config.checkpoint,
        vocab_size=config.model.vocab_size,
    )
    runtime = session.runtime
    datasets = build_pretraining_datasets(
        config.data,
        None,
        SyntheticTokenizer(config.model.vocab_size),
        STEPS * config.trainer.global_batch_size,
        0,
        str(output_dir.parent / "data_cache"),
    )
    batches = pretraining_batches(
        datasets.train,
        config.trainer.micro_batch_size,
        runtime.data_parallel_rank,
        runtime.data_parallel_size,
        session.state.consumed_samples,
    )
    first_step = session.state.iteration + 1
    layout = {
        **runtime.layout(),
        "parameters_on_rank": sum(p.numel() for p in session.unwrapped_model()[0].parameters()),
        "chunks": len(session.model),
    }
    train(session, batches)

    dist.barrier()
    rows = read_metrics(output_dir / "metrics.jsonl")
    shutdown_runtime(destroy_process_group=False)
    return {"layout": layout, "losses": {step: rows[step]["loss"] for step in range(first_step, steps + 1)}}


def reference(work: Path) -> None:
    config = compose(["parallelism=single"])
    # Initial weights: a weights-only checkpoint, as a converter would write.
    session = setup_training(
        config.model,
        config.parallelism,
        config.optimizer,
        config.trainer,
        config.checkpoint,
        vocab_size=config.model.vocab_size,
    )
    save_checkpoint(work / "initial", 0, session.model, model_config=session.model_config_record())
    shutdown_runtime(destroy_process_group=False)

    config = compose(
        [
            "parallelism=single",
            f"checkpoint.init_from={work / 'initial'}",
            f"checkpoint.dir={work / 'reference_checkpoints'}",
            f"checkpoint.save_interval={SAVE_STEP}",
            "checkpoint.save_at_end=false",
        ]
    )
    result = train_losses(config, work / "reference", STEPS)
    (work / "reference.json").write_text(json.dumps(result))


def layouts(work: Path) -> None:
    results: dict[str, dict[int, float]] = {}
    for name, overrides in LAYOUTS.items():
        config = compose([*overrides, f"checkpoint.init_from={work / 'initial'}"])
        results[name] = train_losses(config, work / name, STEPS)
    for name, overrides in SEEDED_LAYOUTS.items():
        results[name] = train_losses(compose(overrides), work / name, 1)
    # Shown, not assumed: gloo pairs isend/irecv to one peer by (tag, order), so megatron's batched
    # p2p, which sends both directions to the same peer with tag 0, swaps tensors without an error.

    tagged, p2p._batched_p2p_ops = p2p._batched_p2p_ops, cpu.untagged_batched_p2p_ops
    try:
        config = compose([*LAYOUTS["pp2_interleaved"], f"checkpoint.init_from={work / 'initial'}"])
        results["pp2_interleaved_untagged"] = train_losses(config, work / "pp2_interleaved_untagged", STEPS)
    finally:
        p2p._batched_p2p_ops = tagged
    for name, overrides in RESUMED_LAYOUTS.items():
        # Loads <reference_checkpoints>/latest (step 3) but must not write there: copy the marker
        # into a private directory that links to the saved iteration.
        private = work / f"{name}_checkpoints"
        if int(os.environ.get("RANK", "0")) == 0:
            private.mkdir(exist_ok=True)
            link = private / f"iter_{SAVE_STEP:07d}"
            if not link.exists():
                link.symlink_to(work / "reference_checkpoints" / f"iter_{SAVE_STEP:07d}")
            (private / "latest").write_text(f"{SAVE_STEP}\n")

        if dist.is_initialized():
            dist.barrier()
        config = compose(
            [*overrides, f"checkpoint.dir={private}", "checkpoint.save_interval=0", "checkpoint.save_at_end=false"]
        )
        results[name] = train_losses(config, work / name, STEPS)
    if int(os.environ.get("RANK", "0")) == 0:
        (work / "layouts.json").write_text(json.dumps(results))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    mode, work = sys.argv[1], Path(sys.argv[sys.argv.index("--work") + 1])
    {"reference": reference, "layouts": layouts}[mode](work)
