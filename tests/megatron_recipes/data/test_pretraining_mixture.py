"""The mixture config -> megatron blended GPT datasets, on indexed datasets written with
megatron-core's IndexedDatasetBuilder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from megatron_recipes.data.config import DataConfig
from megatron_recipes.data.mixture import SyntheticTokenizer, load_tokenizer, read_index_counts, resolve_mixture
from megatron_recipes.data.pretraining import DataParallelSampler, build_pretraining_datasets
from stack_common.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from indexed_corpus import write_indexed_dataset  # noqa: E402

EOD = 0


def documents(low: int, high: int, count: int, length: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(rng.integers(low, high, size=length)) + [EOD] for _ in range(count)]


@pytest.fixture()
def two_sources(tmp_path):
    # Source "math": a directory of two shards (token ids 1-99); source "code": one prefix (100-199).
    write_indexed_dataset(tmp_path / "tokenized/math/shard_0", documents(1, 100, 60, 49, 0), 256)
    write_indexed_dataset(tmp_path / "tokenized/math/shard_1", documents(1, 100, 20, 49, 1), 256)
    code = write_indexed_dataset(tmp_path / "other/code", documents(100, 200, 40, 49, 2), 256)
    return DataConfig(
        name="test",
        sources={"math": [str(tmp_path / "tokenized/math")], "code": [code]},
        weights={"math": 3.0, "code": 1.0},
        seq_length=16,
        split="100,0,0",
    )


def test_sources_resolve_to_weighted_prefixes(two_sources, tmp_path):
    mixture = resolve_mixture(two_sources)
    math_shares, code_shares = mixture.sources["math"], mixture.sources["code"]
    assert [Path(s.prefix).name for s in math_shares] == ["shard_0", "shard_1"]
    assert [(s.tokens, s.documents) for s in math_shares] == [(3000, 60), (1000, 20)]
    assert (code_shares[0].tokens, code_shares[0].documents) == (2000, 40)
    # 75% for math, split 3:1 by tokens between its shards; 25% for code.
    assert [s.weight for s in math_shares] == pytest.approx([0.5625, 0.1875])
    assert code_shares[0].weight == pytest.approx(0.25)
    assert mixture.source_weights() == pytest.approx({"math": 0.75, "code": 0.25})
    assert "math 75.0% (2 datasets, 4,000 tokens)" in mixture.describe()


def test_blended_datasets_draw_the_configured_proportions(two_sources, tmp_path, single_process_groups):
    mixture = resolve_mixture(two_sources)
    tokenizer = SyntheticTokenizer(256, eod=EOD)
    samples = 2000
    datasets = build_pretraining_datasets(two_sources, mixture, tokenizer, samples, 0, str(tmp_path / "cache"))
    assert len(datasets.train) >= samples
    from_code = 0
    for index in range(samples):
        tokens = datasets.train[index]["tokens"].numpy()
        content = tokens[tokens != EOD]
        is_code = bool((content >= 100).all())
        assert is_code or bool((content < 100).all())  # every sample comes from one source
        from_code += is_code
    # megatron blends greedily (the source furthest below its share goes next): exact to 1/N.
    assert abs(from_code / samples - 0.25) <= 0.01, from_code / samples
    sample = datasets.train[0]
    assert sample["tokens"].shape == (16,) and sample["labels"].shape == (16,)
    assert (sample["tokens"][1:] == sample["labels"][:-1]).all()


def test_bad_sources_fail_with_one_line(two_sources, tmp_path):
    missing = DataConfig(sources={"a": [str(tmp_path / "nowhere")]}, weights={"a": 1.0})
    with pytest.raises(ConfigError, match="neither a dataset prefix"):
        resolve_mixture(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no .bin/.idx dataset"):
        resolve_mixture(DataConfig(sources={"a": [str(tmp_path / "empty")]}, weights={"a": 1.0}))
    (tmp_path / "broken.bin").write_bytes(b"")
    (tmp_path / "broken.idx").write_bytes(b"not an index")
    with pytest.raises(ConfigError, match="bad header"):
        resolve_mixture(DataConfig(sources={"a": [str(tmp_path / "broken")]}, weights={"a": 1.0}))
    # Weight 0 switches a source off without looking for its files.
    two_sources.sources["absent"] = [str(tmp_path / "nowhere")]
    two_sources.weights["absent"] = 0.0
    assert resolve_mixture(two_sources).source_weights()["absent"] == 0.0


def test_read_index_counts(tmp_path):
    prefix = write_indexed_dataset(tmp_path / "d", [[5, 6, 7], [8, 0]], 256)
    assert read_index_counts(prefix) == (5, 2)


def test_data_parallel_ranks_split_each_global_batch_and_resume(tmp_path):
    micro, data_parallel, global_batch = 2, 2, 8

    def global_batches(dp_size: int, consumed: int, steps: int) -> list[set[int]]:
        per_rank = [iter(DataParallelSampler(1000, consumed, micro, rank, dp_size)) for rank in range(dp_size)]
        batches = []
        for _ in range(steps):
            indices: set[int] = set()
            for rank_iter in per_rank:
                for _ in range(global_batch // (micro * dp_size)):
                    indices.update(next(rank_iter))
            batches.append(indices)
        return batches

    single = global_batches(1, 0, 4)
    assert global_batches(data_parallel, 0, 4) == single
    assert single[0] == set(range(8))
    assert global_batches(data_parallel, 16, 2) == single[2:]


def test_default_tokenizer_is_deepseeks():
    tokenizer = load_tokenizer("")
    assert tokenizer.vocab_size == 129280
    assert tokenizer.eod is not None and tokenizer.decode(tokenizer.encode("x^2 + 1")) == "x^2 + 1"
    with pytest.raises(ConfigError, match="does not exist"):
        load_tokenizer("/nonexistent/tokenizer.json")
