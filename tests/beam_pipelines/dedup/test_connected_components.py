"""Star-round connected components on a real Beam runner, against a union-find reference."""

from __future__ import annotations

import random

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.options import BeamConfig, pipeline_options
from beam_pipelines.transforms.connected_components import (
    EDGE_SCHEMA,
    normalized_edge,
    run_component_rounds,
    union_find_components,
)

IN_PROCESS = BeamConfig(runner="direct", direct_running_mode="in_memory", direct_num_workers=1)


def _make_pipeline(job_name: str) -> beam.Pipeline:
    return beam.Pipeline(options=pipeline_options(IN_PROCESS, job_name=job_name))


def _write_edges(path, edges) -> str:
    path.mkdir(parents=True)
    normalized = [e for e in (normalized_edge(a, b) for a, b in edges) if e is not None]
    table = pa.Table.from_pylist([{"node": a, "parent": b} for a, b in normalized], schema=EDGE_SCHEMA)
    pq.write_table(table, path / "part-00000.parquet")
    return str(path / "*.parquet")


def _labels_from_stars(work_dir) -> dict[str, str]:
    final = sorted(work_dir.glob("edges_round_*"))[-1]
    labels: dict[str, str] = {}
    for path in final.glob("*.parquet"):
        for row in pq.read_table(path).to_pylist():
            assert row["node"] not in labels, "a converged star forest gives each leaf one centre"
            labels[row["node"]] = row["parent"]
            labels.setdefault(row["parent"], row["parent"])
    return labels


def _graphs(rng: random.Random) -> list[tuple[str, str]]:
    """A long chain and a star whose centre is not its smallest id (both need several rounds),
    a 'broom' (chain ending in a star), and random small components; ids are shuffled so no
    order in the input helps."""
    names = [f"n{i:05d}" for i in range(2000)]
    rng.shuffle(names)
    pool = iter(names)
    edges = []
    chain = [next(pool) for _ in range(300)]
    edges += list(zip(chain, chain[1:]))
    star = [next(pool) for _ in range(60)]
    centre = max(star)
    edges += [(centre, leaf) for leaf in star if leaf != centre]
    broom = [next(pool) for _ in range(80)]
    edges += list(zip(broom[:40], broom[1:41])) + [(broom[40], leaf) for leaf in broom[41:]]
    for _ in range(40):
        size = rng.randint(2, 12)
        members = [next(pool) for _ in range(size)]
        for _ in range(size + rng.randint(0, size)):
            edges.append((rng.choice(members), rng.choice(members)))  # self-loops and repeats too
        edges += list(zip(members, members[1:]))  # keep the component connected
    rng.shuffle(edges)
    return edges


def test_star_rounds_match_union_find(tmp_path):
    edges = _graphs(random.Random(7))
    pattern = _write_edges(tmp_path / "input", edges)
    report = run_component_rounds(pattern, str(tmp_path / "work"), _make_pipeline, rounds_per_pipeline=3, max_rounds=40)
    expected = union_find_components(edges)
    got = _labels_from_stars(tmp_path / "work")
    # Every node of every multi-node component is labelled with its component's smallest id.
    sizes: dict[str, int] = {}
    for label in expected.values():
        sizes[label] = sizes.get(label, 0) + 1
    assert got == {node: label for node, label in expected.items() if sizes[label] > 1}
    assert len(set(got.values())) == 43  # chain, star, broom and 40 random components
    assert report.converged
    assert report.rounds > 3, "a 300-node chain in random order cannot be solved in a few rounds"
    assert report.pipelines == -(-report.rounds // 3)
    assert report.history[0]["not_star"] > 0 and report.history[-1]["not_star"] == 0
    assert [entry["round"] for entry in report.history] == list(range(1, report.rounds + 1))


def test_empty_edge_list_converges_at_once(tmp_path):
    pattern = _write_edges(tmp_path / "input", [])
    report = run_component_rounds(pattern, str(tmp_path / "work"), _make_pipeline)
    assert report.converged and report.rounds == 1 and report.history[0]["edges"] == 0


def test_too_few_rounds_fail_loudly(tmp_path):
    chain = [f"c{i:03d}" for i in range(200)]
    random.Random(3).shuffle(chain)
    pattern = _write_edges(tmp_path / "input", list(zip(chain, chain[1:])))
    with pytest.raises(RuntimeError, match="did not converge in 2 rounds"):
        run_component_rounds(
            pattern,
            str(tmp_path / "work"),
            _make_pipeline,
            rounds_per_pipeline=1,
            max_rounds=2,
        )


def test_union_find_reference_on_a_hand_made_graph():
    labels = union_find_components([("d", "c"), ("c", "b"), ("x", "y"), ("b", "e"), ("z", "z")])
    assert labels == {"b": "b", "c": "b", "d": "b", "e": "b", "x": "x", "y": "x", "z": "z"}
