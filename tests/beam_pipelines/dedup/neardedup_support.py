"""Helpers of the near-dedup and decontamination tests: stage directories, brute-force truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sparse

from beam_pipelines.document import Document, documents_to_table
from beam_pipelines.transforms.connected_components import union_find_components
from beam_pipelines.transforms.minhash import (
    MinHashSettings,
    Signer,
    band_keys,
    better,
    jaccard,
    shingles,
    survivor_rank,
    word_tokens,
)


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


def in_process_removals(documents: list[Document], config) -> set[str]:
    """The ids the near-dedup must remove, computed in one process from the pure core: band
    buckets, candidate pairs by the pipeline's rule (all pairs up to `pairwise_bucket_limit`
    members, a star on the smallest id above), exact Jaccard >= threshold, union-find, and
    every member but the best (rank, then smallest id) of each component."""
    settings = MinHashSettings.from_config(config)
    signer = Signer(settings)
    hashes, buckets = {}, {}
    for document in documents:
        document_hashes = signer.hashes(document.text)
        signature = signer.signature(document_hashes)
        if signature is None:
            continue
        hashes[document.id] = document_hashes
        for key in band_keys(signature, settings.bands, settings.rows):
            buckets.setdefault(key, set()).add(document.id)
    edges = []
    for members in buckets.values():
        members = sorted(members)
        if len(members) <= config.pairwise_bucket_limit:
            pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
        else:
            pairs = [(members[0], b) for b in members[1:]]
        edges += [(a, b) for a, b in pairs if jaccard(hashes[a], hashes[b]) >= config.threshold]
    labels = union_find_components(edges)
    by_id = {document.id: document for document in documents}
    best: dict[str, tuple] = {}
    for node, label in labels.items():
        candidate = (survivor_rank(by_id[node], config.survivor_order), node)
        if label not in best or better(candidate, best[label]):
            best[label] = candidate
    return {node for node, label in labels.items() if best[label][1] != node}
