"""CPU training-step time: the recipe (megatron-core through the CPU runtime layer) vs plain PyTorch.

Same architecture (LLaMA-style: RMSNorm, SwiGLU, RoPE, causal attention, untied embeddings, no
biases), same sizes, same global batch of token ids, same AdamW settings (betas 0.9/0.95,
weight decay 0.1, clipping 1.0); one process, one run, side by side. Prints ONE JSON line:

    python benchmarks/train_step.py                 # tiny preset, batch 8 x 128
    python benchmarks/train_step.py --model small_cpu --steps 30

Figures: median step time (ms) after warm-up steps for
- recipe: setup_training + train_step (megatron GPTModel local spec, DDP, distributed optimizer,
  get_forward_backward_func, finalize_model_grads), i.e. what `megatron_recipes.pretrain` runs;
- plain_pytorch: an nn.Module of the same architecture (F.scaled_dot_product_attention) with
  torch.optim.AdamW and clip_grad_norm_. Recipe and plain steps are timed in alternating rounds
  in the same process (the CPU runtime layer installed for both), so machine noise hits both;
- plain_pytorch_without_cpu_layer: the plain loop timed before the layer is installed (its
  torch function mode touches every torch call): how much of the gap is the layer itself.
Timings are noisy on a shared machine; only the ratios within one run are meaningful.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from megatron_recipes.config import register_configs  # noqa: E402
from megatron_recipes.models.llama import padded_vocab_size  # noqa: E402
from megatron_recipes.training.loop import train_step  # noqa: E402
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


def durations(step, steps: int) -> list[float]:
    measured = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        measured.append(time.perf_counter() - started)
    return measured


def median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values)


def plain_step_function(model_config, vocab: int, tokens, labels):
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

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(tokens)
        loss = F.cross_entropy(logits.view(-1, vocab).float(), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return float(loss)

    return step, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each loop")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of recipe and plain steps")
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

    torch.manual_seed(0)
    plain_step, plain_parameters = plain_step_function(config.model, args.vocab, tokens, labels)
    durations(plain_step, args.warmup)
    without_layer_ms = median_ms(durations(plain_step, args.steps))

    session = setup_training(
        config.model, config.parallelism, config.optimizer, config.trainer, config.checkpoint, vocab_size=args.vocab
    )
    batch = {
        "tokens": tokens,
        "labels": labels,
        "loss_mask": torch.ones(tokens.shape),
        "position_ids": torch.arange(args.seq_length).expand_as(tokens).contiguous(),
    }
    recipe_step = lambda: train_step(session, [batch])  # noqa: E731
    recipe_parameters = sum(p.numel() for p in session.unwrapped_model()[0].parameters())
    torch.manual_seed(0)
    plain_step, _ = plain_step_function(config.model, args.vocab, tokens, labels)
    durations(recipe_step, args.warmup)
    durations(plain_step, args.warmup)
    recipe_times, plain_times = [], []
    per_round = max(1, args.steps // args.rounds)
    for _ in range(args.rounds):
        recipe_times += durations(recipe_step, per_round)
        plain_times += durations(plain_step, per_round)
    recipe_ms, plain_ms = median_ms(recipe_times), median_ms(plain_times)

    print(
        json.dumps(
            {
                "benchmark": "train_step_cpu",
                "model": args.model,
                "batch": [args.batch, args.seq_length],
                "parameters": {
                    "recipe": recipe_parameters,
                    "plain_pytorch": plain_parameters,
                    "recipe_vocab_padded_to": padded_vocab_size(args.vocab, 128, 1),
                },
                "recipe_step_ms": round(recipe_ms, 2),
                "plain_pytorch_step_ms": round(plain_ms, 2),
                "recipe_over_plain": round(recipe_ms / plain_ms, 3),
                "plain_pytorch_without_cpu_layer_step_ms": round(without_layer_ms, 2),
                "steps_timed": len(recipe_times),
                "torch_threads": torch.get_num_threads(),
                "tokens_per_second": {
                    "recipe": round(tokens.numel() / recipe_ms * 1000),
                    "plain_pytorch": round(tokens.numel() / plain_ms * 1000),
                },
                "note": "median of timed steps after warm-up; shared 2-core machine: compare the ratio, not absolute "
                "times",
            }
        )
    )
    if not math.isfinite(recipe_ms):
        sys.exit(1)


if __name__ == "__main__":
    main()
