"""Next-token sampling, shared by every path of the megatron generator: the policy distribution of
logprobs.py, restricted by top-p, drawn by inverse transform sampling with one uniform per row.

    uniforms = row_uniforms(seed, rows, steps)        # [len(rows), steps] float64, one stream per request row
    tokens, log_probs = sample_next_tokens(logits, temperature, top_p, vocab_size, uniforms[:, k])
    reference_sample(logits_row, temperature, top_p, vocab_size, uniform) -> (token, log_prob)  # readable

Semantics (the vectorised `sample_next_tokens` and the readable `reference_sample` agree, tested):
- pi = softmax(logits[:vocab_size] / T), float32, T = 1 for greedy decoding; the returned
  log-probs are log pi of the chosen tokens, what a trainer forward pass computes for them.
- temperature 0: the most likely token (the first of equal maxima).
- otherwise the candidates are the vocabulary in id order when top_p = 1, else the tokens in order
  of decreasing probability (equal probabilities by id) whose preceding mass is below top_p (the
  smallest set whose mass reaches top_p; the most likely token always). The token is the first
  candidate whose cumulative probability (float64, summed in candidate order) exceeds
  u x (the candidates' mass): exactly a draw from pi restricted to the candidates and
  renormalised, for u uniform in [0, 1). One sort per row when top_p < 1, none otherwise
  (torch.multinomial costs ~15x more on a [64, 512] batch and consumes its generator in a way
  that depends on the batch).
- uniforms: row i of a request draws from its own stream (a torch.Generator seeded from
  (seed, i)) and its k-th token uses the k-th number. A row's samples therefore do not depend
  on the other rows of its batch, on max_batch_size, nor on which rows have already finished
  (the generator drops finished rows from its batch).

Cost: O(rows x vocabulary) per step (plus a sort of each row when top_p < 1); `row_uniforms`
is O(rows x steps) once per batch.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch


def row_seed(seed: int, row: int) -> int:
    """The seed of request row `row`'s stream under the request seed `seed` (well mixed, 63 bits)."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(row)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def row_uniforms(seed: int, rows: Sequence[int], steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[len(rows), steps] float64 uniforms in [0, 1): row j holds the stream of request row rows[j]."""
    streams = torch.empty(len(rows), steps, dtype=torch.float64)
    for index, row in enumerate(rows):
        generator = torch.Generator().manual_seed(row_seed(seed, row))
        torch.rand(steps, dtype=torch.float64, generator=generator, out=streams[index])
    return streams.to(device)


def policy_log_probs(logits: torch.Tensor, temperature: float, vocab_size: int) -> torch.Tensor:
    """log pi over the real vocabulary: logits [b, V_padded] -> [b, vocab_size] float32.
    (logprobs.full_vocab_log_probs keeps the padded columns at -inf-like values instead.)"""
    logits = logits[..., :vocab_size].float()
    if temperature and temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)


def sample_next_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, vocab_size: int, uniforms: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens [b] (int64) and their log pi [b] (float32) from last-position logits
    [b, V_padded]; `uniforms` [b] float64 in [0, 1) (unused, may be None, at temperature 0)."""
    log_probs = policy_log_probs(logits, temperature, vocab_size)
    if temperature == 0:
        tokens = log_probs.argmax(dim=-1)
    else:
        probabilities = log_probs.double().exp()
        if top_p < 1.0:
            probabilities, order = probabilities.sort(dim=-1, descending=True, stable=True)
            cumulative = probabilities.cumsum(dim=-1)
            # The candidates are a prefix of the sorted row: the mass before them is below top_p.
            mass_before = torch.nn.functional.pad(cumulative[..., :-1], (1, 0))
            candidates = (mass_before < top_p).sum(dim=-1, keepdim=True)
            mass = cumulative.gather(-1, candidates - 1)
        else:  # every token is a candidate, in id order: no sort, the mass is the last sum
            order = None
            cumulative = probabilities.cumsum(dim=-1)
            mass = cumulative[..., -1:]
        # The first candidate whose cumulative probability exceeds u x mass. u x mass can round up
        # to the mass itself: then the first candidate reaching it, which is the first exceeding
        # the double just below the mass (the same index the search finds, one op on [b, 1]).
        target = torch.minimum(uniforms.unsqueeze(-1) * mass, torch.nextafter(mass, mass.new_zeros(())))
        chosen = torch.searchsorted(cumulative, target, right=True)
        tokens = (order.gather(-1, chosen) if order is not None else chosen).squeeze(-1)
    return tokens, log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def reference_sample(
    logits_row: torch.Tensor, temperature: float, top_p: float, vocab_size: int, uniform: float
) -> tuple[int, float]:
    """One row of `sample_next_tokens`, written plainly (the readable reference the tests compare with)."""
    log_probs = torch.log_softmax(logits_row[:vocab_size].float() / (temperature or 1.0), dim=-1)
    if temperature == 0:
        token = int(log_probs.argmax())
        return token, float(log_probs[token])
    probabilities = log_probs.double().exp().tolist()
    if top_p < 1.0:
        order = sorted(range(vocab_size), key=lambda token_id: -probabilities[token_id])  # stable: ties by id
    else:
        order = list(range(vocab_size))
    candidates, mass = [], 0.0
    for token_id in order:
        if top_p < 1.0 and mass >= top_p:
            break
        candidates.append(token_id)
        mass += probabilities[token_id]
    target = uniform * mass
    cumulative, sums = 0.0, []
    for token_id in candidates:
        cumulative += probabilities[token_id]
        sums.append(cumulative)
    token = next((token_id for token_id, total in zip(candidates, sums) if total > target), None)
    if token is None:  # the target rounded up to the whole mass: the first candidate reaching it
        token = next(token_id for token_id, total in zip(candidates, sums) if total >= mass)
    return token, float(log_probs[token])
