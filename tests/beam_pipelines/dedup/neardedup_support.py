"""Helpers of the near-dedup and decontamination tests: stage directories, brute-force truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sparse

from beam_pipelines.document import Document, documents_to_table
from beam_pipelines.transforms.connected_components import union_find_components
from beam_pipelines.transforms.minhash import shingles, word_tokens


def write_stage(stage_dir: Path, documents: list[Document], shards: int = 2) -> Path:
    """A stage directory as `prepare` writes it (documents/*.parquet), in `shards` files."""
    target = stage_dir / "documents"
    target.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        part = documents[shard::shards]
        pq.write_table(documents_to_table(part), target / f"part-{shard:05d}-of-{shards:05d}.parquet")
    return stage_dir


def read_rows(pattern_dir: Path) -> list[dict]:
    rows: list[dict] = []
    for path in sorted(pattern_dir.glob("*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def read_jsonl(directory: Path) -> list[dict]:
    return [
        json.loads(line) for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines() if line
    ]


def brute_force_jaccard(texts: list[str], shingle_size: int) -> np.ndarray:
    """Exact Jaccard of every pair of texts on their shingle sets (dense N x N; N small)."""
    vocabulary: dict[bytes, int] = {}
    rows, columns = [], []
    sizes = np.zeros(len(texts))
    for index, text in enumerate(texts):
        shingle_set = shingles(word_tokens(text), shingle_size)
        sizes[index] = len(shingle_set)
        for shingle in shingle_set:
            rows.append(index)
            columns.append(vocabulary.setdefault(shingle, len(vocabulary)))
    matrix = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, columns)), shape=(len(texts), len(vocabulary))
    )
    intersection = (matrix @ matrix.T).toarray().astype(float)
    union = sizes[:, None] + sizes[None, :] - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, 1.0)


def reference_clusters(ids: list[str], similarity: np.ndarray, threshold: float) -> dict[str, str]:
    """Components of the graph of pairs at or above `threshold` (union-find on one machine)."""
    first, second = np.nonzero(np.triu(similarity >= threshold, 1))
    labels = union_find_components((ids[a], ids[b]) for a, b in zip(first, second))
    return {doc_id: labels.get(doc_id, doc_id) for doc_id in ids}


def same_cluster_pairs(labels: dict[str, str], ids: list[str]) -> set[tuple[int, int]]:
    by_label: dict[str, list[int]] = {}
    for index, doc_id in enumerate(ids):
        by_label.setdefault(labels[doc_id], []).append(index)
    pairs = set()
    for members in by_label.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                pairs.add((a, b))
    return pairs
