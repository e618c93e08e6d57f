"""Keep the top-scoring pages of the pool up to a token budget, without sorting the pool.

DeepSeekMath ranks the scored pool and keeps the top 40B tokens in round 1. A global sort of
billions of pages on one worker is what this project forbids, so the cut is found with two
distributed histogram passes:
1. every worker adds (pages, tokens) into `coarse_bins` score bins over [0, 1] (a fixed-size
   array, combined like a sum); walking the bins from the top finds the coarse bin where the
   budget runs out;
2. the pages of that one bin are histogrammed again into `fine_bins` sub-bins, which locates the
   cut to within 1 / (coarse_bins x fine_bins) of score.
Pages whose score lies above the cut are kept, and so is the whole sub-bin where the budget runs
out: the selection reaches the budget and exceeds it by at most that sub-bin's tokens (pages
with exactly equal scores cannot be split by score anyway). `reference_selection` is the plain
sort-based version the tests compare against.

Cost: one pass over the scores per level; memory per worker is two arrays of `coarse_bins` and
`fine_bins` integers, independent of the pool size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import apache_beam as beam
import numpy as np


def coarse_bin_of(score: float, coarse_bins: int) -> int:
    score = 0.0 if score is None else min(1.0, max(0.0, score))
    return min(int(score * coarse_bins), coarse_bins - 1)


def fine_bin_of(score: float, coarse_bins: int, fine_bins: int) -> int:
    score = 0.0 if score is None else min(1.0, max(0.0, score))
    scaled = score * coarse_bins
    within = scaled - min(int(scaled), coarse_bins - 1)
    return max(0, min(int(within * fine_bins), fine_bins - 1))


@dataclass(frozen=True)
class ScoreCut:
    """Keep a page iff its (coarse bin, fine bin) is at or above (coarse_bin, fine_bin).

    Selection and histograms use the same bin functions, so the kept tokens are exactly what the
    histogram walk counted (no float comparison at the edge)."""

    coarse_bins: int
    fine_bins: int
    coarse_bin: int = 0
    fine_bin: int = 0
    budget_tokens: int = 0
    # Tokens the cut keeps, from the histograms.
    selected_tokens: int = 0
    selected_pages: int = 0
    pool_tokens: int = 0
    pool_pages: int = 0

    def keeps(self, score: float | None) -> bool:
        coarse = coarse_bin_of(score, self.coarse_bins)
        if coarse != self.coarse_bin:
            return coarse > self.coarse_bin
        return fine_bin_of(score, self.coarse_bins, self.fine_bins) >= self.fine_bin

    @property
    def threshold(self) -> float:
        """The lowest score the cut keeps (for people; `keeps` is the rule)."""
        return (self.coarse_bin + self.fine_bin / self.fine_bins) / self.coarse_bins

    def as_dict(self) -> dict:
        return {
            "threshold": round(self.threshold, 9),
            "coarse_bin": self.coarse_bin,
            "fine_bin": self.fine_bin,
            "coarse_bins": self.coarse_bins,
            "fine_bins": self.fine_bins,
            "budget_tokens": self.budget_tokens,
            "selected_tokens": self.selected_tokens,
            "selected_pages": self.selected_pages,
            "pool_tokens": self.pool_tokens,
            "pool_pages": self.pool_pages,
        }


@dataclass(frozen=True)
class TokenBudget:
    """A round's budget: absolute tokens, or a fraction of the pool's tokens."""

    tokens: int | None = None
    pool_fraction: float | None = None

    def resolve(self, pool_tokens: int) -> int:
        if self.tokens is not None:
            return int(self.tokens)
        return max(1, int(round(pool_tokens * float(self.pool_fraction))))

    @classmethod
    def for_round(cls, selection_config, round_number: int) -> "TokenBudget":
        if selection_config.token_budgets:
            budgets = list(selection_config.token_budgets)
            return cls(tokens=int(budgets[min(round_number, len(budgets)) - 1]))
        fractions = list(selection_config.pool_token_fractions)
        return cls(pool_fraction=float(fractions[min(round_number, len(fractions)) - 1]))

    def describe(self) -> str:
        return (
            f"{self.tokens:,} tokens" if self.tokens is not None else f"{self.pool_fraction:.1%} of the pool's tokens"
        )


# ----------------------------------------------------------------------------------------------
# Histogram walks (pure)


@dataclass(frozen=True)
class CoarseBoundary:
    budget_tokens: int
    coarse_bin: int
    # Pages and tokens in bins strictly above `coarse_bin`.
    tokens_above: int
    pages_above: int
    pool_tokens: int
    pool_pages: int
    keep_all: bool


def find_coarse_boundary(pages: np.ndarray, tokens: np.ndarray, budget: TokenBudget) -> CoarseBoundary:
    pool_tokens, pool_pages = int(tokens.sum()), int(pages.sum())
    budget_tokens = budget.resolve(pool_tokens)
    tokens_above = pages_above = 0
    for coarse in range(tokens.size - 1, -1, -1):
        if tokens_above + int(tokens[coarse]) >= budget_tokens:
            return CoarseBoundary(budget_tokens, coarse, tokens_above, pages_above, pool_tokens, pool_pages, False)
        tokens_above += int(tokens[coarse])
        pages_above += int(pages[coarse])
    # The whole pool fits in the budget: keep everything.
    return CoarseBoundary(budget_tokens, 0, 0, 0, pool_tokens, pool_pages, True)


def find_cut(boundary: CoarseBoundary, fine_pages: np.ndarray, fine_tokens: np.ndarray, coarse_bins: int) -> ScoreCut:
    fine_bins = fine_tokens.size
    common = dict(
        coarse_bins=coarse_bins,
        fine_bins=fine_bins,
        budget_tokens=boundary.budget_tokens,
        pool_tokens=boundary.pool_tokens,
        pool_pages=boundary.pool_pages,
    )
    if boundary.keep_all:
        return ScoreCut(
            coarse_bin=0, fine_bin=0, selected_tokens=boundary.pool_tokens, selected_pages=boundary.pool_pages, **common
        )
    tokens, pages = boundary.tokens_above, boundary.pages_above
    for fine in range(fine_bins - 1, -1, -1):
        tokens += int(fine_tokens[fine])
        pages += int(fine_pages[fine])
        if tokens >= boundary.budget_tokens:
            return ScoreCut(
                coarse_bin=boundary.coarse_bin, fine_bin=fine, selected_tokens=tokens, selected_pages=pages, **common
            )
    return ScoreCut(coarse_bin=boundary.coarse_bin, fine_bin=0, selected_tokens=tokens, selected_pages=pages, **common)


def reference_selection(scored: Iterable[tuple[str, float, int]], budget_tokens: int) -> set[str]:
    """The readable version: sort (id, score, tokens) by score, keep pages until the budget is
    reached (the page that reaches it is kept). Only for tests and small data."""
    kept, total = set(), 0
    for page_id, _, tokens in sorted(scored, key=lambda item: -item[1]):
        if total >= budget_tokens:
            break
        kept.add(page_id)
        total += tokens
    return kept


def report_histogram(pages: np.ndarray, tokens: np.ndarray, bins: int = 50) -> dict:
    """A coarse histogram folded to `bins` equal score ranges, for metrics.json and plots."""
    edges = np.linspace(0, pages.size, bins + 1).round().astype(int)
    return {
        "edges": [round(float(x), 6) for x in np.linspace(0.0, 1.0, bins + 1)],
        "pages": [int(x) for x in np.add.reduceat(pages, edges[:-1])],
        "tokens": [int(x) for x in np.add.reduceat(tokens, edges[:-1])],
    }


# ----------------------------------------------------------------------------------------------
# Beam


class BinHistogramFn(beam.CombineFn):
    """(bin, tokens) pairs -> (pages per bin, tokens per bin) as two int64 arrays."""

    def __init__(self, bins: int):
        self.bins = bins

    def create_accumulator(self):
        return np.zeros(self.bins, dtype=np.int64), np.zeros(self.bins, dtype=np.int64)

    def add_input(self, accumulator, element):
        index, tokens = element
        accumulator[0][index] += 1
        accumulator[1][index] += tokens
        return accumulator

    def merge_accumulators(self, accumulators):
        pages, tokens = self.create_accumulator()
        for other_pages, other_tokens in accumulators:
            pages += other_pages
            tokens += other_tokens
        return pages, tokens

    def extract_output(self, accumulator):
        return accumulator


class SelectByTokenBudget(beam.PTransform):
    """Scored documents -> (selected documents, cut, coarse histogram).

    `cut` is a one-element PCollection holding the `ScoreCut`; `histogram` holds the coarse
    (pages, tokens) arrays of the whole pool."""

    def __init__(self, budget: TokenBudget, coarse_bins: int, fine_bins: int):
        super().__init__()
        self.budget = budget
        self.coarse_bins = coarse_bins
        self.fine_bins = fine_bins

    def expand(self, scored):
        coarse_bins, fine_bins, budget = self.coarse_bins, self.fine_bins, self.budget
        histogram = (
            scored
            | "Coarse bins" >> beam.Map(lambda d: (coarse_bin_of(d.math_score, coarse_bins), d.token_estimate))
            | "Coarse histogram" >> beam.CombineGlobally(BinHistogramFn(coarse_bins))
        )
        boundary = histogram | "Coarse boundary" >> beam.Map(lambda h: find_coarse_boundary(h[0], h[1], budget))
        fine = (
            scored
            | "Pages in the boundary bin"
            >> beam.FlatMap(_in_boundary_bin, beam.pvalue.AsSingleton(boundary), coarse_bins, fine_bins)
            | "Fine histogram" >> beam.CombineGlobally(BinHistogramFn(fine_bins))
        )
        cut = fine | "Cut" >> beam.Map(
            lambda h, b: find_cut(b, h[0], h[1], coarse_bins), beam.pvalue.AsSingleton(boundary)
        )
        selected = scored | "Keep above the cut" >> beam.Filter(
            lambda d, c: c.keeps(d.math_score), beam.pvalue.AsSingleton(cut)
        )
        return selected, cut, histogram


def _in_boundary_bin(document, boundary: CoarseBoundary, coarse_bins: int, fine_bins: int):
    if not boundary.keep_all and coarse_bin_of(document.math_score, coarse_bins) == boundary.coarse_bin:
        yield fine_bin_of(document.math_score, coarse_bins, fine_bins), document.token_estimate
