"""Math evidence of a URL prefix from its pages' words, independent of the round's classifier.

The unattended approval policy `annotations_and_auto_prefix_evidence` needs a second opinion on
each prefix the classifier flags: a classifier trained on one kind of seed (say, a Python
library's documentation) also ranks pages that merely look like the seed (other Python library
docs) above real math pages of another kind (a C library's manual), so no statistic of its own
scores tells the two apart. The second opinion here is the rate of mathematical vocabulary
(`MATH_VOCABULARY`: theorem, integral, polynomial, eigenvalue, ...) among a page's words, summed
over the prefix's pages, compared with two references measured in the same run:
- the seed positives' rate (what the user called math), and
- the rate of the pool pages the round did not select (mostly not math: the selection holds the
  round's budget of the best-scoring pages).
A prefix is math-evident when its rate reaches the point `position` of the way from the second
reference to the first on a log scale (0.5: the geometric mean). Rates are ratios of sums, so
they combine on workers like counts.

Cost: one pass over each page's text (a regex word split and a set lookup per word), linear in
the text; the vocabulary is a fixed set of about 200 words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# General mathematical terms in English, written once from what any mathematics text uses
# (analysis, algebra, number theory, linear algebra, geometry, probability, numerics) and not
# fitted to any crawl. Words a programming text uses as often as a mathematics text ("value",
# "number", "set", "type", "module", "parameter", "kernel", "constant") are left out; a few
# ambiguous ones ("function", "field", "group", "product") stay because mathematics uses them far
# more densely. No site or product name (a crawl's "maxima" or "octave") is in it.
MATH_VOCABULARY = frozenset(
    """
    theorem theorems lemma lemmas proof proofs prove corollary conjecture axiom
    equation equations formula formulas inequality inequalities
    integral integrals integration integrate integrand derivative derivatives differentiation differentiable
    differential antiderivative gradient jacobian hessian laplacian
    polynomial polynomials monomial quadratic cubic linear nonlinear
    matrix matrices eigenvalue eigenvalues eigenvector eigenvectors determinant transpose inverse
    vector vectors scalar scalars orthogonal orthonormal symmetric hermitian diagonal triangular
    tensor tensors norm norms basis dimension dimensional subspace rank
    real complex integer integers rational irrational prime primes divisor divisors divisible
    gcd lcm modulo modular congruence factorization factorial binomial
    coefficient coefficients numerator denominator fraction fractions exponent exponents
    logarithm logarithmic exponential sqrt sin cos tan sine cosine tangent trigonometric hyperbolic
    gamma zeta bessel hypergeometric elliptic legendre chebyshev hermite laguerre
    series sum sums summation convergence convergent divergent asymptotic limit limits infinity infinite
    finite continuous discontinuous interval intervals bounded approximation approximate precision
    arithmetic algebra algebraic algebras ring rings field fields group groups subgroup
    homomorphism isomorphism isomorphic permutation permutations lattice ideal ideals
    function functions variable variables
    solve solves solving solution solutions root roots zeros
    geometry geometric angle angles radius circle triangle polygon sphere plane curve curves surface
    probability distribution distributions variance covariance deviation expectation stochastic
    fourier laplace transform transforms convolution dft fft
    optimization minimize maximize extremum extrema
    numerical numerically interpolation quadrature
    equal equals equality product products quotient remainder power powers
    """.split()
)

_WORD = re.compile(r"[a-z]+")


def math_word_counts(text: str) -> tuple[int, int]:
    """(words of MATH_VOCABULARY, all words) of a text; words are runs of letters, lowercased."""
    words = _WORD.findall(text.lower())
    return sum(1 for word in words if word in MATH_VOCABULARY), len(words)


def sum_word_counts(counts) -> tuple[int, int]:
    math_words = words = 0
    for first, second in counts:
        math_words += first
        words += second
    return math_words, words


def rate(math_words: int, words: int) -> float:
    return math_words / words if words else 0.0


@dataclass(frozen=True)
class EvidenceThreshold:
    """The math-word rate a prefix must reach: `position` of the way from the unselected pool
    pages' rate to the seed positives' rate, on a log scale."""

    seed_rate: float
    unselected_rate: float
    position: float

    # A rate of 0 (no vocabulary word at all) has no logarithm; one word in a million stands in.
    FLOOR = 1e-6

    @property
    def value(self) -> float:
        low = math.log(max(self.unselected_rate, self.FLOOR))
        high = math.log(max(self.seed_rate, self.FLOOR))
        return math.exp(low + self.position * (high - low))

    @property
    def usable(self) -> bool:
        """Seeds richer in math words than the unselected pages: otherwise the references say
        nothing and the policy approves nothing."""
        return self.seed_rate > self.unselected_rate

    def as_dict(self) -> dict:
        return {
            "seed_rate": round(self.seed_rate, 6),
            "unselected_rate": round(self.unselected_rate, 6),
            "position": self.position,
            "threshold": round(self.value, 6),
            "usable": self.usable,
        }
