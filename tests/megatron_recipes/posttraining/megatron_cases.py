"""Cases that run megatron-core in this process with the CPU runtime layer (process-wide), so
test_megatron_paths.py runs this file as its own pytest process. Not collected directly (the
file name does not start with test_).

Covered: KV-cache generation equals a no-cache greedy reference token for token (ragged prompts,
several batches); the lean cached decoder samples what megatron's static inference path samples
(the kept reference path: greedy and seeded sampling, top-p, stop strings, shared prefills,
finished rows dropped); a row's samples do not depend on its batch; sampler log-probs equal a
forward pass's; stop strings, EOD, max_new_tokens;
seeded sampling; the shared Generator interface; packed SFT attention is blocked across
examples; the GRPO loss wired through megatron's schedule equals the readable reference; the
shared-prefix log-prob pass equals the forward pass, and its training forward gives megatron's
loss and gradients; the first update's pi_old from its own
forward gives the old path's loss and gradients.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType

from megatron_recipes.data.config import ChatTemplateConfig
from megatron_recipes.data.rl_prompts import PromptRecord
from megatron_recipes.data.sft import block_causal_mask
from megatron_recipes.generation.interface import Generation, Generator, SamplingParams
from megatron_recipes.generation.logprobs import vocab_parallel_log_probs
from megatron_recipes.generation.megatron import MegatronGenerator, top_p_filter
from megatron_recipes.generation.tokenizer import TextTokenizer
from megatron_recipes.models.attention import FusedDotProductAttention
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.models.llama import build_model
from megatron_recipes.rl.config import RlConfig
from megatron_recipes.rl.objectives import GrpoLossSettings, reference_grpo_loss
from megatron_recipes.rl.rollout import generate_rollouts, rollout_batch
from megatron_recipes.rl.trainer import (
    grpo_loss_function,
    policy_forward,
    response_log_probs,
    sequence_log_probs,
    shared_prefix_decoder,
    shared_prefix_forward,
)
from megatron_recipes.runtime.config import ParallelismConfig
from megatron_recipes.runtime.distributed import initialize_runtime, shutdown_runtime
from tests.megatron_recipes.posttraining.arithmetic import (
    CODE_TEXTS,
    chat_texts,
    train_small_tokenizer,
    write_arithmetic_sft,
)

VOCAB = 400


@pytest.fixture(scope="module")
def runtime():
    yield initialize_runtime("cpu", ParallelismConfig(), seed=11)
    shutdown_runtime()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    work = tmp_path_factory.mktemp("tok")
    records = write_arithmetic_sft(work / "c.jsonl", 300)
    return TextTokenizer(str(train_small_tokenizer(work / "tok", chat_texts(records) + CODE_TEXTS * 10, VOCAB)))


@pytest.fixture(scope="module")
def model(runtime, tokenizer):
    # Large initial weights: a random model whose greedy continuations differ between prompts.
    config = ModelConfig(
        num_layers=2,
        hidden_size=64,
        ffn_hidden_size=128,
        num_attention_heads=4,
        max_position_embeddings=256,
        init_method_std=0.3,
    )
    chunks = build_model(config, ParallelismConfig(), tokenizer.vocab_size)
    return chunks


def generator_for(model, tokenizer, batch_size=3, decoder="auto"):
    return MegatronGenerator(
        model, tokenizer, tokenizer.vocab_size, context_length=256, max_batch_size=batch_size, decoder=decoder
    )


PROMPTS = [
    "User: Calculate 3 + 9.\n\nAssistant:",
    "User: What is 6 * 7?",
    "Calculate",
    "```python\nprint(6 * 7)\n```\n",
    "User: Calculate 1 + 1.\nPlease reason step by step, and put your final answer within \\boxed{}.\n\nAssistant: The",
]


def full_forward_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits [len(ids), V] of one sequence without any cache."""
    chunk = model[0]
    chunk.eval()
    with torch.no_grad():
        tokens = torch.tensor([ids])
        return chunk(tokens, torch.arange(len(ids)).unsqueeze(0), None)[0]


def test_kv_cache_greedy_equals_the_no_cache_reference(model, tokenizer):
    prompt_ids = [tokenizer.encode(p) for p in PROMPTS]
    assert len({len(p) for p in prompt_ids}) >= 4  # ragged prompt lengths
    generator = generator_for(model, tokenizer, batch_size=3)  # 5 prompts -> two batches
    samples = generator.generate_ids(prompt_ids, SamplingParams(temperature=0.0, max_new_tokens=20))
    assert generator.stats["batches"] == 2
    continuations = set()
    for prompt, sample in zip(prompt_ids, samples):
        sequence = list(prompt)
        reference = []
        for _ in range(len(sample.token_ids)):
            next_token = int(full_forward_logits(model, sequence)[-1, : tokenizer.vocab_size].argmax())
            reference.append(next_token)
            sequence.append(next_token)
            if next_token == tokenizer.eod:
                break
        assert sample.token_ids == reference
        assert len(reference) == 20 or reference[-1] == tokenizer.eod
        continuations.add(tuple(reference))
    assert len(continuations) >= 3  # not one degenerate continuation for every prompt


SAMPLING_CASES = [
    dict(temperature=0.0, max_new_tokens=30),
    dict(temperature=0.0, max_new_tokens=30, stop=[" +", "\n"]),
    dict(temperature=1.0, max_new_tokens=30, seed=4),
    dict(temperature=0.7, top_p=0.9, max_new_tokens=30, stop=["="], seed=5),
]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_cached_decoder_samples_what_megatrons_static_path_samples(model, tokenizer, batch_size):
    # Every prompt twice: rows with the same prompt share one prefill in the cached decoder.
    prompt_ids = [tokenizer.encode(p) for p in PROMPTS] * 2
    cached = generator_for(model, tokenizer, batch_size)
    static = generator_for(model, tokenizer, batch_size, decoder="megatron_static")
    assert cached.decoder.name == "cached" and static.decoder.name == "megatron_static"
    reasons = set()
    for case in SAMPLING_CASES:
        params = SamplingParams(**case)
        fast, reference = cached.generate_ids(prompt_ids, params), static.generate_ids(prompt_ids, params)
        for ours, theirs in zip(fast, reference):
            assert (ours.token_ids, ours.finish_reason, ours.text, ours.stop) == (
                theirs.token_ids,
                theirs.finish_reason,
                theirs.text,
                theirs.stop,
            )
            assert torch.allclose(torch.tensor(ours.logprobs), torch.tensor(theirs.logprobs), atol=1e-4)
        reasons |= {(s.finish_reason, len(s.token_ids) < 30) for s in fast}
    # The cases stop rows early (stop strings: finished rows leave the cache) and run some to the end.
    assert ("stop", True) in reasons and ("length", False) in reasons


def test_a_rows_samples_do_not_depend_on_its_batch(model, tokenizer):
    prompt_ids = [tokenizer.encode(p) for p in PROMPTS] * 2
    params = SamplingParams(1.0, 1.0, 16, stop=["="], seed=8)
    one_by_one = generator_for(model, tokenizer, 1).generate_ids(prompt_ids, params)
    together = generator_for(model, tokenizer, 8).generate_ids(prompt_ids, params)
    assert [s.token_ids for s in one_by_one] == [s.token_ids for s in together]
    # Identical prompts are different rows of the request: their samples differ.
    assert len({tuple(s.token_ids) for s in together}) > len(PROMPTS)


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9)])
def test_sampler_log_probs_equal_a_forward_pass(model, tokenizer, temperature, top_p):
    prompt_ids = [tokenizer.encode(p) for p in PROMPTS[:3]]
    samples = generator_for(model, tokenizer, 8).generate_ids(
        prompt_ids * 2, SamplingParams(temperature, top_p, 16, seed=5)
    )
    for sample in samples:
        sequence = sample.prompt_ids + sample.token_ids
        logits = full_forward_logits(model, sequence[:-1]).unsqueeze(0)
        forward = vocab_parallel_log_probs(
            logits, torch.tensor([sequence[1:]]), temperature or 1.0, tokenizer.vocab_size
        )[0]
        expected = forward[len(sample.prompt_ids) - 1 :]
        assert torch.allclose(torch.tensor(sample.logprobs), expected, atol=2e-4), (sample.logprobs, expected.tolist())


def test_seeded_sampling_is_reproducible_and_seeds_differ(model, tokenizer):
    generator = generator_for(model, tokenizer, 4)
    first = [
        s.token_ids
        for s in generator.generate_ids([tokenizer.encode(PROMPTS[0])] * 4, SamplingParams(1.0, 1.0, 12, seed=3))
    ]
    again = [
        s.token_ids
        for s in generator.generate_ids([tokenizer.encode(PROMPTS[0])] * 4, SamplingParams(1.0, 1.0, 12, seed=3))
    ]
    other = [
        s.token_ids
        for s in generator.generate_ids([tokenizer.encode(PROMPTS[0])] * 4, SamplingParams(1.0, 1.0, 12, seed=4))
    ]
    assert first == again and first != other
    assert len({tuple(t) for t in first}) > 1  # samples of one prompt differ


def test_stop_strings_end_generation_and_are_cut_from_the_text(model, tokenizer):
    generator = generator_for(model, tokenizer, 4)
    prompt = tokenizer.encode(PROMPTS[0])
    free = generator.generate_ids([prompt], SamplingParams(0.0, max_new_tokens=24))[0]
    text = free.text
    stop = text[6:9]
    assert len(stop) == 3 and stop in text
    first = text.index(stop)
    stopped = generator.generate_ids([prompt], SamplingParams(0.0, max_new_tokens=24, stop=[stop, "never-there"]))[0]
    assert stopped.finish_reason == "stop" and stopped.stop == stop
    assert stopped.text == text[:first]
    # Tokens end with the one completing the stop string, and are the greedy prefix.
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert stop in tokenizer.decode(stopped.token_ids) and stop not in tokenizer.decode(stopped.token_ids[:-1])
    # max_new_tokens ends a free run with finish_reason "length".
    assert free.finish_reason == "length" and len(free.token_ids) == 24


def test_end_of_document_token_ends_generation(model, tokenizer):
    prompt = tokenizer.encode(PROMPTS[1])
    free = generator_for(model, tokenizer).generate_ids([prompt], SamplingParams(0.0, max_new_tokens=24))[0]
    # Declare the 5th greedy token the end-of-document token (a real tokenizer option).
    chosen = free.token_ids[4]
    first = free.token_ids.index(chosen)
    eod_tokenizer = TextTokenizer(tokenizer.path, eod_token=tokenizer.tokenizer.id_to_token(chosen))
    assert eod_tokenizer.eod == chosen
    ended = generator_for(model, eod_tokenizer).generate_ids([prompt], SamplingParams(0.0, max_new_tokens=24))[0]
    assert ended.finish_reason == "stop" and ended.token_ids == free.token_ids[: first + 1]
    assert ended.text == eod_tokenizer.decode(free.token_ids[:first])


def test_shared_generator_interface_groups_n_samples_per_prompt(model, tokenizer):
    generator = generator_for(model, tokenizer, 8)
    assert isinstance(generator, Generator)
    results = generator.generate(PROMPTS[:2], SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=1))
    assert [len(r) for r in results] == [3, 3]
    assert all(isinstance(g, Generation) and len(g.token_ids) == len(g.logprobs) > 0 for r in results for g in r)


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probabilities = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.05, 0.9, 0.0]])
    kept = top_p_filter(probabilities, 0.75)
    assert torch.equal(kept > 0, torch.tensor([[True, True, False, False], [False, False, True, False]]))
    assert torch.equal(kept[kept > 0], probabilities[kept > 0])
    assert torch.equal(top_p_filter(probabilities, 1.0), probabilities)


def test_packed_examples_do_not_attend_to_each_other(model, tokenizer):
    chunk = model[0]
    chunk.eval()
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, tokenizer.vocab_size, (10,), generator=generator)
    changed_a = torch.randint(0, tokenizer.vocab_size, (10,), generator=generator)
    b = torch.randint(0, tokenizer.vocab_size, (12,), generator=generator)
    padding = torch.full((2,), tokenizer.eod)
    segments = torch.tensor([[1] * 10 + [2] * 12 + [0] * 2])
    positions = torch.arange(24).unsqueeze(0)

    def logits(first, mask):
        with torch.no_grad():
            return chunk(torch.cat([first, b, padding]).unsqueeze(0), positions, mask)[0]

    mask = block_causal_mask(segments)
    packed, packed_changed = logits(a, mask), logits(changed_a, mask)
    assert (packed[10:22] - packed_changed[10:22]).abs().max() < 1e-5  # B does not see A
    assert (packed[:10] - packed_changed[:10]).abs().max() > 1e-2  # (A's own logits do change)
    # Negative control: plain causal attention lets B see A.
    causal, causal_changed = logits(a, None), logits(changed_a, None)
    assert (causal[10:22] - causal_changed[10:22]).abs().max() > 1e-2
    # B packed after A = B alone: rotary scores depend only on distances.
    with torch.no_grad():
        alone = chunk(b.unsqueeze(0), torch.arange(12).unsqueeze(0), None)[0]
    assert (alone - packed[10:22]).abs().max() < 1e-4


def test_grpo_loss_through_megatron_equals_the_reference(model, tokenizer):
    records = [PromptRecord(f"q{i}", f"q{i}", str(i), p) for i, p in enumerate(PROMPTS[:3])]
    samples = generate_rollouts(
        generator_for(model, tokenizer, 8),
        records,
        4,
        SamplingParams(1.0, 1.0, 10, seed=2),
        tokenizer,
        ChatTemplateConfig(),
    )
    for index, sample in enumerate(samples):  # rewards by hand: groups 0 and 1 mixed, group 2 all 1
        sample.reward = 1.0 if sample.group == 2 or index % 2 == 0 else 0.0
        sample.rewards = {"math_accuracy": sample.reward}
    rl = RlConfig(kl_coefficient=0.04, epsilon_low=0.2, epsilon_high=0.05)
    batch = rollout_batch(samples, tokenizer.eod, rl.advantage_estimator, rl.advantage_epsilon)
    assert batch.zero_variance.tolist() == [False] * 8 + [True] * 4
    old = sequence_log_probs(model, batch, 5, 1.0, tokenizer.vocab_size)
    # pi_old recomputed by the trainer's forward equals the sampler's log-probs on response tokens.
    for row, sample in enumerate(samples):
        first = len(sample.prompt_ids) - 1
        assert torch.allclose(
            old[row, first : first + len(sample.response_ids)], torch.tensor(sample.sampler_logprobs), atol=2e-4
        )
    # ... so rl.old_logp_from_sampler may take pi_old from the batch without the forward pass.
    assert torch.allclose(batch.sampler_logp * batch.mask, old * batch.mask, atol=2e-4)
    assert batch.sampler_logp[batch.mask == 0].eq(0).all()
    assert (batch.mask.sum(dim=1) == torch.tensor([len(s.response_ids) for s in samples], dtype=torch.float32)).all()
    batch.old_logp = old - 0.1 * batch.mask  # pretend the policy moved: ratios e^0.1 > 1 + eps for some
    batch.ref_logp = old + 0.05
    settings = GrpoLossSettings.from_config(rl)
    loss_fn = grpo_loss_function(settings, 1.0, tokenizer.vocab_size)
    rows = torch.arange(len(batch))
    micro_batch = batch.rows(rows)
    chunk = model[0]
    chunk.eval()
    with torch.no_grad():
        numerator, denominator, metrics = loss_fn(micro_batch, policy_forward(chunk, micro_batch))
    expected = reference_grpo_loss(
        old.tolist(),
        batch.old_logp.tolist(),
        batch.ref_logp.tolist(),
        batch.advantages.tolist(),
        batch.mask.tolist(),
        settings,
    )
    assert float(numerator / denominator) == pytest.approx(expected, abs=1e-5)
    assert metrics["clip_fraction"][0] > 0 and not math.isnan(float(metrics["entropy"][0]))


def _rollout_batch(model, tokenizer, prompts, group_size, seed):
    records = [PromptRecord(f"q{i}", f"q{i}", str(i), p) for i, p in enumerate(prompts)]
    samples = generate_rollouts(
        generator_for(model, tokenizer, 8),
        records,
        group_size,
        SamplingParams(1.0, 1.0, 10, seed=seed),
        tokenizer,
        ChatTemplateConfig(),
    )
    for index, sample in enumerate(samples):
        sample.reward = float(index % 2)
        sample.rewards = {"math_accuracy": sample.reward}
    return rollout_batch(samples, tokenizer.eod, "outcome", 1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prefix_log_probs_equal_the_forward_pass(model, tokenizer, temperature):
    # Ragged prompts, G = 4 samples each, micro-batches of 5 rows that split groups.
    batch = _rollout_batch(model, tokenizer, PROMPTS, 4, seed=3)
    batch.mask[1] = 0.0  # a row without trained tokens: no output, no work
    decoder = shared_prefix_decoder(model)
    assert decoder is not None
    forward = sequence_log_probs(model, batch, 5, temperature, tokenizer.vocab_size)
    shared = sequence_log_probs(model, batch, 5, temperature, tokenizer.vocab_size, decoder=decoder)
    assert forward.shape == shared.shape == batch.mask.shape
    assert shared[batch.mask == 0].eq(0).all() and shared[batch.mask > 0].lt(0).all()
    assert torch.allclose(shared, forward, rtol=1e-5, atol=1e-5)  # float rounding of a different op order
    rows = torch.tensor([2, 7, 11, 12])  # a subset: the others stay 0
    subset = sequence_log_probs(model, batch, 3, temperature, tokenizer.vocab_size, rows=rows, decoder=decoder)
    subset_forward = sequence_log_probs(model, batch, 3, temperature, tokenizer.vocab_size, rows=rows)
    assert torch.allclose(subset[rows], forward[rows], rtol=1e-5, atol=1e-5)
    assert torch.allclose(subset_forward[rows], forward[rows], rtol=1e-6, atol=1e-6)
    others = torch.ones(len(batch), dtype=torch.bool).index_fill(0, rows, False)
    assert subset[others].eq(0).all() and subset_forward[others].eq(0).all()


def test_first_update_without_old_logp_has_the_old_paths_loss_and_gradients(model, tokenizer):
    # The first update trains the weights that sampled: pi_old = its own log-probs, detached, gives
    # the loss and the gradients that a separate pi_old forward pass gives (up to float rounding).
    batch = _rollout_batch(model, tokenizer, PROMPTS[:3], 4, seed=5)
    batch.old_logp = sequence_log_probs(model, batch, 12, 1.0, tokenizer.vocab_size)
    batch.ref_logp = batch.old_logp + 0.05 * batch.mask
    loss_fn = grpo_loss_function(GrpoLossSettings.from_config(RlConfig(kl_coefficient=0.04)), 1.0, tokenizer.vocab_size)
    chunk = model[0]
    chunk.eval()
    results = []
    for keep_old in (True, False):
        micro_batch = batch.rows(torch.arange(len(batch)))
        if not keep_old:
            micro_batch.pop("old_logp")
        chunk.zero_grad()
        numerator, denominator, metrics = loss_fn(micro_batch, policy_forward(chunk, micro_batch))
        (numerator / denominator).backward()
        gradients = [p.grad.clone() for p in chunk.parameters()]
        results.append((float(numerator / denominator), gradients, float(metrics["ratio"][0] / metrics["ratio"][1])))
    chunk.zero_grad()
    (with_old, old_gradients, old_ratio), (without_old, new_gradients, new_ratio) = results
    assert with_old != 0.0 and without_old == pytest.approx(with_old, rel=1e-6, abs=1e-7)
    assert new_ratio == 1.0 and old_ratio == pytest.approx(1.0, abs=1e-5)
    assert any(g.abs().sum() > 0 for g in new_gradients)
    for old, new in zip(old_gradients, new_gradients):
        assert torch.allclose(old, new, rtol=1e-4, atol=1e-7)


def _clipping_update_batch(model, tokenizer, seed: int, untrained_row: int, temperature: float = 1.0):
    """A rollout batch of ragged prompts with one row without trained tokens, pi_old moved so
    that some ratios clip and a reference apart from it; with GRPO's loss over it."""
    batch = _rollout_batch(model, tokenizer, PROMPTS, 4, seed=seed)
    batch.mask[untrained_row] = 0.0
    batch.old_logp = sequence_log_probs(model, batch, 20, 1.0, tokenizer.vocab_size) - 0.1 * batch.mask
    batch.ref_logp = batch.old_logp + 0.05 * batch.mask
    settings = GrpoLossSettings.from_config(RlConfig(kl_coefficient=0.04, epsilon_high=0.05))
    return batch, grpo_loss_function(settings, temperature, tokenizer.vocab_size)


def _loss_and_gradients(chunk, batch, loss_fn, forward_fn):
    """One update's loss pass and backward through `forward_fn`: (logits, loss, every
    parameter's gradient, metrics); leaves the gradients zeroed."""
    micro_batch = batch.rows(torch.arange(len(batch)))
    chunk.zero_grad()
    logits = forward_fn(chunk, micro_batch)
    numerator, denominator, metrics = loss_fn(micro_batch, logits)
    loss = numerator / denominator
    loss.backward()
    gradients = [p.grad.clone() for p in chunk.parameters()]
    chunk.zero_grad()
    return logits, loss.item(), gradients, metrics


def test_shared_prefix_forward_has_megatrons_loss_and_gradients(model, tokenizer):
    # The updates' forward through the shared prompt prefill: GRPO's loss, metrics and every
    # parameter's gradient as megatron's forward gives them.
    batch, loss_fn = _clipping_update_batch(model, tokenizer, seed=7, untrained_row=5)
    forwards = (policy_forward, shared_prefix_forward(shared_prefix_decoder(model, training=True)))
    (_, megatron_loss, megatron_gradients, megatron_metrics), (_, shared_loss, shared_gradients, shared_metrics) = [
        _loss_and_gradients(model[0], batch, loss_fn, forward_fn) for forward_fn in forwards
    ]
    megatron_metrics = {k: v.tolist() for k, v in megatron_metrics.items()}
    shared_metrics = {k: v.tolist() for k, v in shared_metrics.items()}
    assert megatron_metrics["clip_fraction"][0] > 0
    assert shared_loss == pytest.approx(megatron_loss, rel=1e-5)
    assert shared_metrics.keys() == megatron_metrics.keys()
    for name, value in megatron_metrics.items():
        assert shared_metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name  # kl: sums of small k3 terms
    assert len(shared_gradients) == len(megatron_gradients) and all(g.abs().sum() > 0 for g in shared_gradients)
    for megatron_gradient, shared_gradient in zip(megatron_gradients, shared_gradients):
        assert torch.allclose(shared_gradient, megatron_gradient, rtol=1e-4, atol=1e-6)


def test_selected_logits_give_the_dense_paths_loss_and_gradients_bit_for_bit(model, tokenizer):
    # shared_prefix_forward hands the loss the logits of the trained positions only; before, it
    # scattered them into a [b, s, V] tensor of zeros (CachedDecoder.sequence_logits) that the loss
    # gathered again. Same loss, metrics and gradients, bit for bit.
    batch, loss_fn = _clipping_update_batch(model, tokenizer, seed=11, untrained_row=2, temperature=0.9)
    decoder = shared_prefix_decoder(model, training=True)

    def dense(model_chunk, batch):
        return decoder.sequence_logits(batch["tokens"], batch["loss_mask"] > 0)

    forwards = (dense, shared_prefix_forward(decoder))
    (dense_logits, dense_loss, dense_grads, dense_metrics), (logits, loss, grads, metrics) = [
        _loss_and_gradients(model[0], batch, loss_fn, forward_fn) for forward_fn in forwards
    ]
    assert (dense_logits.dim(), logits.dim()) == (3, 2)
    assert loss == dense_loss != 0.0 and metrics.keys() == dense_metrics.keys()
    assert all(torch.equal(metrics[name], dense_metrics[name]) for name in metrics)
    assert dense_metrics["clip_fraction"][0] > 0
    assert all(g.abs().sum() > 0 for g in grads) and all(torch.equal(a, b) for a, b in zip(grads, dense_grads))


def test_swapped_halves_equal_the_index_select_they_replace(model):
    # The prefill and the training chunks build the rotary embedding's x[..., swap] from slices
    # (CachedDecoder._swapped); the decode step still uses index_select. Equal values, also for a
    # rotary embedding over part of each head (the rest passes through).
    decoder = shared_prefix_decoder(model)
    decoder.start(2, 8)
    mixed = torch.randn(2, 8, decoder.groups, decoder.heads_per_group + 2, decoder.head_dim)
    assert decoder.rotary_dim == decoder.head_dim
    assert torch.equal(decoder._swapped(mixed), mixed.index_select(-1, decoder.swap))
    assert not torch.equal(decoder._swapped(mixed), mixed)
    partial = torch.randn(3, 5, 24)
    decoder.rotary_dim = 16
    swap = torch.cat((torch.arange(8, 16), torch.arange(8), torch.arange(16, 24)))
    assert torch.equal(decoder._swapped(partial), partial.index_select(-1, swap))


@pytest.mark.parametrize("query_groups", [4, 2])
def test_fused_core_attention_computes_megatrons_attention(model, query_groups):
    assert isinstance(model[0].decoder.layers[0].self_attention.core_attention, FusedDotProductAttention)
    config = dataclasses.replace(model[0].config, num_query_groups=query_groups, attention_dropout=0.0)
    ours = FusedDotProductAttention(config, 1, AttnMaskType.causal, "self")
    megatrons = DotProductAttention(config, 1, AttnMaskType.causal, "self")
    generator = torch.Generator().manual_seed(3)
    heads, head_dim = config.num_attention_heads, config.kv_channels

    def inputs(queries: int, keys: int):
        shapes = [(queries, 3, heads, head_dim), (keys, 3, query_groups, head_dim), (keys, 3, query_groups, head_dim)]
        return [torch.randn(shape, generator=generator).requires_grad_() for shape in shapes]

    def run(module, tensors, mask=None):
        copies = [t.detach().clone().requires_grad_() for t in tensors]
        output = module(*copies, mask)
        output.backward(torch.ones_like(output) + torch.arange(output.numel()).reshape(output.shape) / 100)
        return output.detach(), [c.grad for c in copies]

    # The fused cases: the causal training step, and one query against a cache (no mask).
    for queries, keys in [(12, 12), (1, 9)]:
        tensors = inputs(queries, keys)
        assert ours._fused_applies(tensors[0], tensors[1], None, None, None)
        (fused, fused_grads), (reference, grads) = run(ours, tensors), run(megatrons, tensors)
        assert fused.shape == reference.shape == (queries, 3, heads * head_dim)
        assert torch.allclose(fused, reference, atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(fused_grads, grads))
    # An explicit mask (SFT's packed block-causal masks) runs megatron's own code: equal bit for bit.
    tensors = inputs(12, 12)
    mask = torch.ones(12, 12, dtype=torch.bool).tril().logical_not().view(1, 1, 12, 12)
    mask[..., 6:, :6] = True
    assert not ours._fused_applies(tensors[0], tensors[1], mask, None, None)
    (fused, fused_grads), (reference, grads) = run(ours, tensors, mask), run(megatrons, tensors, mask)
    assert torch.equal(fused, reference) and all(torch.equal(a, b) for a, b in zip(fused_grads, grads))
    # Negative control: the block mask changes the result, so the comparison above can fail.
    assert not torch.allclose(reference, run(megatrons, tensors)[0], atol=1e-3)


def test_response_log_probs_equal_the_full_pass_where_the_loss_reads_them(runtime):
    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(4, 10, 64, generator=generator)
    labels = torch.randint(0, 50, (4, 10), generator=generator)
    selected = torch.zeros(4, 10, dtype=torch.bool)
    selected[0, 3:7], selected[2, 5:10] = True, True  # row 1 and 3: fully masked (filler rows)
    weights = torch.rand(4, 10, generator=generator)

    def values_and_gradient(function):
        leaf = logits.clone().requires_grad_()
        values = function(leaf)
        (values * selected * weights).sum().backward()
        return values.detach(), leaf.grad

    ours, our_gradient = values_and_gradient(lambda x: response_log_probs(x, labels, selected, 0.7, 50))
    full, full_gradient = values_and_gradient(lambda x: vocab_parallel_log_probs(x, labels, 0.7, 50))
    assert torch.equal(ours[selected], full[selected]) and not ours[~selected].any()
    assert torch.allclose(our_gradient, full_gradient, atol=1e-7) and our_gradient[1].abs().sum() == 0
    empty = response_log_probs(logits, labels, torch.zeros_like(selected), 0.7, 50)
    assert empty.shape == (4, 10) and not empty.any()
