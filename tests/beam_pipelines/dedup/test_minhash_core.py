"""The pure MinHash core: tokens, shingles, signatures, bands, ranks (no Beam)."""

from __future__ import annotations

import numpy as np
import pytest
import xxhash
from datasketch import MinHash

from beam_pipelines.document import Document
from beam_pipelines.transforms.config import MinHashConfig
from beam_pipelines.transforms.minhash import (
    PERMUTATION_SCHEME,
    MinHashSettings,
    Signer,
    band_hashes,
    band_keys,
    better,
    candidate_probability,
    jaccard,
    lsh_threshold,
    shingle_hashes,
    shingles,
    survivor_rank,
    word_tokens,
)
from tests.planted_duplicates import generate_documents, sentence_pool


def test_tokens_ignore_case_unicode_forms_and_punctuation():
    assert word_tokens("The QUICK, brown fox!") == ["the", "quick", "brown", "fox"]
    # Fullwidth letters and digits (NFKC), ligatures, and letters glued to digits.
    assert word_tokens("Ｆｏｏ ２x ﬁne") == ["foo", "2", "x", "fine"]
    assert word_tokens("x^{2} + 1 = y_1") == word_tokens("x^2+1=y 1") == ["x", "2", "1", "y", "1"]
    # Chinese has no spaces: one token per character, Latin words stay whole.
    assert word_tokens("小明有3个苹果apple") == ["小", "明", "有", "3", "个", "苹", "果", "apple"]


def test_short_texts_become_one_shingle_and_long_ones_overlapping_ngrams():
    assert shingles([], 5) == set()
    assert shingles(["a", "b"], 5) == {b"a b"}
    assert shingles(list("abcdef"), 5) == {b"a b c d e", b"b c d e f"}


def test_signature_uses_the_pinned_scheme_and_is_deterministic():
    settings = MinHashSettings.from_config(MinHashConfig())
    assert settings.scheme == PERMUTATION_SCHEME == "affine32"
    signer, other_worker = Signer(settings), Signer(settings)
    text = sentence_pool()[0] + " " + sentence_pool()[1]
    first = signer.sign(text)
    assert first.dtype == np.uint32 and first.shape == (settings.num_perm,)
    np.testing.assert_array_equal(first, other_worker.sign(text))
    assert signer.sign("  ...  ") is None  # no word, no signature
    # A different seed draws different permutations: signatures must not be compared.
    reseeded = Signer(MinHashSettings(settings.num_perm, settings.bands, settings.rows, settings.seed + 1, 5))
    assert not np.array_equal(first, reseeded.sign(text))


def test_signature_agreement_estimates_exact_jaccard():
    settings = MinHashSettings(num_perm=256, bands=32, rows=8, seed=3, shingle_size=5)
    signer = Signer(settings)
    generated = [
        g.document.text for g in generate_documents(60, seed=5, duplicate_fraction=0.6, target_characters=1500)
    ]
    errors = []
    for a, b in zip(generated, generated[1:]):
        hashes_a, hashes_b = signer.hashes(a), signer.hashes(b)
        exact = jaccard(hashes_a, hashes_b)
        estimate = float(np.mean(signer.signature(hashes_a) == signer.signature(hashes_b)))
        errors.append(abs(exact - estimate))
    # Standard error of the estimate with 256 permutations is at most 0.031.
    assert max(errors) < 0.13 and float(np.mean(errors)) < 0.04


def test_fast_shingle_hashing_agrees_with_the_readable_reference():
    texts = [g.document.text for g in generate_documents(30, seed=8, target_characters=800)]
    texts += ["小明有3个苹果 und Äpfel café ﬁne", "one two", ""]
    settings = MinHashSettings.from_config(MinHashConfig())
    signer = Signer(settings)
    for text in texts:
        for size in (1, 3, 5):
            reference = shingles(word_tokens(text), size)
            expected = np.unique(np.array([xxhash.xxh32_intdigest(s) for s in reference], dtype=np.uint32))
            np.testing.assert_array_equal(shingle_hashes(word_tokens(text), size), expected)
        if text:
            # The signature is datasketch's update_batch over the shingles with xxh32.
            plain = MinHash(
                num_perm=settings.num_perm, seed=settings.seed, hashfunc=xxhash.xxh32_intdigest, scheme="affine32"
            )
            plain.update_batch(shingles(word_tokens(text), 5))
            np.testing.assert_array_equal(signer.sign(text), plain.hashvalues)
    # Batched signatures (chunks of a few documents here, so chunk edges are crossed) equal the
    # per-document ones, and the band keys of a batch those of each signature.
    arrays = [signer.hashes(text) for text in texts if text]
    batched = signer.signatures(arrays, values_per_chunk=500)
    for row, hashes in zip(batched, arrays):
        np.testing.assert_array_equal(row, signer.signature(hashes))
    keys = band_hashes(batched, settings.bands, settings.rows)
    assert keys.shape == (len(arrays), settings.bands)
    assert [band_keys(row, settings.bands, settings.rows) for row in batched] == keys.tolist()


def test_band_keys_collide_exactly_when_a_band_agrees():
    signature = np.arange(120, dtype=np.uint32)
    changed = signature.copy()
    changed[7] += 1  # row 1 of band 1 (rows = 6)
    keys, changed_keys = band_keys(signature, 20, 6), band_keys(changed, 20, 6)
    assert len(keys) == 20 and len(set(keys)) == 20  # the band index is part of the key
    assert [a == b for a, b in zip(keys, changed_keys)] == [True] + [False] + [True] * 18


def test_exact_jaccard_and_the_banding_curve():
    a = np.array([1, 2, 3, 4], dtype=np.uint32)
    b = np.array([3, 4, 5], dtype=np.uint32)
    assert jaccard(a, b) == pytest.approx(2 / 5)
    assert jaccard(np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.uint32)) == 1.0
    assert jaccard(a, a) == 1.0
    # Defaults: candidates almost surely at 0.8, rarely at 0.3.
    assert candidate_probability(0.8, 20, 6) > 0.99
    assert candidate_probability(0.3, 20, 6) < 0.02
    assert 0.55 < lsh_threshold(20, 6) < 0.65


def test_survivor_rank_prefers_configured_fields_then_smallest_id():
    scored = Document(id="b", text="short", math_score=0.9)
    unscored = Document(id="a", text="a much longer text", math_score=None)
    order = ["math_score", "text_length"]
    assert survivor_rank(unscored, order)[0] == -np.inf
    assert better((survivor_rank(scored, order), "b"), (survivor_rank(unscored, order), "a"))
    by_length = ["text_length"]
    assert better((survivor_rank(unscored, by_length), "a"), (survivor_rank(scored, by_length), "b"))
    tie = Document(id="c", text="short")
    assert better((survivor_rank(Document(id="a", text="short"), by_length), "a"), (survivor_rank(tie, by_length), "c"))
    quality = Document(id="q", quality={"gopher_word_count": 12.0})
    assert survivor_rank(quality, ["quality.gopher_word_count", "quality.missing"]) == (12.0, -np.inf)
