"""The whole near-dedup (three kinds of Beam pipeline) on generated documents with planted
near-duplicates, judged by brute-force Jaccard over every pair."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from beam_pipelines.config import register_configs
from beam_pipelines.document import Document
from beam_pipelines.stages.dedup import run_dedup
from beam_pipelines.transforms.config import MinHashConfig
from beam_pipelines.transforms.minhash import better, survivor_rank
from stack_common.cli import compose_config
from tests.beam_pipelines.dedup.neardedup_support import (
    brute_force_jaccard,
    in_process_removals,
    read_jsonl,
    read_rows,
    reference_clusters,
    same_cluster_pairs,
    write_stage,
)
from tests.planted_duplicates import generate_documents

THRESHOLD = 0.8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """2,000 documents of real prose: originals, near-copies (word edits up to 5%, inserted and
    deleted sentences, other sites' boilerplate), copies of copies; a third carry a math score."""
    rng = random.Random(11)
    documents = []
    for generated in generate_documents(
        2000, seed=3, duplicate_fraction=0.4, max_edit_rate=0.05, target_characters=1200
    ):
        document = generated.document
        if rng.random() < 0.3:
            document.math_score = round(rng.random(), 3)
        documents.append(document)
    root = tmp_path_factory.mktemp("neardedup")
    write_stage(root / "pool", documents)
    similarity = brute_force_jaccard([d.text for d in documents], shingle_size=5)
    return root, documents, similarity


def _run(root, name, *overrides):
    config = compose_config(
        "dedup",
        [f"corpus.work_dir={root}", f"output_dir={root}/{name}", "beam=direct_single", *overrides],
        register_configs,
    )
    summary = run_dedup(config)
    kept = read_rows(root / name / "documents")
    removed = read_rows(root / name / "removed" / "07_minhash")
    return summary, kept, removed


def _predicted_labels(ids, removed):
    labels = {doc_id: doc_id for doc_id in ids}
    for row in removed:
        detail = json.loads(row["removed_detail"])
        labels[row["id"]] = detail["cluster"]
        labels[detail["survivor"]] = detail["cluster"]
    return labels


def _scores(documents, similarity, removed):
    ids = [d.id for d in documents]
    predicted = same_cluster_pairs(_predicted_labels(ids, removed), ids)
    first, second = np.nonzero(np.triu(similarity >= THRESHOLD, 1))
    true_pairs = set(zip(first.tolist(), second.tolist()))
    reference = same_cluster_pairs(reference_clusters(ids, similarity, THRESHOLD), ids)
    recall = len(true_pairs & predicted) / len(true_pairs)
    precision = len(predicted & reference) / max(1, len(predicted))
    return recall, precision, len(true_pairs), len(predicted)


@pytest.fixture(scope="module")
def default_run(corpus):
    root, _, _ = corpus
    return _run(root, "defaults")


def test_default_settings_find_near_duplicates_like_brute_force(corpus, default_run):
    root, documents, similarity = corpus
    summary, kept, removed = default_run
    recall, precision, true_pairs, predicted_pairs = _scores(documents, similarity, removed)
    near_miss = int(np.triu((similarity >= 0.5) & (similarity < THRESHOLD), 1).sum())
    print(f"recall={recall:.4f} precision={precision:.4f} pairs>=0.8: {true_pairs} near-miss 0.5-0.8: {near_miss}")
    assert true_pairs >= 100 and near_miss >= 300, "the generated set must plant pairs on both sides of 0.8"
    assert recall >= 0.95, f"recall {recall:.3f} of {true_pairs} pairs with Jaccard >= {THRESHOLD}"
    assert precision >= 0.95, f"precision {precision:.3f} of {predicted_pairs} predicted same-cluster pairs"

    # The run accounts for every document; removed ones carry their cluster and survivor.
    assert summary["balanced"] and summary["totals"]["in"] == len(documents)
    assert summary["totals"]["kept"] == len(kept) and summary["totals"]["dropped"] == len(removed)
    assert summary["minhash"]["permutation_scheme"] == "affine32"
    assert summary["components"]["converged"]
    assert summary["lsh"]["verified_pairs"] + summary["lsh"]["rejected_pairs"] == summary["lsh"]["candidate_pairs"]
    kept_ids = {row["id"] for row in kept}
    by_id = {d.id: d for d in documents}
    clusters: dict[str, list[str]] = {}
    for row in removed:
        detail = json.loads(row["removed_detail"])
        assert row["removed_step"] == "07_minhash" and row["removed_reason"] == "near_duplicate"
        assert detail["survivor"] in kept_ids and row["id"] not in kept_ids
        assert row["text"] == by_id[row["id"]].text
        clusters.setdefault(detail["cluster"], [detail["survivor"]]).append(row["id"])
        assert len(clusters[detail["cluster"]]) <= detail["cluster_size"]
    order = ["math_score", "text_length"]
    for cluster, members in clusters.items():
        survivor = members[0]
        assert cluster == min(members), "a cluster is labelled by its smallest id"
        for member in members[1:]:  # the survivor is the best by math score, length, then id
            assert better(
                (survivor_rank(by_id[survivor], order), survivor), (survivor_rank(by_id[member], order), member)
            )


def test_removes_exactly_what_the_in_process_computation_removes(corpus, default_run):
    """Any change to signing, banding, verification, components or the survivor rule that
    changes which documents go fails here (the pipeline's speed-ups must keep outputs)."""
    _, documents, _ = corpus
    _, _, removed = default_run
    expected = in_process_removals(documents, MinHashConfig())
    assert len(expected) >= 100
    assert {row["id"] for row in removed} == expected


def test_many_partitions_verify_the_same_pairs_and_remove_the_same_documents(corpus, default_run):
    """Band records and candidate edges split into 10 partitions (the edges' endpoint hashes
    exchanged through per-(file, partition) files) find, verify and remove exactly what one
    partition does."""
    root, _, _ = corpus
    default_summary, _, default_removed = default_run
    summary, _, removed = _run(root, "partitioned", "minhash.band_partition_records=4000")
    assert default_summary["lsh"]["band_partitions"] == 1 and summary["lsh"]["band_partitions"] == 10
    for name in ("candidate_pairs", "verified_pairs", "rejected_pairs", "candidate_documents"):
        assert summary["lsh"][name] == default_summary["lsh"][name], name
    assert sorted(row["id"] for row in removed) == sorted(row["id"] for row in default_removed)


def test_without_verification_band_collisions_merge_dissimilar_pages(corpus):
    """The same graph without exact Jaccard: recall stays, precision collapses - which is why
    verification is on by default (and shows the precision measure can fail)."""
    root, documents, similarity = corpus
    summary, _, removed = _run(root, "unverified", "minhash.verify=false")
    recall, precision, _, _ = _scores(documents, similarity, removed)
    assert recall >= 0.95
    assert precision < 0.8
    assert "verified_pairs" not in summary["lsh"] and summary["balanced"]


def test_duplicate_ids_are_dead_lettered_and_the_run_still_balances(tmp_path):
    texts = [g.document.text for g in generate_documents(6, seed=9, duplicate_fraction=0.0, target_characters=600)]
    documents = [Document(id=f"d{i}", text=text) for i, text in enumerate(texts)]
    documents.append(Document(id="d1", text=texts[1] + " An appended line."))  # same id, other text
    documents.append(Document(id="copy", text=texts[2].upper()))  # a case-only copy of d2
    documents.append(Document(id="empty", text=" ... "))  # no words: kept, never compared
    write_stage(tmp_path / "pool", documents)
    # 10 band records per partition: 9 documents x 20 bands / 10 = 18 band (and id) partitions,
    # so buckets and repeated ids are found among many partition files.
    summary, kept, removed = _run(tmp_path, "out", "minhash.band_partition_records=10")
    assert summary["lsh"]["band_partitions"] == 18
    assert summary["balanced"]
    assert summary["totals"] == {"in": 9, "kept": 7, "dropped": 1, "dead_lettered": 1}
    dead = read_jsonl(tmp_path / "out" / "dead_letter" / "07_minhash")
    assert [letter["kind"] for letter in dead] == ["duplicate_id"] and dead[0]["source"] == "d1"
    assert [row["id"] for row in removed] == ["d2"]  # "copy" < "d2": same length, smaller id survives
    assert json.loads(removed[0]["removed_detail"]) == {"cluster": "copy", "survivor": "copy", "cluster_size": 2}
    assert summary["lsh"]["documents_without_words"] == 1
    assert "empty" in {row["id"] for row in kept}
