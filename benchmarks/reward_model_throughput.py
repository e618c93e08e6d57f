"""Reward-model scoring throughput beside the policy's forward pass on the same batch.

Both sides are megatron-core models of the same preset and layout built in this process (the
CPU runtime layer on a machine without CUDA): the policy is GPTModel returning logits over the
vocabulary (what GRPO's log-prob pass runs), the reward model is reward_models.model.RewardModel
(the same decoder, a scalar head instead of the vocabulary projection) called as the
RewardModelScorer calls it. Same token ids, same batch, no gradients; the two are timed in
alternating rounds (CPU time of this process; the minimum of the repeats), so machine noise
hits both. Prints ONE JSON line:

    python benchmarks/reward_model_throughput.py                      # tiny, 32 x 256 tokens, vocab 102400
    python benchmarks/reward_model_throughput.py --model small_cpu --vocab 512 --repeats 20

Figures: tokens per second of each side and `reward_model_time_over_policy_time` (the target:
at most 1.2; below 1 because the head replaces a hidden x vocabulary projection).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from megatron_recipes.models import build_model  # noqa: E402
from megatron_recipes.models.config import ModelConfig  # noqa: E402
from megatron_recipes.reward_models.model import build_reward_model  # noqa: E402
from megatron_recipes.runtime.config import ParallelismConfig  # noqa: E402
from megatron_recipes.runtime.distributed import initialize_runtime, shutdown_runtime  # noqa: E402

PRESETS = {"tiny": {}, "small_cpu": {"name": "small_cpu", "hidden_size": 128, "ffn_hidden_size": 352}}


def forward_seconds(chunk, tokens, positions) -> float:
    started = time.process_time()
    with torch.no_grad():
        chunk(tokens, positions, None)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--vocab", type=int, default=102400, help="the policy's vocabulary (DeepSeek's by default)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    initialize_runtime("cpu", ParallelismConfig(), seed=5)
    config = ModelConfig(**PRESETS[arguments.model])
    policy = build_model(config, ParallelismConfig(), arguments.vocab)[0].eval()
    reward = build_reward_model(config, ParallelismConfig(), arguments.vocab, kind="orm")[0].eval()
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, arguments.vocab, (arguments.batch, arguments.length), generator=generator)
    positions = torch.arange(arguments.length).unsqueeze(0).expand(arguments.batch, -1)
    # Same work on both sides: the same ids through decoders of the same sizes.
    assert sum(p.numel() for p in policy.decoder.parameters()) == sum(p.numel() for p in reward.decoder.parameters())
    policy_times, reward_times = [], []
    for repeat in range(arguments.repeats + 1):
        policy_seconds = forward_seconds(policy, tokens, positions)
        reward_seconds = forward_seconds(reward, tokens, positions)
        if repeat:  # the first round warms up both
            policy_times.append(policy_seconds)
            reward_times.append(reward_seconds)
    shutdown_runtime()
    count = arguments.batch * arguments.length
    policy_best, reward_best = min(policy_times), min(reward_times)
    print(
        json.dumps(
            {
                "model": arguments.model,
                "vocab": arguments.vocab,
                "batch_tokens": count,
                "repeats": arguments.repeats,
                "reward_model_tokens_per_second": round(count / reward_best, 1),
                "policy_forward_tokens_per_second": round(count / policy_best, 1),
                "reward_model_time_over_policy_time": round(reward_best / policy_best, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
