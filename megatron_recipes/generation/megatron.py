"""Batched sampling from a megatron-core GPTModel with a KV cache (rollouts and evaluation).

    generator = MegatronGenerator(model_chunk, tokenizer, vocab_size, context_length, max_batch_size=32)
    generator.generate(prompts, SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=512,
                       stop=["\\nUser:"], n=4, seed=0)) -> list[list[Generation]]   # the shared interface
    generator.generate_ids(prompt_ids, params) -> list[SampledSequence]          # token level (GRPO)

Registered as `megatron` in the generation interface: `python -m megatron_recipes.evaluate
generator=megatron generator.checkpoint=DIR` builds the model from the checkpoint's recorded
config (`build_megatron_generator`).

How a batch is sampled (megatron-core's static batching, the KV cache of `StaticInferenceContext`
kept by every attention layer):
- prompts are right-padded; the first forward pass (prefill) encodes the first `min(prompt
  lengths)` tokens of every row, then each step feeds one token per row and samples the next;
  a row whose prompt is longer than the current position gets its own prompt token instead of
  the sample (megatron's legacy static engine does the same). Positions are therefore exact for
  every row and no attention mask is needed: causal in the prefill, the cache afterwards.
  Requests are sorted by prompt length before batching, so rows of a batch have similar lengths.
- sampling: temperature 0 is greedy; otherwise softmax(logits / T) restricted to the smallest set
  of tokens whose probability reaches top_p, drawn with a torch.Generator seeded with
  `params.seed` (reproducible for the same requests and max_batch_size).
- a row stops at the end-of-document token, when its decoded tail contains a stop string, at
  max_new_tokens, or at the model's context length. `token_ids` hold every sampled token up to
  and including the one that ended it (EOD or the token completing the stop string); `text` is
  the decoded continuation without EOD and cut before the first stop string.
- `logprobs` are log pi(token) of the sampled tokens under the policy distribution defined in
  generation/logprobs.py (softmax of logits / T over the real vocabulary, before top-p; T = 1 for
  greedy), the same quantity a trainer forward pass computes for those tokens.
- tensor parallelism: the output layer's logits are gathered on every rank; ranks of a
  tensor-parallel group sample identically and the sampled tokens are broadcast from the first
  rank of the group so that they can never diverge. Pipeline parallelism is not supported here
  (one model chunk holding every layer).
- megatron-core's dynamic engine (paged cache, continuous batching) needs flash-attn on a GPU;
  `dynamic_engine_available()` says whether it could be used. This generator uses the static
  context everywhere, so the same code runs on the CPU and on GPUs.

Cost: one prefill of batch x min-prompt tokens, then one forward of batch x 1 token per step
(max prompt length - min prompt length + longest generation steps); the KV cache holds
2 x layers x batch x (prompt + max_new_tokens) x kv-hidden values per batch.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.inference.contexts import StaticInferenceContext

from megatron_recipes.generation.interface import (
    FINISH_LENGTH,
    FINISH_STOP,
    Generation,
    GeneratorUnavailable,
    SamplingParams,
    register_generator,
)
from megatron_recipes.generation.logprobs import full_vocab_log_probs
from megatron_recipes.generation.tokenizer import load_text_tokenizer
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.models.llama import build_model, resolve_precision
from megatron_recipes.runtime.config import ParallelismConfig
from megatron_recipes.runtime.distributed import initialize_runtime
from megatron_recipes.training.checkpointing import CheckpointError, _unwrap, load_model_weights, read_checkpoint_info
from stack_common.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class SampledSequence:
    """One sampled continuation at token level."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)  # sampled tokens, EOD / stop-completing token included
    logprobs: list[float] = field(default_factory=list)  # log pi of each token in token_ids
    finish_reason: str = FINISH_LENGTH
    text: str = ""  # decoded continuation, EOD dropped, cut before the first stop string
    stop: str | None = None  # the stop string that ended it, if any


FINISH_TOOL = "tool"  # a ```python block was closed: the caller runs it and continues


def closes_python_block(token_ids: Sequence[int], tokenizer) -> bool:
    """True when the decoded tokens end with a closed ```python block (the full text is decoded
    only when the last few tokens end with a fence)."""
    if not tokenizer.decode(token_ids[-4:]).rstrip().endswith("```"):
        return False
    text = tokenizer.decode(token_ids).rstrip()
    opening = text.rfind("```python")
    return opening != -1 and text.count("```", opening) >= 2


def dynamic_engine_available() -> bool:
    """megatron-core's DynamicInferenceEngine needs CUDA and flash-attn."""
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def top_p_filter(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every probability outside the smallest set whose mass reaches top_p (rows [b, V]);
    the most likely token is always kept. Returns unnormalised probabilities."""
    if top_p >= 1.0:
        return probabilities
    sorted_probabilities, order = probabilities.sort(dim=-1, descending=True)
    mass_before = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities
    sorted_probabilities = sorted_probabilities.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probabilities).scatter(-1, order, sorted_probabilities)


class MegatronGenerator:
    """The `Generator` of the shared interface, backed by a megatron-core GPTModel (see module docstring).

    model: a GPTModel (or a list holding one chunk; DDP/Float16Module wrappers are looked through)
    holding every layer; tokenizer: generation.tokenizer.TextTokenizer (encode/decode/eod);
    vocab_size: the model's unpadded vocabulary; context_length: the longest prompt + generation.
    """

    def __init__(self, model, tokenizer, vocab_size: int, context_length: int, max_batch_size: int = 32):
        chunks = list(model) if isinstance(model, (list, tuple)) else [model]
        if len(chunks) != 1:
            raise ValueError(
                "the megatron generator needs the whole model in one chunk (pipeline parallelism is not supported)"
            )
        self.wrapped = chunks[0]
        self.model = _unwrap(chunks[0])
        if not (getattr(self.model, "pre_process", True) and getattr(self.model, "post_process", True)):
            raise ValueError("the megatron generator needs pipeline_model_parallel_size=1")
        if getattr(self.model.config, "sequence_parallel", False):
            raise ValueError(
                "the megatron generator needs parallelism.sequence_parallel=false (megatron's static "
                "inference batching does not support sequence parallelism)"
            )
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.max_batch_size = max_batch_size
        self.device = next(self.model.parameters()).device
        self.stats = {"batches": 0, "forward_passes": 0, "generated_tokens": 0}

    # ------------------------------------------------------------------ the shared interface
    def generate(
        self, prompts: Sequence[str], params: SamplingParams, request_ids: Sequence[str] | None = None
    ) -> list[list[Generation]]:
        params.validate()
        prompt_ids = [self.tokenizer.encode(prompt) for prompt in prompts]
        flat = [ids for ids in prompt_ids for _ in range(params.n)]
        samples = self.generate_ids(flat, params)
        results = []
        for index in range(len(prompts)):
            group = samples[index * params.n : (index + 1) * params.n]
            results.append([Generation(s.text, s.token_ids, s.logprobs, s.finish_reason) for s in group])
        return results

    # ------------------------------------------------------------------ token level
    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, stop_at_code_block: bool = False
    ) -> list[SampledSequence]:
        """One continuation per prompt row (duplicate rows for several samples), in input order.
        `stop_at_code_block`: also stop (finish_reason "tool") when the continuation closes a
        ```python block, for tool-integrated rollouts."""
        for ids in prompt_ids:
            if not ids:
                raise ValueError("an empty prompt cannot be continued (no token to condition on)")
            if len(ids) >= self.context_length:
                raise ValueError(
                    f"a prompt of {len(ids)} tokens leaves no room to generate within the context length "
                    f"{self.context_length}"
                )
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        # On the model's device: sampling never copies probabilities to the host.
        generator = torch.Generator(device=self.device).manual_seed(int(params.seed))
        results: list[SampledSequence | None] = [None] * len(prompt_ids)
        was_training = self.wrapped.training
        self.wrapped.eval()
        try:
            for start in range(0, len(order), self.max_batch_size):
                batch = order[start : start + self.max_batch_size]
                rows = [list(prompt_ids[i]) for i in batch]
                for index, sample in zip(batch, self._generate_batch(rows, params, generator, stop_at_code_block)):
                    results[index] = sample
        finally:
            self.wrapped.train(was_training)
        return results  # type: ignore[return-value]

    def _sample(
        self, logits: torch.Tensor, params: SamplingParams, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next tokens [b] and their log pi [b] from last-position logits [b, V_padded]."""
        temperature = params.temperature if params.temperature > 0 else 1.0
        log_probs = full_vocab_log_probs(logits, temperature, self.vocab_size)
        if params.temperature == 0:
            tokens = log_probs.argmax(dim=-1)
        else:
            probabilities = top_p_filter(log_probs.exp(), params.top_p)
            tokens = torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)
        return tokens, log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    def _broadcast_in_tensor_parallel_group(self, tokens: torch.Tensor) -> torch.Tensor:
        if parallel_state.model_parallel_is_initialized() and parallel_state.get_tensor_model_parallel_world_size() > 1:
            dist.broadcast(
                tokens,
                src=parallel_state.get_tensor_model_parallel_src_rank(),
                group=parallel_state.get_tensor_model_parallel_group(),
            )
        return tokens

    @torch.no_grad()
    def _generate_batch(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        generator: torch.Generator,
        stop_at_code_block: bool = False,
    ) -> list[SampledSequence]:
        batch_size = len(prompts)
        lengths = [len(p) for p in prompts]
        total = min(max(lengths) + params.max_new_tokens, self.context_length)
        tokens = torch.zeros(batch_size, total, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, : len(prompt)] = torch.tensor(prompt[:total], dtype=torch.long)
        tokens = tokens.to(self.device)
        prompt_lengths = torch.tensor(lengths, device=self.device)
        samples = [SampledSequence(prompt_ids=list(p)) for p in prompts]
        done = [False] * batch_size
        stops = [s for s in params.stop if s]
        tail_tokens = max((len(s) for s in stops), default=0) + 8
        context = StaticInferenceContext(batch_size, total)
        previous = 0
        position = min(lengths)
        while position < total and not all(done):
            chunk = tokens[:, previous:position]
            positions = torch.arange(previous, position, device=self.device).unsqueeze(0).expand(batch_size, -1)
            if previous == 0:
                context.enable_prefill_mode()
            else:
                context.enable_decode_mode()
            logits = self.model(chunk, positions, None, inference_context=context, runtime_gather_output=True)
            context.increment_sequence_len_offset(chunk.size(1))
            self.stats["forward_passes"] += 1
            next_tokens, next_log_probs = self._sample(logits[:, -1, :], params, generator)
            next_tokens = self._broadcast_in_tensor_parallel_group(next_tokens.contiguous())
            generating = position >= prompt_lengths  # rows past their prompt take the sample
            tokens[:, position] = torch.where(generating, next_tokens, tokens[:, position])
            chosen, chosen_log_probs = next_tokens.tolist(), next_log_probs.tolist()
            for row in range(batch_size):
                if done[row] or position < lengths[row]:
                    continue
                sample = samples[row]
                sample.token_ids.append(chosen[row])
                sample.logprobs.append(chosen_log_probs[row])
                if chosen[row] == self.tokenizer.eod:
                    done[row], sample.finish_reason = True, FINISH_STOP
                elif stops and any(s in self.tokenizer.decode(sample.token_ids[-tail_tokens:]) for s in stops):
                    done[row], sample.finish_reason = True, FINISH_STOP
                elif stop_at_code_block and closes_python_block(sample.token_ids, self.tokenizer):
                    done[row], sample.finish_reason = True, FINISH_TOOL
                elif len(sample.token_ids) >= params.max_new_tokens or position + 1 >= total:
                    done[row], sample.finish_reason = True, FINISH_LENGTH
            previous, position = position, position + 1
        for sample in samples:
            self._finish_text(sample, stops)
        self.stats["batches"] += 1
        self.stats["generated_tokens"] += sum(len(s.token_ids) for s in samples)
        return samples

    def _finish_text(self, sample: SampledSequence, stops: list[str]) -> None:
        ids = (
            sample.token_ids[:-1]
            if sample.token_ids and sample.token_ids[-1] == self.tokenizer.eod
            else sample.token_ids
        )
        text = self.tokenizer.decode(ids)
        cut = len(text)
        for stop in stops:
            found = text.find(stop)
            if found != -1 and found < cut:
                cut, sample.stop = found, stop
        sample.text = text[:cut]


# ---------------------------------------------------------------------------------------------
# The `megatron` entry of the generator registry: a generator built from a checkpoint.
# ---------------------------------------------------------------------------------------------


def build_megatron_generator(
    checkpoint: str | None = None,
    tokenizer: str = "",
    device: str = "auto",
    tensor_model_parallel_size: int = 1,
    max_batch_size: int = 32,
    precision: str = "auto",
    seed: int = 1234,
    **_: object,
) -> MegatronGenerator:
    """Initialise the runtime (one process, or this rank of a torchrun launch), build the model
    recorded in the checkpoint (checkpoint_info.json), load its weights at this layout, and wrap
    it. `tokenizer` defaults to the one the checkpoint's run recorded (train_state.extra.tokenizer),
    else DeepSeek's."""
    if not checkpoint:
        raise GeneratorUnavailable("generator=megatron needs generator.checkpoint=/path/to/run_or_iter_dir")
    try:
        info = read_checkpoint_info(checkpoint)
    except (CheckpointError, FileNotFoundError) as error:
        raise GeneratorUnavailable(f"generator.checkpoint: {error}") from None
    recorded = dict(info.get("model_config") or {})
    if not recorded:
        raise GeneratorUnavailable(f"{checkpoint} records no model_config (not written by these recipes?)")
    vocab_size = int(recorded.pop("vocab_size"))
    model_config = ModelConfig(**{k: v for k, v in recorded.items() if k in ModelConfig.__dataclass_fields__})
    tokenizer_path = tokenizer or (info.get("train_state", {}).get("extra", {}) or {}).get("tokenizer", "")
    text_tokenizer = load_text_tokenizer(tokenizer_path)
    if text_tokenizer.vocab_size > vocab_size:
        raise ConfigError(
            f"the tokenizer {text_tokenizer.path} has {text_tokenizer.vocab_size} tokens but the model only "
            f"{vocab_size}"
        )
    parallelism = ParallelismConfig(
        tensor_model_parallel_size=tensor_model_parallel_size, use_distributed_optimizer=False
    )
    runtime = initialize_runtime(device, parallelism, seed=seed)
    chunks = build_model(
        model_config,
        parallelism,
        vocab_size,
        device=runtime.device,
        precision=resolve_precision(precision, runtime.device),
    )
    load_model_weights(checkpoint, chunks)
    log.info(
        "megatron generator: %s (%s layers, hidden %d) from %s",
        model_config.name,
        model_config.num_layers,
        model_config.hidden_size,
        checkpoint,
    )
    return MegatronGenerator(chunks, text_tokenizer, vocab_size, model_config.max_position_embeddings, max_batch_size)


register_generator("megatron", build_megatron_generator)

__all__ = [
    "FINISH_TOOL",
    "MegatronGenerator",
    "SampledSequence",
    "build_megatron_generator",
    "closes_python_block",
    "dynamic_engine_available",
    "top_p_filter",
]
