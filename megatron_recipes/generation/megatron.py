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
        # The cached decoder reads the weights and applies no dropout: the modules' mode does not
        # matter to it, and switching it walks every module twice per call.
        switch_mode = self.decoder.uses_module_forward and was_training
        if switch_mode:
            self.wrapped.eval()
        try:
            with torch.no_grad(), device_rewrites_suspended(self.decoder.name == CachedDecoder.name):
                for start in range(0, len(order), self.max_batch_size):
                    batch = order[start : start + self.max_batch_size]
                    rows = [list(prompt_ids[i]) for i in batch]
                    for index, sample in zip(batch, self._generate_batch(rows, batch, params, stop_at_code_block)):
                        results[index] = sample
        finally:
            if switch_mode:
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
        rows' indices in the request (their sampling streams).

        The state of the rows in the decoder's cache lives in tensors of the cache's row order,
        laid out by position, so that a step reads and writes one column of each: every row's
        sequence (prompt, then samples), the log-probs of the samples, the uniforms, plus the
        position where each row ends (its limit until EOD or a stop string ends it sooner). Rows
        leave these tensors only when the cache drops them."""
        device = self.device
        batch_size = len(prompts)
        lengths = [len(p) for p in prompts]
        total = min(max(lengths) + params.max_new_tokens, self.context_length)
        # Every row's sequence: its prompt, then zeros where its samples will go.
        tokens = torch.tensor([prompt[:total] + [0] * (total - len(prompt)) for prompt in prompts], device=device)
        prompt_lengths = torch.tensor(lengths, device=device)
        budget = min(params.max_new_tokens, total - min(lengths))
        uniforms = None
        if params.temperature > 0:
            # A row's k-th sample (at position prompt length + k) takes the k-th number of its stream.
            streams = row_uniforms(params.seed, request_rows, budget, device)
            steps = torch.arange(total, device=device).unsqueeze(0) - prompt_lengths.unsqueeze(1)
            uniforms = streams.gather(1, steps.clamp(0, budget - 1))
        log_probs = torch.zeros(batch_size, total, dtype=torch.float32, device=device)
        # The last position where a row samples: max_new_tokens or the context, unless it ends sooner.
        ends = (prompt_lengths + params.max_new_tokens - 1).clamp(max=total - 1)
        reasons = [FINISH_LENGTH] * batch_size
        stops = [s for s in params.stop if s]
        checks_text = bool(stops) or stop_at_code_block
        tail_tokens = max((len(s) for s in stops), default=0) + 8
        eod = self.tokenizer.eod
        longest_prompt = max(lengths)
        # `live`: the request rows held in the decoder's cache, in cache order, and their state.
        live = torch.arange(batch_size, device=device)
        live_tokens, live_log_probs, live_uniforms, live_lengths, live_ends = (
            tokens,
            log_probs,
            uniforms,
            prompt_lengths,
            ends,
        )
        previous, position = 0, min(lengths)
        # Rows whose prefilled prefix is the same (GRPO's G samples of a question) share one
        # prefill: the distinct prefixes are encoded once and their cache rows repeated.
        prefixes: dict[tuple[int, ...], int] = {}
        prefix_of_row = [prefixes.setdefault(tuple(prompt[:position]), len(prefixes)) for prompt in prompts]
        shared_prefill = self.decoder.can_select_rows and len(prefixes) < batch_size
        while position < total:
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
                logits = self.decoder.forward(live_tokens[:, previous:position], previous)
            self.stats["forward_passes"] += 1
            next_tokens, next_log_probs = sample_next_tokens(
                logits,
                params.temperature,
                params.top_p,
                self.vocab_size,
                live_uniforms[:, position] if live_uniforms is not None else None,
            )
            next_tokens = self._broadcast_in_tensor_parallel_group(next_tokens.contiguous())
            live_log_probs[:, position] = next_log_probs
            # Rows past their prompt take the sample; the others feed their own next prompt token.
            # (Rows that have ended take samples too, never read: they are past their end.)
            if position < longest_prompt:
                sampling = position >= live_lengths
                next_tokens = torch.where(sampling, next_tokens, live_tokens[:, position])
                ended = (next_tokens == eod) & sampling
            else:
                ended = next_tokens == eod
            live_tokens[:, position] = next_tokens
            if checks_text:
                ended = self._text_stops(
                    live,
                    live_tokens,
                    live_lengths,
                    live_ends,
                    ended,
                    position,
                    stops,
                    tail_tokens,
                    stop_at_code_block,
                    reasons,
                )
            live_ends.masked_fill_(ended & (live_ends > position), position)
            # Drop finished rows from the cache once they are an eighth of it (bounded waste,
            # few copies) and the steps left would decode them for longer than the copy takes
            # (about one step: the cache is read once per step and copied once per drop): rows that
            # end together near the end of a rollout are decoded to it instead. A decoder that
            # cannot drop rows keeps decoding them.
            running = live_ends > position
            kept = int(running.sum())
            if kept == 0:
                break
            dead = live.numel() - kept
            if dead and dead * 8 >= live.numel():
                index = running.nonzero().squeeze(-1)
                # The most steps a running row can still take (its prompt, then its budget).
                kept_lengths = live_lengths[index]
                left = (
                    (kept_lengths - position - 1).clamp(min=0)
                    + params.max_new_tokens
                    - (position + 1 - kept_lengths).clamp(min=0)
                )
                steps_left = min(int(left.max()), total - position - 1)
                if dead * steps_left >= live.numel() and self.decoder.select_rows(index):
                    if live_tokens is not tokens:  # the rows leaving keep their state in the batch's tensors
                        self._store_rows(live, live_tokens, live_log_probs, live_ends, tokens, log_probs, ends)
                    live = live[index]
                    live_tokens, live_log_probs, live_lengths, live_ends = (
                        live_tokens[index],
                        live_log_probs[index],
                        live_lengths[index],
                        live_ends[index],
                    )
                    live_uniforms = live_uniforms[index] if live_uniforms is not None else None
            previous, position = position, position + 1
        if live_tokens is not tokens:
            self._store_rows(live, live_tokens, live_log_probs, live_ends, tokens, log_probs, ends)
        counts = (ends - prompt_lengths + 1).tolist()
        token_rows, log_prob_rows = tokens.tolist(), log_probs.tolist()
        samples = []
        for row, (prompt, count) in enumerate(zip(prompts, counts)):
            length = len(prompt)
            ids = token_rows[row][length : length + count]
            if ids and ids[-1] == eod:
                reasons[row] = FINISH_STOP
            samples.append(
                SampledSequence(
                    prompt_ids=list(prompt),
                    token_ids=ids,
                    logprobs=log_prob_rows[row][length : length + count],
                    finish_reason=reasons[row],
                )
            )
        texts = self._decode_many(
            [s.token_ids[:-1] if s.token_ids and s.token_ids[-1] == eod else s.token_ids for s in samples]
        )
        for sample, text in zip(samples, texts):
            self._cut_at_stop(sample, text, stops)
        self.stats["batches"] += 1
        self.stats["generated_tokens"] += sum(counts)
        return samples

    @staticmethod
    def _store_rows(live, live_tokens, live_log_probs, live_ends, tokens, log_probs, ends) -> None:
        """The live rows' state (cache order) into the batch's tensors (request-batch order)."""
        tokens[live] = live_tokens
        log_probs[live] = live_log_probs
        ends[live] = live_ends

    def _text_stops(
        self,
        live: torch.Tensor,
        live_tokens: torch.Tensor,
        live_lengths: torch.Tensor,
        live_ends: torch.Tensor,
        ended: torch.Tensor,
        position: int,
        stops: list[str],
        tail_tokens: int,
        stop_at_code_block: bool,
        reasons: list[str],
    ) -> torch.Tensor:
        """`ended` (the live rows whose sample at `position` is EOD) and the live rows that end at
        `position` by a stop string in their decoded tail, then by a closed ```python block (their
        reasons recorded in `reasons`); only rows sampling there and not ended are checked. Stop
        strings are checked in one batched decode of the rows' tails."""
        sampling = (position >= live_lengths) & (live_ends >= position) & ~ended
        checked = sampling.nonzero().squeeze(-1).tolist()
        if not checked:
            return ended
        rows, lengths = live.tolist(), live_lengths.tolist()
        hits: list[int] = []
        if stops:
            window_start = max(0, position + 1 - tail_tokens)
            window = live_tokens[:, window_start : position + 1].tolist()
            tails = [window[index][max(lengths[index], window_start) - window_start :] for index in checked]
            for index, text in zip(checked, self._decode_many(tails)):
                if any(stop in text for stop in stops):
                    hits.append(index)
                    reasons[rows[index]] = FINISH_STOP
            checked = [index for index in checked if reasons[rows[index]] != FINISH_STOP]
        if stop_at_code_block:
            for index in checked:
                if closes_python_block(live_tokens[index, lengths[index] : position + 1].tolist(), self.tokenizer):
                    hits.append(index)
                    reasons[rows[index]] = FINISH_TOOL
        if hits:
            ended = ended.clone()
            ended[hits] = True
        return ended

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
