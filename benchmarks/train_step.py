"""CPU training-step time: the recipe (megatron-core through the CPU runtime layer) vs plain PyTorch,
with the gap broken down.

Same architecture (LLaMA-style: RMSNorm, SwiGLU, RoPE, causal attention, untied embeddings, no
biases), same sizes, same global batch of token ids, same AdamW settings (betas 0.9/0.95,
weight decay 0.1, clipping 1.0); one process. Prints ONE JSON line:

    python benchmarks/train_step.py                 # tiny preset, batch 8 x 128
    python benchmarks/train_step.py --model small_cpu --rounds 10

Measure: CPU seconds (time.process_time: this process, all its threads) of one call, the parts
below called in turn in `--rounds` interleaved rounds of `--steps` calls each; each part keeps
its least time (on a shared 2-core machine one wall-clock run of the same step varied by 1.5x).
- plain_pytorch: an nn.Module of the same architecture (F.scaled_dot_product_attention) with
  torch.optim.AdamW and clip_grad_norm_, run with the CPU runtime layer's device mode suspended
  (plain PyTorch as anyone runs it); `plain_pytorch_with_cpu_layer` the same loop under the mode;
- recipe: setup_training + train_step (megatron GPTModel local spec, DDP, distributed optimizer,
  get_forward_backward_func, finalize_model_grads), i.e. what `megatron_recipes.pretrain` runs.
Breakdown of the gap, each part timed alone with the same interleaving:
- model_architecture: the bare GPTModel's forward+backward without the layer's mode minus the
  plain model's forward+backward;
- runtime_layer: the same forward+backward with the mode minus without;
- ddp_buckets: DDP-wrapped forward+backward (gradient buffers, main_grad hooks) and
  finalize_model_grads minus the bare model's;
- schedule: megatron's forward_backward_func around it (our forward-step and loss plumbing);
- optimizer: megatron's optimizer step (grad copies, norm and clipping, AdamW, parameter copy
  back) and the lr schedule minus clip + AdamW of the plain loop;
- zero_grad_metrics_host_syncs: the rest of train_step (zeroing buffers, lr readout, the metric
  reduction and its host transfers).
The parts are measured separately, so they add up to the gap only approximately.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from megatron.core.distributed import finalize_model_grads  # noqa: E402
from torch import nn  # noqa: E402

from megatron_recipes.config import register_configs  # noqa: E402
from megatron_recipes.models.llama import padded_vocab_size  # noqa: E402
from megatron_recipes.runtime.cpu import device_rewrites_suspended  # noqa: E402
from megatron_recipes.training.loop import _run_schedule, gpt_forward, masked_token_loss, train_step  # noqa: E402
from megatron_recipes.training.session import setup_training  # noqa: E402
from stack_common.cli import compose_config  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_tables(seq_length: int, head_dim: int, base: float):
    inverse = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seq_length).float(), inverse)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Block(nn.Module):
    def __init__(self, hidden: int, ffn: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attention_norm = RMSNorm(hidden, eps)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)
        self.mlp_norm = RMSNorm(hidden, eps)
        self.gate_up = nn.Linear(hidden, 2 * ffn, bias=False)
        self.down = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x, cos, sin):
        batch, seq, hidden = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, seq, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, seq, hidden))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class PlainLlama(nn.Module):
    def __init__(
        self, vocab: int, hidden: int, ffn: int, heads: int, layers: int, seq_length: int, eps: float, base: float
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(Block(hidden, ffn, heads, eps) for _ in range(layers))
        self.norm = RMSNorm(hidden, eps)
        self.output = nn.Linear(hidden, vocab, bias=False)
        cos, sin = rotary_tables(seq_length, hidden // heads, base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.normal_(parameter, std=0.02)

    def forward(self, tokens):
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        return self.output(self.norm(x))


def least_cpu_seconds(parts: dict, rounds: int, steps: int, warmup: int) -> dict[str, float]:
    """Each part's least CPU time of one call over `rounds` interleaved rounds of `steps` calls."""
    for part in parts.values():
        for _ in range(warmup):
            part()
    best = {name: math.inf for name in parts}
    for _ in range(rounds):
        for name, part in parts.items():
            for _ in range(steps):
                started = time.process_time()
                part()
                best[name] = min(best[name], time.process_time() - started)
    return best


def plain_step_functions(model_config, vocab: int, tokens, labels):
    """(step, forward_backward, optimizer_step, parameter count) of the plain loop."""
    model = PlainLlama(
        vocab,
        model_config.hidden_size,
        model_config.ffn_hidden_size,
        model_config.num_attention_heads,
        model_config.num_layers,
        tokens.shape[1],
        model_config.norm_epsilon,
        model_config.rotary_base,
    )
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    def forward_backward():
        optimizer.zero_grad(set_to_none=True)
        logits = model(tokens)
        loss = F.cross_entropy(logits.view(-1, vocab).float(), labels.reshape(-1))
        loss.backward()
        return loss

    def optimizer_step():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def step():
        loss = forward_backward()
        optimizer_step()
        return float(loss)

    return step, forward_backward, optimizer_step, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls of each part first")
    parser.add_argument("--steps", type=int, default=4, help="timed calls of each part per round")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds over all parts")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = compose_config(
        "pretrain",
        [
            f"model={args.model}",
            f"model.vocab_size={args.vocab}",
            "data=mock",
            f"data.seq_length={args.seq_length}",
            "trainer=cpu",
            f"trainer.global_batch_size={args.batch}",
            f"trainer.micro_batch_size={args.batch}",
            "trainer.train_steps=1000",
            "optimizer=adamw_cosine",
            "optimizer.lr=1e-3",
            "optimizer.warmup_steps=0",
            "checkpoint.dir=null",
        ],
        register_configs,
    )
    generator = torch.Generator().manual_seed(0)
    sample = torch.randint(0, args.vocab, (args.batch, args.seq_length + 1), generator=generator)
    tokens, labels = sample[:, :-1].contiguous(), sample[:, 1:].contiguous()

    session = setup_training(
        config.model, config.parallelism, config.optimizer, config.trainer, config.checkpoint, vocab_size=args.vocab
    )
    batch = {
        "tokens": tokens,
        "labels": labels,
        "loss_mask": torch.ones(tokens.shape),
        "position_ids": torch.arange(args.seq_length).expand_as(tokens).contiguous(),
    }
    wrapped, bare = session.model[0], session.unwrapped_model()[0]
    recipe_parameters = sum(p.numel() for p in bare.parameters())
    torch.manual_seed(0)
    plain_step, plain_forward_backward, plain_optimizer, plain_parameters = plain_step_functions(
        config.model, args.vocab, tokens, labels
    )

    def without_layer(function):
        def run():
            with device_rewrites_suspended():
                return function()

        return run

    def model_forward_backward():
        bare.zero_grad(set_to_none=True)
        per_token = bare(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        per_token.float().mean().backward()

    def ddp_forward_backward_finalize():
        wrapped.zero_grad_buffer()
        per_token = wrapped(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        per_token.float().mean().backward()
        finalize_model_grads([wrapped])

    def schedule():
        wrapped.zero_grad_buffer()
        _run_schedule(session, [batch], masked_token_loss, gpt_forward, forward_only=False)

    def optimizer():
        session.optimizer.step()
        session.scheduler.step(increment=1)

    parts = {
        "recipe": lambda: train_step(session, [batch]),
        "plain_pytorch": without_layer(plain_step),
        "plain_pytorch_with_cpu_layer": plain_step,
        "plain_forward_backward": without_layer(plain_forward_backward),
        "plain_optimizer": without_layer(plain_optimizer),
        "model_forward_backward_without_layer": without_layer(model_forward_backward),
        "model_forward_backward": model_forward_backward,
        "ddp_forward_backward_finalize": ddp_forward_backward_finalize,
        "schedule": schedule,
        "optimizer": optimizer,
    }
    best = least_cpu_seconds(parts, args.rounds, args.steps, args.warmup)
    ms = {name: round(1000.0 * seconds, 2) for name, seconds in best.items()}
    gap = {
        "model_architecture": ms["model_forward_backward_without_layer"] - ms["plain_forward_backward"],
        "runtime_layer": ms["model_forward_backward"] - ms["model_forward_backward_without_layer"],
        "ddp_buckets": ms["ddp_forward_backward_finalize"] - ms["model_forward_backward"],
        "schedule": ms["schedule"] - ms["ddp_forward_backward_finalize"],
        "optimizer": ms["optimizer"] - ms["plain_optimizer"],
        "zero_grad_metrics_host_syncs": ms["recipe"] - ms["schedule"] - ms["optimizer"],
    }
    print(
        json.dumps(
            {
                "benchmark": "train_step_cpu",
                "model": args.model,
                "batch": [args.batch, args.seq_length],
                "measure": f"CPU ms per step (process_time), least of {args.rounds} interleaved rounds x {args.steps}",
                "load_average": [round(value, 2) for value in os.getloadavg()],
                "parameters": {
                    "recipe": recipe_parameters,
                    "plain_pytorch": plain_parameters,
                    "recipe_vocab_padded_to": padded_vocab_size(args.vocab, 128, 1),
                },
                "tokens_per_step": {"recipe": int(tokens.numel()), "plain_pytorch": int(tokens.numel())},
                "recipe_step_ms": ms["recipe"],
                "plain_pytorch_step_ms": ms["plain_pytorch"],
                "recipe_over_plain": round(best["recipe"] / best["plain_pytorch"], 3),
                "target_recipe_over_plain": 1.3,
                "plain_pytorch_with_cpu_layer_step_ms": ms["plain_pytorch_with_cpu_layer"],
                "parts_ms": ms,
                "gap_ms": {name: round(value, 2) for name, value in gap.items()},
                "torch_threads": torch.get_num_threads(),
            }
        )
    )
    if not math.isfinite(best["recipe"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
