"""Logits and greedy tokens of converted checkpoints at several layouts, in one torchrun launch.

Run by test_hf_logits_at_layouts.py (not collected by pytest itself):
    torchrun --standalone --nproc-per-node 2 layout_driver.py --work DIR

DIR/cases.json lists the cases: {name, tp, pp, source ("checkpoint": a megatron checkpoint
written by `python -m megatron_recipes.convert mode=import`, loaded with the training core's
load_model_weights; "hf": the HF directory read straight into the layout by load_hf_weights;
"none": the checkpoint's architecture with random weights, a negative control), path, and
optionally save_to: a directory where the loaded weights are saved again at this layout. DIR/prompts.pt
holds the prompt tokens [b, s]. For each case the rank holding the last pipeline stage's logits
(TP rank 0, DP rank 0) writes DIR/<name>.pt: {"logits": [b, s, vocab] fp32 over the real
vocabulary, "greedy": [b, new_tokens]}. The model is built from the checkpoint's model_config
(or, for "hf", from config.json via ModelConfig(init_from_hf=...)), as a recipe builds it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

from megatron_recipes.convert.hf_to_megatron import load_hf_weights
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.models.llama import build_model
from megatron_recipes.runtime.config import ParallelismConfig
from megatron_recipes.runtime.distributed import initialize_runtime, shutdown_runtime
from megatron_recipes.training.checkpointing import (
    load_model_weights,
    model_config_from_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from megatron_recipes.training.loop import forward_only

NEW_TOKENS = 8


def logits_of(chunks, tokens, vocab_size: int):
    """Full-sequence logits on the last pipeline stage (None elsewhere), gathered over TP."""
    batch = {
        "tokens": tokens,
        "labels": tokens,
        "position_ids": torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens).contiguous(),
    }

    def forward(chunk, micro_batch):
        return chunk(micro_batch["tokens"], micro_batch["position_ids"], None)

    def collect(micro_batch, output):
        return gather_from_tensor_model_parallel_region(output)[..., :vocab_size].float()

    outputs = forward_only(chunks, [batch], collect, forward_fn=forward)
    return outputs[0] if outputs else None


def greedy(chunks, prompts, vocab_size: int):
    """Greedy decoding by full forwards; each step's token is sent from the last stage to all."""
    tokens = prompts.clone()
    for _ in range(NEW_TOKENS):
        logits = logits_of(chunks, tokens, vocab_size)
        step = logits[:, -1].argmax(dim=-1) if logits is not None else torch.zeros(tokens.shape[0], dtype=torch.long)
        dist.broadcast(
            step,
            src=parallel_state.get_pipeline_model_parallel_last_rank(),
            group=parallel_state.get_pipeline_model_parallel_group(),
        )
        tokens = torch.cat([tokens, step[:, None]], dim=1)
    return tokens[:, prompts.shape[1] :]


def run_case(case: dict, prompts, work: Path) -> None:
    parallelism = ParallelismConfig(tensor_model_parallel_size=case["tp"], pipeline_model_parallel_size=case["pp"])
    initialize_runtime("cpu", parallelism, seed=1234)
    if case["source"] in ("checkpoint", "none"):
        model_config = model_config_from_checkpoint(case["path"])
    else:  # the architecture from config.json, as model.init_from_hf does
        model_config = ModelConfig(init_from_hf=case["path"])
        model_config.adopt_init_from_hf()
    # Another seed per case: loaded weights must not depend on the random init.
    torch.manual_seed(len(case["name"]))
    chunks = build_model(model_config, parallelism, model_config.vocab_size, device="cpu", precision="fp32")
    if case["source"] == "checkpoint":
        load_model_weights(case["path"], chunks)
    elif case["source"] == "hf":
        load_hf_weights(case["path"], chunks)
    # source "none": the seeded random init, the negative control
    if case.get("save_to"):  # the loaded weights, saved again at this layout (for export tests)
        record = read_checkpoint_info(case["path"])["model_config"]
        save_checkpoint(case["save_to"], 0, chunks, model_config=record)
    for chunk in chunks:
        chunk.eval()
    logits = logits_of(chunks, prompts, model_config.vocab_size)
    generated = greedy(chunks, prompts, model_config.vocab_size)
    writes = (
        parallel_state.is_pipeline_last_stage()
        and parallel_state.get_tensor_model_parallel_rank() == 0
        and parallel_state.get_data_parallel_rank() == 0
    )
    if writes:
        torch.save({"logits": logits, "greedy": generated}, work / f"{case['name']}.pt")
    shutdown_runtime(destroy_process_group=False)


def main(work: Path) -> None:
    cases = json.loads((work / "cases.json").read_text())
    prompts = torch.load(work / "prompts.pt")
    for case in cases:
        run_case(case, prompts, work)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(Path(sys.argv[sys.argv.index("--work") + 1]))
