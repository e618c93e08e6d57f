"""The generator's sampler (generation/sampling.py): the vectorised sampler equals its readable
reference draw for draw, samples the policy distribution (and the one torch.multinomial, the
sampler it replaced, samples), keeps top-p and the padded vocabulary out, and gives every
request row its own stream."""

from __future__ import annotations

import pytest
import torch

from megatron_recipes.generation.megatron import top_p_filter
from megatron_recipes.generation.sampling import reference_sample, row_uniforms, sample_next_tokens

VOCAB = 300
PADDED = 384


def random_logits(rows: int, seed: int, spread: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, PADDED, generator=generator) * spread
    logits[:, VOCAB:] = 1e4  # padding columns hold garbage: they must never count
    logits[0, 5] = logits[0, 6] = logits[0, :VOCAB].max() + 1  # a tie for the most likely token
    return logits


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9), (1.3, 0.5), (1.0, 0.999)])
def test_vectorised_sampler_equals_the_reference_draw_for_draw(temperature, top_p):
    for seed, spread in ((0, 0.5), (1, 2.0), (2, 6.0)):
        logits = random_logits(24, seed, spread)
        uniforms = torch.rand(24, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 10))
        # The ends of [0, 1): the first candidate, and the last ones of a row.
        uniforms[-4:] = torch.tensor([1.0 - 2.0**-53, 1.0 - 2.0**-52, 1.0 - 2.0**-50, 0.0], dtype=torch.float64)
        tokens, log_probs = sample_next_tokens(logits, temperature, top_p, VOCAB, uniforms)
        for row in range(24):
            token, log_prob = reference_sample(logits[row], temperature, top_p, VOCAB, float(uniforms[row]))
            assert int(tokens[row]) == token
            assert float(log_probs[row]) == log_prob
        assert int(tokens.max()) < VOCAB
    if temperature == 0:
        assert int(tokens[0]) == 5  # the first of equal maxima


def exact_distribution(logits_row: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    probabilities = torch.softmax(logits_row[:VOCAB].double() / temperature, dim=-1)
    return top_p_filter(probabilities.unsqueeze(0), top_p)[0] / top_p_filter(probabilities.unsqueeze(0), top_p).sum()


def chi_square_bound(degrees: int) -> float:
    """A chi-square statistic above this is a > 6 sigma event under the null hypothesis."""
    return degrees + 6 * (2 * degrees) ** 0.5


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.8, 0.9)])
def test_samples_follow_the_policy_distribution_and_torch_multinomials(temperature, top_p):
    """In distribution, before (torch.multinomial on top_p_filter's probabilities) and after."""
    draws = 60_000
    row = torch.randn(PADDED, generator=torch.Generator().manual_seed(3)) * 1.5
    row[:VOCAB][torch.arange(VOCAB) % 7 == 0] += 3.0  # a few likely tokens, a long tail
    expected = exact_distribution(row, temperature, top_p)
    uniforms = torch.rand(draws, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    tokens, _ = sample_next_tokens(row.expand(draws, -1), temperature, top_p, VOCAB, uniforms)
    ours = torch.bincount(tokens, minlength=VOCAB).double()
    old_probabilities = top_p_filter(torch.log_softmax(row[:VOCAB] / temperature, dim=-1).exp().unsqueeze(0), top_p)
    old = torch.multinomial(old_probabilities.expand(draws, -1), 1, generator=torch.Generator().manual_seed(5))
    theirs = torch.bincount(old.squeeze(-1), minlength=VOCAB).double()
    assert (ours[expected == 0] == 0).all() and (theirs[expected == 0] == 0).all()  # nothing outside the nucleus
    # Chi-square tests on bins of >= 5 expected draws (the rare tail pooled into one bin).
    frequent, rare = expected * draws >= 5, (expected > 0) & (expected * draws < 5)

    def binned(values: torch.Tensor) -> torch.Tensor:
        return torch.cat([values[frequent], values[rare].sum().unsqueeze(0)] if rare.any() else [values[frequent]])

    expected_counts, ours_binned, theirs_binned = binned(expected * draws), binned(ours), binned(theirs)
    degrees = len(expected_counts) - 1
    assert degrees > 10
    for observed in (ours_binned, theirs_binned):
        assert float(((observed - expected_counts) ** 2 / expected_counts).sum()) < chi_square_bound(degrees)
    # The two samplers against each other (homogeneity of two samples of the same size).
    homogeneity = ((ours_binned - theirs_binned) ** 2 / (ours_binned + theirs_binned).clamp(min=1)).sum()
    assert float(homogeneity) < chi_square_bound(degrees)
    if top_p < 1:
        assert (expected == 0).sum() > 0  # the case does cut a tail


def test_every_request_row_has_its_own_stream():
    together = row_uniforms(9, [0, 1, 2, 3], 6)
    alone = row_uniforms(9, [2], 6)
    assert torch.equal(together[2], alone[0])  # independent of the other rows requested with it
    assert not torch.equal(together[0], together[1])
    assert not torch.equal(row_uniforms(10, [0], 6), together[:1])  # the seed matters
    assert ((together >= 0) & (together < 1)).all() and together.dtype == torch.float64
