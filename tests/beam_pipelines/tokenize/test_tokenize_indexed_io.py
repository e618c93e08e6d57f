"""Our .bin/.idx writer and streaming merge against megatron-core's own IndexedDatasetBuilder:
same bytes, and megatron's IndexedDataset reads them back."""

from __future__ import annotations

import filecmp
import gc

import numpy as np
import pytest
import torch
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

from beam_pipelines.io.megatron import (
    UINT16_VOCAB_LIMIT,
    IndexedDatasetWriter,
    merge_indexed_datasets,
    read_index_header,
    token_dtype,
    write_indexed_dataset,
)


def random_documents(dtype, count, seed=0, high=60000):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, size=int(rng.integers(1, 40))).astype(dtype) for _ in range(count)]


def megatron_dataset(prefix, documents, dtype):
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for tokens in documents:
        builder.add_document(torch.from_numpy(tokens.astype(np.int64)), [len(tokens)])
    builder.finalize(f"{prefix}.idx")


def same_files(a, b):
    return all(filecmp.cmp(f"{a}{suffix}", f"{b}{suffix}", shallow=False) for suffix in (".bin", ".idx"))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_writer_matches_megatron_builder_byte_for_byte(tmp_path, dtype):
    documents = random_documents(dtype, 25)
    megatron_dataset(tmp_path / "megatron", documents, dtype)
    info = write_indexed_dataset(str(tmp_path / "ours"), documents, dtype)
    assert same_files(tmp_path / "megatron", tmp_path / "ours")
    assert (info.documents, info.tokens) == (25, sum(len(d) for d in documents))
    dataset = IndexedDataset(str(tmp_path / "ours"))
    assert len(dataset) == 25 and dataset[0].dtype == dtype
    assert all(np.array_equal(dataset[i], documents[i]) for i in range(25))
    assert list(dataset.document_indices) == list(range(26))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_streaming_merge_matches_megatron_add_index(tmp_path, dtype, monkeypatch):
    documents = random_documents(dtype, 31, seed=1)
    parts = [documents[:12], documents[12:13], documents[13:]]
    shard_prefixes = []
    for number, part in enumerate(parts):
        prefix = str(tmp_path / f"shard{number}")
        write_indexed_dataset(prefix, part, dtype)
        shard_prefixes.append(prefix)
    # add_index calls gc.collect() after each shard (~1 s with torch loaded); it frees memory
    # and changes nothing in the output.
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    builder = IndexedDatasetBuilder(str(tmp_path / "megatron.bin"), dtype=dtype)
    for prefix in shard_prefixes:
        builder.add_index(prefix)
    builder.finalize(str(tmp_path / "megatron.idx"))
    # A chunk smaller than every shard makes each section take several reads.
    merged = merge_indexed_datasets(shard_prefixes, str(tmp_path / "merged"), np.dtype(dtype), chunk_items=5)
    assert same_files(tmp_path / "megatron", tmp_path / "merged")
    assert (merged.documents, merged.tokens) == (31, sum(len(d) for d in documents))
    dataset = IndexedDataset(str(tmp_path / "merged"))
    assert all(np.array_equal(dataset[i], documents[i]) for i in range(31))
    assert not list(tmp_path.glob("*partial*")), "temporary files are renamed away"


def test_dtype_follows_megatron_rule():
    for vocab_size in (256, 32000, UINT16_VOCAB_LIMIT - 1, UINT16_VOCAB_LIMIT, 65536, 129280):
        assert token_dtype(vocab_size) == np.dtype(DType.optimal_dtype(vocab_size)), vocab_size
    assert token_dtype(129280) == np.int32 and token_dtype(32000) == np.uint16
    with pytest.raises(ValueError):
        token_dtype(0)


def test_merge_refuses_mismatched_or_damaged_shards(tmp_path):
    write_indexed_dataset(str(tmp_path / "small"), random_documents(np.uint16, 3), np.uint16)
    write_indexed_dataset(str(tmp_path / "wide"), random_documents(np.int32, 3), np.int32)
    with pytest.raises(ValueError, match="is int32"):
        merge_indexed_datasets(
            [str(tmp_path / "small"), str(tmp_path / "wide")], str(tmp_path / "out"), np.dtype(np.uint16)
        )
    (tmp_path / "small.bin").write_bytes((tmp_path / "small.bin").read_bytes()[:-2])
    with pytest.raises(ValueError, match="its index says"):
        merge_indexed_datasets([str(tmp_path / "small")], str(tmp_path / "out"), np.dtype(np.uint16))
    (tmp_path / "junk.idx").write_bytes(b"not an index at all, not at all")
    with pytest.raises(ValueError, match="not a megatron index"):
        read_index_header(str(tmp_path / "junk"))


def test_writer_checks_token_dtype(tmp_path):
    writer = IndexedDatasetWriter(str(tmp_path / "w"), np.uint16)
    with pytest.raises(TypeError):
        writer.add_document(np.arange(3, dtype=np.int64))
    writer.add_document(np.arange(3, dtype=np.uint16), "first")
    info = writer.close()
    assert (info.documents, info.tokens, info.first_document_id) == (1, 3, "first")
    header = read_index_header(str(tmp_path / "w"))
    assert (header.dtype, header.sequence_count, header.document_index_count) == (np.uint16, 1, 2)
