"""Connected components of a distributed edge list: alternating large-star / small-star rounds.

The algorithm of Kiveris, Lattanzi, Mirrokni, Rastogi and Vassilvitskii ("Connected Components
in MapReduce and Beyond", SoCC 2014), written as Beam transforms. Edges are `(node, parent)`
pairs of string ids with `parent < node`; a component's label is its smallest id.
- large-star: group every node with its neighbours; link each *larger* neighbour to the
  smallest id seen in the group (the node itself included);
- small-star: group every node with its *smaller* neighbours; link those neighbours and the
  node itself to the smallest of them.
Both keep each component connected and never join two components. A round is one large-star
then one small-star. The edge set is converged when it is a forest of stars centred on each
component's smallest id: every node then has either only larger neighbours (a centre) or
exactly one, smaller, neighbour (a leaf). The large-star step counts the nodes of its *input*
that break this rule (`round_NNN_not_star`); a round that counts zero read a converged edge set
and left it unchanged (both steps are idempotent on such a forest).

Rounds are driven from outside (`run_component_rounds`): each Beam pipeline reads the previous
edge files, runs `rounds_per_pipeline` unrolled rounds and writes the new edges, until a round
reports convergence or `max_rounds` is reached. The number of rounds grows like O(log^2 n) in
the worst case and is small in practice (a chain of 1,000 ids in random order: 9 rounds, of
10,000: 12; a round that confirms convergence included).

Cost: per round, two GroupByKeys and two Distincts over the edge list (E edges, at most the
number of near-duplicate documents times the number of bands). A group is one node's neighbour
list, read twice and never held, so a hub with a million neighbours costs one id of memory.
Nothing is collected on one worker; the driver only reads counters.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

EDGE_SCHEMA = pa.schema(
    [pa.field("node", pa.string(), nullable=False), pa.field("parent", pa.string(), nullable=False)]
)
COMPONENTS_NAMESPACE = "07_minhash_components"
log = logging.getLogger(__name__)


def round_counter(round_index: int, name: str) -> str:
    return f"round_{round_index:03d}_{name}"


def normalized_edge(first: str, second: str) -> tuple[str, str] | None:
    """(larger, smaller) id pair, or None for a self-loop."""
    if first == second:
        return None
    return (first, second) if first > second else (second, first)


class _LargeStar(beam.DoFn):
    def __init__(self, round_index: int):
        self.round_index = round_index

    def setup(self):
        self.not_star = Metrics.counter(COMPONENTS_NAMESPACE, round_counter(self.round_index, "not_star"))
        self.nodes = Metrics.counter(COMPONENTS_NAMESPACE, round_counter(self.round_index, "nodes"))

    def process(self, grouped):
        node, neighbours = grouped
        smallest = node
        smaller = larger = 0
        for neighbour in neighbours:  # pass 1: the smallest id, and whether the node is star-shaped
            if neighbour < node:
                smaller += 1
                if neighbour < smallest:
                    smallest = neighbour
            else:
                larger += 1
        self.nodes.inc()
        if smaller > 1 or (smaller and larger):
            self.not_star.inc()
        for neighbour in neighbours:  # pass 2: hang the larger neighbours on the smallest id
            if neighbour > node:
                yield (neighbour, smallest)


def _small_star(grouped):
    node, smaller_neighbours = grouped
    smallest = node
    for neighbour in smaller_neighbours:
        if neighbour < smallest:
            smallest = neighbour
    if smallest != node:
        yield (node, smallest)
    for neighbour in smaller_neighbours:
        if neighbour != smallest:
            yield (neighbour, smallest)


def _both_directions(edge):
    node, parent = edge
    yield (node, parent)
    yield (parent, node)


class _CountEdges(beam.DoFn):
    def __init__(self, round_index: int):
        self.round_index = round_index

    def setup(self):
        self.edges = Metrics.counter(COMPONENTS_NAMESPACE, round_counter(self.round_index, "edges"))

    def process(self, edge):
        self.edges.inc()
        yield edge


class StarRound(beam.PTransform):
    """One large-star + small-star round over (node, parent) edges; counts its input's
    edges and not-star nodes under `round_NNN_*`."""

    def __init__(self, round_index: int):
        super().__init__()
        self.round_index = round_index

    def expand(self, edges):
        large = (
            edges
            | "Count edges" >> beam.ParDo(_CountEdges(self.round_index))
            | "Both directions" >> beam.FlatMap(_both_directions)
            | "Group neighbours" >> beam.GroupByKey()
            | "Large star" >> beam.ParDo(_LargeStar(self.round_index))
            | "Distinct large" >> beam.Distinct()
        )
        return (
            large
            | "Group smaller neighbours" >> beam.GroupByKey()
            | "Small star" >> beam.FlatMap(_small_star)
            | "Distinct small" >> beam.Distinct()
        )


def read_edges(pipeline, pattern: str, label: str = "Read edges"):
    return (
        pipeline
        | label >> beam.io.ReadFromParquet(pattern)
        | f"{label} as tuples" >> beam.Map(lambda row: (row["node"], row["parent"]))
    )


def write_edges(edges, prefix: str, label: str = "Write edges"):
    return (
        edges
        | f"{label} rows" >> beam.Map(lambda edge: {"node": edge[0], "parent": edge[1]})
        | label >> beam.io.WriteToParquet(prefix, schema=EDGE_SCHEMA, file_name_suffix=".parquet")
    )


@dataclass
class ComponentsReport:
    """What the driver learned from the rounds' counters."""

    converged: bool = False
    rounds: int = 0
    pipelines: int = 0
    # Per round: edges read, nodes seen, nodes that were not yet star-shaped.
    history: list[dict] = field(default_factory=list)
    final_edges_pattern: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "converged": self.converged,
            "rounds": self.rounds,
            "pipelines": self.pipelines,
            "history": self.history,
            "seconds": round(self.seconds, 3),
        }


def run_component_rounds(
    edges_pattern: str,
    work_dir: str,
    make_pipeline: Callable[[str], beam.Pipeline],
    rounds_per_pipeline: int = 2,
    max_rounds: int = 40,
) -> ComponentsReport:
    """Run star rounds until converged; returns the report and the converged edges' pattern.

    `make_pipeline(job_name)` builds an empty pipeline with the caller's runner options.
    Raises RuntimeError if `max_rounds` pass without convergence (the labels would be wrong).
    """
    started = time.time()
    report = ComponentsReport()
    current = edges_pattern
    round_index = 0
    while round_index < max_rounds:
        batch = list(range(round_index + 1, min(max_rounds, round_index + rounds_per_pipeline) + 1))
        output_prefix = f"{work_dir.rstrip('/')}/edges_round_{batch[-1]:03d}/part"
        pipeline = make_pipeline(f"minhash-components-{batch[0]:03d}")
        edges = read_edges(pipeline, current)
        for index in batch:
            edges = edges | f"Round {index:03d}" >> StarRound(index)
        write_edges(edges, output_prefix)
        result = pipeline.run()
        result.wait_until_finish()
        report.pipelines += 1
        counters: dict[str, int] = {}
        for counter in result.metrics().query(MetricsFilter().with_namespace(COMPONENTS_NAMESPACE))["counters"]:
            value = counter.committed if counter.committed is not None else counter.attempted
            counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + value
        current = f"{output_prefix.rsplit('/', 1)[0]}/*.parquet"
        for index in batch:
            entry = {
                "round": index,
                "edges": counters.get(round_counter(index, "edges"), 0),
                "nodes": counters.get(round_counter(index, "nodes"), 0),
                "not_star": counters.get(round_counter(index, "not_star"), 0),
            }
            report.history.append(entry)
            log.info(
                "[components] round %d: %d edges, %d nodes, %d not yet in a star",
                index,
                entry["edges"],
                entry["nodes"],
                entry["not_star"],
            )
            if entry["not_star"] == 0:
                # This round's input was already a star forest; later rounds changed nothing.
                report.converged = True
                report.rounds = index
                break
        round_index = batch[-1]
        if report.converged:
            break
    report.final_edges_pattern = current
    report.seconds = time.time() - started
    if not report.converged:
        raise RuntimeError(
            f"connected components did not converge in {max_rounds} rounds; raise minhash.max_component_rounds"
        )
    return report


def union_find_components(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """node -> smallest id of its component, on one machine: the readable reference that tests
    compare the distributed rounds with (never used by the pipeline)."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return root

    for first, second in edges:
        a, b = find(first), find(second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {node: find(node) for node in list(parent)}
