"""Batched sampling from a megatron-core GPTModel with a KV cache (rollouts and evaluation).

    generator = MegatronGenerator(model_chunk, tokenizer, vocab_size, context_length, max_batch_size=32)
    generator.generate(prompts, SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=512,
                       stop=["\\nUser:"], n=4, seed=0)) -> list[list[Generation]]   # the shared interface
    generator.generate_ids(prompt_ids, params) -> list[SampledSequence]          # token level (GRPO)

Registered as `megatron` in the generation interface: `python -m megatron_recipes.evaluate
generator=megatron generator.checkpoint=DIR` builds the model from the checkpoint's recorded
config (`build_megatron_generator`).

How a batch is sampled (static batching, lock-step decoding):
- prompts are right-padded; the first forward pass (prefill) encodes the first `min(prompt
  lengths)` tokens of every row, then each step feeds one token per row and samples the next;
  a row whose prompt is longer than the current position gets its own prompt token instead of
  the sample (megatron's legacy static engine does the same). Positions are therefore exact for
  every row and no attention mask is needed: causal in the prefill, the cache afterwards.
  Requests are sorted by prompt length before batching, so rows of a batch have similar lengths.
- the forward passes run through generation/cached_decoder.py: a lean KV-cache decoder over the
  model's own weights where it covers the architecture (the local layer spec: every CPU run),
  else megatron-core's static inference path (`StaticInferenceContext`); both compute the same
  function and are tested to sample the same tokens. With the lean decoder, rows whose prefilled
  prefix is the same (GRPO's G samples of one question) share one prefill, whose cache rows are
  then repeated, and finished rows are dropped from the cache once they are an eighth of it and
  the steps left would decode them for longer than the copy takes, so long rollouts stop paying
  for rows that are done and rows that end together near the end are not copied out for nothing.
- sampling (generation/sampling.py): temperature 0 is greedy; otherwise softmax(logits / T)
  restricted to the smallest set of tokens whose probability reaches top_p, drawn by inverse
  transform sampling. Every request row has its own uniform stream derived from `params.seed`
  and its index in the request, so a row's samples do not depend on the other rows, on
  max_batch_size or on which rows finished first (reproducible for the same seed and requests).
- a row stops at the end-of-document token, when its decoded tail contains a stop string (the
  tails of all rows are decoded in one call per step), at max_new_tokens, or at the model's
  context length. `token_ids` hold every sampled token up to and including the one that ended
  it (EOD or the token completing the stop string); `text` is the decoded continuation without
  EOD and cut before the first stop string.
- `logprobs` are log pi(token) of the sampled tokens under the policy distribution defined in
  generation/logprobs.py (softmax of logits / T over the real vocabulary, before top-p; T = 1 for
  greedy), the same quantity a trainer forward pass computes for those tokens.
- tensor parallelism: the output layer's logits are gathered on every rank; ranks of a
  tensor-parallel group sample identically and the sampled tokens are broadcast from the first
  rank of the group so that they can never diverge. Pipeline parallelism is not supported here
  (one model chunk holding every layer).
- megatron-core's dynamic engine (paged cache, continuous batching, CUDA graphs) needs flash-attn
  on a GPU; `dynamic_engine_available()` says whether it could be used. This generator uses the
  cached decoder or the static context, so the same code runs on the CPU and on GPUs.

Cost: one prefill of (distinct prefixes) x min-prompt tokens, then one forward of (running rows)
x 1 token per step (max prompt length - min prompt length + longest generation steps), plus
O(rows x vocab) sampling per step; the KV cache holds 2 x layers x batch x (prompt +
max_new_tokens) x kv-hidden values per batch.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_recipes.generation.cached_decoder import CachedDecoder, build_decoder
from megatron_recipes.generation.interface import (
    FINISH_LENGTH,
    FINISH_STOP,
    Generation,
    GeneratorUnavailable,
    SamplingParams,
    register_generator,
)
from megatron_recipes.generation.sampling import row_uniforms, sample_next_tokens
from megatron_recipes.generation.tokenizer import load_text_tokenizer
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.models.llama import build_model, resolve_precision
from megatron_recipes.runtime.config import ParallelismConfig
from megatron_recipes.runtime.cpu import device_rewrites_suspended
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

    def __init__(
        self,
        model,
        tokenizer,
        vocab_size: int,
        context_length: int,
        max_batch_size: int = 32,
        decoder: str = "auto",
    ):
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
        # auto: the lean cached decoder where it covers the model, else megatron's static path.
        self.decoder = build_decoder(self.model, decoder)
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
        results: list[SampledSequence | None] = [None] * len(prompt_ids)
        was_training = self.wrapped.training
        self.wrapped.eval()
        try:
            with torch.no_grad(), device_rewrites_suspended(self.decoder.name == CachedDecoder.name):
                for start in range(0, len(order), self.max_batch_size):
                    batch = order[start : start + self.max_batch_size]
                    rows = [list(prompt_ids[i]) for i in batch]
                    for index, sample in zip(batch, self._generate_batch(rows, batch, params, stop_at_code_block)):
                        results[index] = sample
        finally:
            self.wrapped.train(was_training)
        return results  # type: ignore[return-value]

    def _broadcast_in_tensor_parallel_group(self, tokens: torch.Tensor) -> torch.Tensor:
        if parallel_state.model_parallel_is_initialized() and parallel_state.get_tensor_model_parallel_world_size() > 1:
            dist.broadcast(
                tokens,
                src=parallel_state.get_tensor_model_parallel_src_rank(),
                group=parallel_state.get_tensor_model_parallel_group(),
            )
        return tokens

    def _decode_many(self, sequences: list[list[int]]) -> list[str]:
        batched = getattr(self.tokenizer, "decode_batch", None)
        return batched(sequences) if batched is not None else [self.tokenizer.decode(ids) for ids in sequences]

    def _generate_batch(
        self,
        prompts: list[list[int]],
        request_rows: list[int],
        params: SamplingParams,
        stop_at_code_block: bool = False,
    ) -> list[SampledSequence]:
        """Lock-step decoding of one batch (see the module docstring); `request_rows` are the
        rows' indices in the request (their sampling streams)."""
        device = self.device
        batch_size = len(prompts)
        lengths = [len(p) for p in prompts]
        total = min(max(lengths) + params.max_new_tokens, self.context_length)
        tokens = torch.zeros(batch_size, total, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, : len(prompt)] = torch.tensor(prompt[:total], dtype=torch.long)
        tokens = tokens.to(device)
        prompt_lengths = torch.tensor(lengths, device=device)
        budget = min(params.max_new_tokens, total - min(lengths))
        uniforms = row_uniforms(params.seed, request_rows, budget, device) if params.temperature > 0 else None
        sampled = torch.zeros(batch_size, budget, dtype=torch.long, device=device)
        sampled_log_probs = torch.zeros(batch_size, budget, dtype=torch.float32, device=device)
        produced = torch.zeros(batch_size, dtype=torch.long, device=device)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        reasons = [FINISH_LENGTH] * batch_size
        stops = [s for s in params.stop if s]
        tail_tokens = max((len(s) for s in stops), default=0) + 8
        eod = self.tokenizer.eod
        # `live`: the request rows held in the decoder's cache, in cache order.
        live = torch.arange(batch_size, device=device)
        previous, position = 0, min(lengths)
        # Rows whose prefilled prefix is the same (GRPO's G samples of a question) share one
        # prefill: the distinct prefixes are encoded once and their cache rows repeated.
        prefixes: dict[tuple[int, ...], int] = {}
        prefix_of_row = [prefixes.setdefault(tuple(prompt[:position]), len(prefixes)) for prompt in prompts]
        shared_prefill = self.decoder.can_select_rows and len(prefixes) < batch_size
        while position < total and live.numel() > 0:
            if previous == 0 and shared_prefill:
                representatives = torch.tensor([prefix_of_row.index(i) for i in range(len(prefixes))], device=device)
                repeat = torch.tensor(prefix_of_row, device=device)
                self.decoder.start(len(prefixes), total)
                logits = self.decoder.forward(tokens[representatives, :position], 0)[repeat]
                self.decoder.select_rows(repeat)
            elif previous == 0:
                self.decoder.start(batch_size, total)
                logits = self.decoder.forward(tokens[:, :position], 0)
            else:
                logits = self.decoder.forward(tokens[live, previous:position], previous)
            self.stats["forward_passes"] += 1
            steps = produced[live].clamp(max=budget - 1)
            row_uniform = uniforms[live, steps] if uniforms is not None else None
            next_tokens, next_log_probs = sample_next_tokens(
                logits, params.temperature, params.top_p, self.vocab_size, row_uniform
            )
            next_tokens = self._broadcast_in_tensor_parallel_group(next_tokens.contiguous())
            # Rows past their prompt take the sample; the others feed their own next prompt token.
            generating = (position >= prompt_lengths[live]) & ~finished[live]
            rows = live[generating]
            if rows.numel():
                chosen = next_tokens[generating]
                tokens[rows, position] = chosen
                slots = produced[rows]
                sampled[rows, slots] = chosen
                sampled_log_probs[rows, slots] = next_log_probs[generating]
                produced[rows] = slots + 1
                ended = self._finished_rows(
                    rows, chosen, produced, sampled, stops, tail_tokens, stop_at_code_block, eod, reasons
                )
                at_limit = (produced[rows] >= params.max_new_tokens) | (position + 1 >= total)
                finished[rows] = ended | at_limit
            # Drop finished rows from the cache once they are an eighth of it (bounded waste,
            # few copies) and the steps left would decode them for longer than the copy takes
            # (about one step: the cache is read once per step and copied once per drop): rows that
            # end together near the end of a rollout are decoded to it instead. A decoder that
            # cannot drop rows keeps decoding them.
            running = ~finished[live]
            dead = live.numel() - int(running.sum())
            if dead == live.numel():
                break
            if dead and dead * 8 >= live.numel():
                # The most steps a running row can still take (its prompt, then its budget).
                kept = live[running]
                left = (prompt_lengths[kept] - position - 1).clamp(min=0) + params.max_new_tokens - produced[kept]
                steps_left = min(int(left.max()), total - position - 1)
                if dead * steps_left >= live.numel() and self.decoder.select_rows(running.nonzero().squeeze(-1)):
                    live = live[running]
            previous, position = position, position + 1
        counts = produced.tolist()
        token_lists = [ids[:count] for ids, count in zip(sampled.tolist(), counts)]
        log_prob_lists = [values[:count] for values, count in zip(sampled_log_probs.tolist(), counts)]
        samples = [
            SampledSequence(prompt_ids=list(prompt), token_ids=ids, logprobs=values, finish_reason=reason)
            for prompt, ids, values, reason in zip(prompts, token_lists, log_prob_lists, reasons)
        ]
        texts = self._decode_many(
            [s.token_ids[:-1] if s.token_ids and s.token_ids[-1] == eod else s.token_ids for s in samples]
        )
        for sample, text in zip(samples, texts):
            self._cut_at_stop(sample, text, stops)
        self.stats["batches"] += 1
        self.stats["generated_tokens"] += sum(counts)
        return samples

    def _finished_rows(
        self,
        rows: torch.Tensor,
        chosen: torch.Tensor,
        produced: torch.Tensor,
        sampled: torch.Tensor,
        stops: list[str],
        tail_tokens: int,
        stop_at_code_block: bool,
        eod: int,
        reasons: list[str],
    ) -> torch.Tensor:
        """Which of `rows` (that just sampled `chosen`) end here, and why (in `reasons`): EOD, then
        a stop string in the decoded tail, then a closed ```python block; the length limits are
        the caller's. Stop strings are checked in one batched decode of the rows' tails."""
        ended = chosen == eod
        if not stops and not stop_at_code_block:
            for row in rows[ended].tolist():
                reasons[row] = FINISH_STOP
            return ended
        row_list, ended_list, counts = rows.tolist(), ended.tolist(), produced[rows].tolist()
        for row, is_eod in zip(row_list, ended_list):
            if is_eod:
                reasons[row] = FINISH_STOP
        checked = [index for index, is_eod in enumerate(ended_list) if not is_eod]
        if stops and checked:
            tails = [
                sampled[row_list[index], max(0, counts[index] - tail_tokens) : counts[index]].tolist()
                for index in checked
            ]
            stopped = [any(stop in text for stop in stops) for text in self._decode_many(tails)]
            for index, hit in zip(checked, stopped):
                if hit:
                    ended_list[index] = True
                    reasons[row_list[index]] = FINISH_STOP
            checked = [index for index in checked if not ended_list[index]]
        if stop_at_code_block:
            for index in checked:
                row = row_list[index]
                if closes_python_block(sampled[row, : counts[index]].tolist(), self.tokenizer):
                    ended_list[index] = True
                    reasons[row] = FINISH_TOOL
        return torch.tensor(ended_list, dtype=torch.bool, device=rows.device)

    def _cut_at_stop(self, sample: SampledSequence, text: str, stops: list[str]) -> None:
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
