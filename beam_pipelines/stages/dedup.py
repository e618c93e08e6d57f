"""The body of `python -m beam_pipelines.dedup` (see that module for what it does and how to run
it): builds and runs the Beam graph, writes the summary."""

from __future__ import annotations

import logging
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from beam_pipelines.accounting import DEAD_LETTER, REMOVED, Ledger, build_summary, format_summary, tally_counters
from beam_pipelines.config import DedupConfig
from beam_pipelines.io.parquet import (
    SUMMARY_FILE,
    clear_stage_dir,
    count_rows,
    documents_pattern,
    write_json,
)
from beam_pipelines.options import describe_runner, pipeline_options
from beam_pipelines.transforms.connected_components import read_edges, run_component_rounds, write_edges
from beam_pipelines.transforms.minhash import (
    LSH_NAMESPACE,
    MINHASH_STEP,
    NODE_SCHEMA,
    ApplyRemovals,
    CandidateEdges,
    MinHashSettings,
    SelectSurvivors,
    SignUnits,
    VerifyEdges,
    band_partitions,
)
from stack_common.errors import ConfigError

STEPS = ("07_minhash",)
log = logging.getLogger("dedup")


def _input_pattern(input_dir: str) -> str:
    return input_dir if input_dir.endswith(".parquet") else documents_pattern(input_dir)


def _has_files(pattern: str) -> bool:
    return bool(FileSystems.match([pattern])[0].metadata_list)


def input_units(pattern: str) -> list[tuple[int, str]]:
    """(unit index, path) of every input Parquet file, in a stable order."""
    return list(enumerate(sorted(metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list)))


def build_candidate_pipeline(pipeline, config: DedupConfig, work_dir: str, input_rows: int) -> int:
    """Pipeline 1: signatures and band records written per input file, shared buckets found per
    band-key partition, candidate edges verified by a join per input file, candidate nodes.
    Returns the number of band partitions."""
    minhash = config.minhash
    settings = MinHashSettings.from_config(minhash)
    partitions = band_partitions(input_rows, minhash.bands, minhash.band_partition_records)
    signed = (
        pipeline
        | "Input files" >> beam.Create(input_units(_input_pattern(config.input_dir)))
        | "Spread files" >> beam.Reshuffle()
        | "Sign"
        >> beam.ParDo(SignUnits(settings, minhash.survivor_order, work_dir, partitions)).with_outputs(
            DEAD_LETTER, main="units"
        )
    )
    # Without verification a star per bucket connects exactly what all pairs would.
    pairwise_limit = minhash.pairwise_bucket_limit if minhash.verify else 1
    edges = signed.units | "Candidates" >> CandidateEdges(work_dir, partitions, pairwise_limit)
    verified = edges | "Verify" >> VerifyEdges(work_dir, minhash.threshold if minhash.verify else None, partitions)
    write_edges(verified["edges"], f"{work_dir}/edges_round_000/part")
    (
        verified["nodes"]
        | "Node rows" >> beam.Map(lambda node: {"id": node[0], "rank": list(node[1][0]), "unit": node[1][1]})
        | "Write nodes"
        >> beam.io.WriteToParquet(f"{work_dir}/nodes/part", schema=NODE_SCHEMA, file_name_suffix=".parquet")
    )
    signed[DEAD_LETTER] | "Write failed" >> beam.io.WriteToText(f"{work_dir}/failed/part", file_name_suffix=".jsonl")
    return partitions


def build_removal_pipeline(pipeline, config: DedupConfig, work_dir: str, edges_pattern: str, partitions: int) -> None:
    """Pipeline 3: survivors per component, then every input file filtered to its kept documents."""
    ledger = Ledger(config.output_dir)
    nodes = (
        pipeline
        | "Read nodes" >> beam.io.ReadFromParquet(f"{work_dir}/nodes/*.parquet")
        | "Node tuples" >> beam.Map(lambda row: (row["id"], (tuple(row["rank"]), row["unit"])))
    )
    edges = read_edges(pipeline, edges_pattern, "Read components")
    losers = (nodes, edges) | "Survivors" >> SelectSurvivors()
    failed_pattern = f"{work_dir}/failed/*.jsonl"
    if _has_files(failed_pattern):
        failed = pipeline | "Read failed" >> beam.io.ReadFromText(failed_pattern)
    else:
        failed = pipeline | "No failures" >> beam.Create([])
    units = input_units(_input_pattern(config.input_dir))
    documents_dir = documents_pattern(config.output_dir).rsplit("/", 1)[0]
    outputs = (losers, failed) | "Remove" >> ApplyRemovals(units, documents_dir, work_dir, partitions)
    ledger.add(MINHASH_STEP, removed=outputs[REMOVED], dead_letters=outputs[DEAD_LETTER])
    ledger.write(pipeline)


def _namespace_metrics(result, namespace: str) -> dict[str, Any]:
    """Counters and distributions (min/max/mean/count) of one namespace."""
    found: dict[str, Any] = {}
    metrics = result.metrics().query(MetricsFilter().with_namespace(namespace))
    for counter in metrics["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        found[counter.key.metric.name] = found.get(counter.key.metric.name, 0) + value
    for distribution in metrics["distributions"]:
        value = distribution.committed if distribution.committed is not None else distribution.attempted
        if value is not None and value.count:
            found[distribution.key.metric.name] = {
                "count": value.count,
                "min": value.min,
                "max": value.max,
                "mean": round(value.mean, 3),
            }
    return found


def _delete(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def run_dedup(config: DedupConfig) -> dict:
    """Run the three stages and write summary.json; returns the summary."""
    started = time.time()
    input_pattern = _input_pattern(config.input_dir)
    if not _has_files(input_pattern):
        raise ConfigError(
            f"no documents match {input_pattern} (run python -m beam_pipelines.prepare first, or set input_dir)"
        )
    if config.num_shards:
        raise ConfigError(
            "dedup writes one output file per input file (each is filtered where it lies); "
            f"num_shards={config.num_shards} is not supported, leave it 0"
        )
    output_dir = config.output_dir.rstrip("/")
    work_dir = config.work_dir.rstrip("/")
    settings = MinHashSettings.from_config(config.minhash)

    def make_pipeline(job_name: str):
        return beam.Pipeline(options=pipeline_options(config.beam, job_name=job_name))

    log.info(
        "[dedup] %s -> %s (runner: %s; %s)", input_pattern, output_dir, describe_runner(config.beam), settings.record()
    )
    clear_stage_dir(output_dir)
    _delete(work_dir)

    stage_started = time.time()
    pipeline = make_pipeline("dedup-candidates")
    input_rows = count_rows(input_pattern)
    partitions = build_candidate_pipeline(pipeline, config, work_dir, input_rows)
    result = pipeline.run()
    result.wait_until_finish()
    lsh = _namespace_metrics(result, LSH_NAMESPACE)
    lsh["seconds"] = round(time.time() - stage_started, 3)
    lsh["band_partitions"] = partitions
    log.info(
        "[dedup] signed %s documents; %s shared buckets; %s candidate pairs%s",
        lsh.get("documents_signed", 0),
        lsh.get("shared_buckets", 0),
        lsh.get("candidate_pairs", 0),
        f", {lsh.get('verified_pairs', 0)} verified" if config.minhash.verify else "",
    )

    components = run_component_rounds(
        f"{work_dir}/edges_round_000/*.parquet",
        work_dir,
        make_pipeline,
        rounds_per_pipeline=config.minhash.rounds_per_pipeline,
        max_rounds=config.minhash.max_component_rounds,
    )
    log.info(
        "[dedup] components converged after %d round(s) in %d pipeline(s)", components.rounds, components.pipelines
    )

    stage_started = time.time()
    pipeline = make_pipeline("dedup-removal")
    build_removal_pipeline(pipeline, config, work_dir, components.final_edges_pattern, partitions)
    result = pipeline.run()
    result.wait_until_finish()
    clusters = _namespace_metrics(result, LSH_NAMESPACE)
    clusters["seconds"] = round(time.time() - stage_started, 3)

    summary = build_summary(
        "dedup",
        tally_counters(result),
        STEPS,
        started,
        input_rows=input_rows,
        extra={
            "input": input_pattern,
            "minhash": settings.record()
            | {
                "verify": config.minhash.verify,
                "threshold": config.minhash.threshold,
                "survivor_order": list(config.minhash.survivor_order),
            },
            "lsh": lsh,
            "components": components.as_dict(),
            "clusters": clusters,
            "outputs": {
                "documents": documents_pattern(output_dir),
                "removed": f"{output_dir}/removed/",
                "dead_letter": f"{output_dir}/dead_letter/",
            },
        },
    )
    write_json(f"{output_dir}/{SUMMARY_FILE}", summary)
    if not config.keep_work_files:
        _delete(work_dir)
    log.info("%s", format_summary(summary))
    log.info("[dedup] summary: %s/%s (%.1f s)", output_dir, SUMMARY_FILE, summary["elapsed_seconds"])
    if not summary["balanced"]:
        raise RuntimeError("dedup: counts do not add up (see summary.json); this is a bug, please report it")
    # The signing pass reads the same input: one that saw fewer documents than the footers hold
    # lost some on the way (the removal pass is checked by build_summary's input_rows).
    signing_pass = sum(lsh.get(name, 0) for name in ("documents_signed", "documents_without_words", "documents_failed"))
    if signing_pass != summary["input_rows"]:
        raise RuntimeError(
            f"dedup: the signing pass read {signing_pass} documents of the {summary['input_rows']} "
            f"in {input_pattern} (see {output_dir}/{SUMMARY_FILE}); the runner lost documents"
        )
    return summary
