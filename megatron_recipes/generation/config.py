"""The `generator` section of the evaluation recipe: which generator (interface.py's registry)
and how it is built. Sampling settings are interface.SamplingParams itself."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_recipes.generation.interface import generator_unavailable_reason
from megatron_recipes.runtime.config import DEVICES, PRECISIONS
from stack_common.checks import require_at_least, require_choice
from stack_common.errors import ConfigError


@dataclass
class GeneratorConfig:
    """`precomputed` reads generations from `path` (JSONL); `megatron` samples from a checkpoint
    with the megatron-core KV-cache generator (generation/megatron.py)."""

    name: str = "precomputed"
    path: str | None = None
    # generator=megatron: a run directory (its `latest`) or an iter_* checkpoint directory; the
    # model is rebuilt from the checkpoint's recorded config.
    checkpoint: str | None = None
    # tokenizer.json (or its directory); empty = the one the checkpoint's run recorded, else DeepSeek's.
    tokenizer: str = ""
    device: str = "auto"
    precision: str = "auto"
    tensor_model_parallel_size: int = 1
    max_batch_size: int = 32

    def validate(self) -> None:
        reason = generator_unavailable_reason(self.name)
        if reason:
            raise ConfigError(reason)
        if self.name == "precomputed" and not self.path:
            raise ConfigError("generator=precomputed needs generator.path=/path/to/generations.jsonl")
        if self.name == "megatron" and not self.checkpoint:
            raise ConfigError(
                "generator=megatron needs generator.checkpoint=/path/to/checkpoints (a run or iter_* directory)"
            )
        require_choice("generator.device", self.device, DEVICES)
        require_choice("generator.precision", self.precision, PRECISIONS)
        require_at_least("generator.tensor_model_parallel_size", self.tensor_model_parallel_size, 1)
        require_at_least("generator.max_batch_size", self.max_batch_size, 1)
