"""The body of `python -m beam_pipelines.decontaminate` (see that module for what it does and how to run
it): builds and runs the Beam graph, writes the summary."""

from __future__ import annotations

import json
import logging
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.accounting import DEAD_LETTER, KEPT, REMOVED, Ledger, build_summary, format_summary, tally_counters
from beam_pipelines.config import DecontaminateConfig
from beam_pipelines.io.parquet import (
    SUMMARY_FILE,
    ReadDocuments,
    WriteDocuments,
    clear_stage_dir,
    count_rows,
    documents_pattern,
    write_json,
)
from beam_pipelines.options import describe_runner, pipeline_options
from beam_pipelines.transforms.decontaminate import (
    DECONTAMINATE_STEP,
    MATCHES,
    TOUCHES,
    ContaminationIndex,
    ContaminationReport,
    DecontaminateDoFn,
    benchmark_files,
    load_index,
    read_benchmark,
)
from stack_common.errors import ConfigError

STEPS = ("08_decontaminate",)
log = logging.getLogger("decontaminate")


def load_benchmarks(config: DecontaminateConfig):
    """All benchmark items, and per benchmark the files read (or why none were)."""
    items = []
    sources: dict[str, dict] = {}
    for source in config.benchmarks:
        if not benchmark_files(source.path):
            sources[source.name] = {"path": source.path, "files": [], "missing": True}
            log.warning(
                "[decontaminate] benchmark %r: no .jsonl/.json file at %s; skipped",
                source.name,
                source.path,
            )
            continue
        found, files = read_benchmark(
            source.name,
            source.path,
            source.format,
            source.question_fields,
            source.answer_fields,
            include_answers=config.decontamination.include_answers,
        )
        items += found
        sources[source.name] = {"path": source.path, "files": files, "missing": False}
    if not items and config.require_benchmarks:
        paths = ", ".join(source.path for source in config.benchmarks) or "(none configured)"
        raise ConfigError(
            f"no benchmark files found at {paths}: put the public test sets there (e.g. GSM8K test.jsonl in "
            f"{config.benchmarks_dir}/gsm8k/), set benchmarks=[...], or require_benchmarks=false to pass the corpus "
            "through"
        )
    return items, sources


def build_decontaminate_pipeline(pipeline, config: DecontaminateConfig, index_path: str) -> None:
    output_dir = config.output_dir.rstrip("/")
    ledger = Ledger(output_dir)
    index = pipeline | "Index path" >> beam.Create([index_path]) | "Load index" >> beam.Map(load_index)
    documents = pipeline | "Read documents" >> ReadDocuments(config.input_dir)
    settings = config.decontamination
    outputs = documents | DECONTAMINATE_STEP >> beam.ParDo(
        DecontaminateDoFn(settings.level, settings.segment_by), index=beam.pvalue.AsSingleton(index)
    ).with_outputs(REMOVED, DEAD_LETTER, MATCHES, TOUCHES, main=KEPT)
    ledger.add(DECONTAMINATE_STEP, removed=outputs[REMOVED], dead_letters=outputs[DEAD_LETTER])
    outputs[KEPT] | "Write corpus" >> WriteDocuments(output_dir, config.num_shards)
    (
        outputs[MATCHES]
        | "Match lines" >> beam.Map(lambda match: json.dumps(match, ensure_ascii=False))
        | "Write matches" >> beam.io.WriteToText(f"{output_dir}/contamination/matches/part", file_name_suffix=".jsonl")
    )
    (
        outputs[TOUCHES]
        | "Report" >> ContaminationReport()
        | "Write report lines"
        >> beam.io.WriteToText(
            f"{output_dir}/contamination/by_benchmark", file_name_suffix=".jsonl", num_shards=1, shard_name_template=""
        )
    )
    ledger.write(pipeline)


def _delete(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def run_decontaminate(config: DecontaminateConfig) -> dict:
    """Build the index, run the pipeline, write the report and summary.json; returns the summary."""
    started = time.time()
    input_pattern = config.input_dir if config.input_dir.endswith(".parquet") else documents_pattern(config.input_dir)
    if not FileSystems.match([input_pattern])[0].metadata_list:
        raise ConfigError(f"no documents match {input_pattern} (run the recall loop first, or set input_dir)")
    settings = config.decontamination
    items, sources = load_benchmarks(config)
    index = ContaminationIndex.build(items, settings.ngram, settings.min_item_ngram, settings.short_item_match)
    log.info(
        "[decontaminate] %d benchmark items from %d benchmark(s) -> %d indexed n-grams; %s -> %s (runner: %s)",
        len(items),
        sum(not s["missing"] for s in sources.values()),
        index.ngram_count,
        input_pattern,
        config.output_dir,
        describe_runner(config.beam),
    )
    output_dir = config.output_dir.rstrip("/")
    clear_stage_dir(output_dir)
    _delete(f"{output_dir}/contamination")
    _delete(f"{output_dir}/contamination_report.json")
    index_path = f"{output_dir}/contamination/benchmark_index.pkl"
    with FileSystems.create(index_path) as handle:
        handle.write(index.to_bytes())

    pipeline = beam.Pipeline(options=pipeline_options(config.beam, job_name="decontaminate"))
    build_decontaminate_pipeline(pipeline, config, index_path)
    result = pipeline.run()
    result.wait_until_finish()

    matched: dict[str, dict] = {}
    with FileSystems.open(f"{output_dir}/contamination/by_benchmark.jsonl") as handle:
        for line in handle.read().decode("utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                matched[entry.pop("benchmark")] = entry
    report = {}
    for name, source in sources.items():
        counts = index.item_counts.get(name, {"items": 0, "long": 0, "short": 0, "too_short": 0})
        report[name] = {
            **source,
            "items_read": counts["items"],
            f"items_indexed_by_{settings.ngram}grams": counts["long"],
            "items_matched_whole": counts["short"],
            "items_too_short": counts["too_short"],
            **matched.get(
                name,
                {
                    "segments_matched": 0,
                    "documents_touched": 0,
                    "documents_dropped": 0,
                    "items_matched": 0,
                    "top_items": [],
                },
            ),
        }
    write_json(f"{output_dir}/contamination_report.json", report)

    tallies = tally_counters(result)
    step = tallies.get(STEPS[0])
    summary = build_summary(
        "decontaminate",
        tallies,
        STEPS,
        started,
        input_rows=count_rows(input_pattern),
        extra={
            "input": input_pattern,
            "decontamination": {
                "ngram": settings.ngram,
                "min_item_ngram": settings.min_item_ngram,
                "short_item_match": settings.short_item_match,
                "level": settings.level,
                "segment_by": settings.segment_by,
                "include_answers": settings.include_answers,
                "indexed_ngrams": index.ngram_count,
            },
            "documents_modified": step.other.get("documents_modified", 0) if step else 0,
            "segments_removed": step.other.get("segments_removed", 0) if step else 0,
            "contamination": {
                name: {k: v for k, v in entry.items() if k not in ("files", "top_items")}
                for name, entry in report.items()
            },
            "outputs": {
                "documents": documents_pattern(output_dir),
                "removed": f"{output_dir}/removed/",
                "dead_letter": f"{output_dir}/dead_letter/",
                "matches": f"{output_dir}/contamination/matches/",
                "report": f"{output_dir}/contamination_report.json",
            },
        },
    )
    write_json(f"{output_dir}/{SUMMARY_FILE}", summary)
    log.info("%s", format_summary(summary))
    for name, entry in report.items():
        log.info(
            "  %-12s items=%-6d segments matched=%-6d documents touched=%-6d dropped=%d%s",
            name,
            entry["items_read"],
            entry["segments_matched"],
            entry["documents_touched"],
            entry["documents_dropped"],
            "  (no files)" if entry["missing"] else "",
        )
    log.info(
        "[decontaminate] %d document(s) lost %d segment(s); summary: %s/%s (%.1f s)",
        summary["documents_modified"],
        summary["segments_removed"],
        output_dir,
        SUMMARY_FILE,
        summary["elapsed_seconds"],
    )
    if not summary["balanced"]:
        raise RuntimeError("decontaminate: counts do not add up (see summary.json); this is a bug, please report it")
    return summary
