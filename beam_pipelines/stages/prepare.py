"""The body of `python -m beam_pipelines.prepare` (see that module for what it does and how to run
it): builds and runs the Beam graph, writes the summary."""

from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines.accounting import Ledger, build_summary, format_summary, tally_counters
from beam_pipelines.config import PrepareConfig
from beam_pipelines.document import removed_row
from beam_pipelines.io.parquet import SUMMARY_FILE, WriteDocuments, clear_stage_dir, documents_pattern, write_json
from beam_pipelines.io.warc import READ_STEP, ReadWarcPages, match_inputs
from beam_pipelines.options import pipeline_options
from beam_pipelines.sample import ensure_sample_warc
from beam_pipelines.transforms.exact_dedup import EXACT_DEDUP_STEP, ExactDedup
from beam_pipelines.transforms.extract import ExtractDoFn, page_document
from beam_pipelines.transforms.langid import LanguageDoFn
from beam_pipelines.transforms.quality import QualityDoFn
from beam_pipelines.transforms.url_dedup import URL_DEDUP_STEP, UrlDedup

STEPS = ("01_read", "02_extract", "03_language", "04_quality", "05_url_dedup", "06_exact_dedup")
log = logging.getLogger("prepare")


def build_prepare_pipeline(pipeline, config: PrepareConfig, input_files: list[str]) -> None:
    """Add the prepare graph to `pipeline` (reading `input_files`, writing under output_dir)."""
    ledger = Ledger(config.output_dir)
    read = pipeline | "Read WARC" >> ReadWarcPages(
        input_files, config.read.max_record_bytes, config.read.max_replacement_fraction
    )
    skipped_rows = read.skipped | "Skipped responses" >> beam.Map(
        lambda page: removed_row(
            page_document(page), READ_STEP, page.reason, f"status={page.status} content_type={page.content_type}"
        )
    )
    ledger.add(READ_STEP, removed=skipped_rows, dead_letters=read.dead_letter)
    documents = ledger.apply(read.pages, ExtractDoFn(config.extract.main_content, config.extract.min_characters))
    documents = ledger.apply(
        documents, LanguageDoFn(config.language.languages, config.language.min_score, config.language.max_characters)
    )
    documents = ledger.apply(documents, QualityDoFn(config.quality))
    # Dedup steps that are switched off still count their documents, so the summary chains.
    if config.dedup.url:
        url_dedup = documents | "URL dedup" >> UrlDedup()
        ledger.add(URL_DEDUP_STEP, removed=url_dedup.removed)
        documents = url_dedup.kept
    else:
        documents = documents | "URL dedup off" >> beam.Map(_pass_through, URL_DEDUP_STEP)
    if config.dedup.exact:
        exact_dedup = documents | "Exact dedup" >> ExactDedup()
        ledger.add(EXACT_DEDUP_STEP, removed=exact_dedup.removed)
        documents = exact_dedup.kept
    else:
        documents = documents | "Exact dedup off" >> beam.Map(_pass_through, EXACT_DEDUP_STEP)
    documents | "Write pool" >> WriteDocuments(config.output_dir, config.num_shards)
    ledger.write(pipeline)


def _pass_through(document, step):
    Metrics.counter(step, "in").inc()
    Metrics.counter(step, "kept").inc()
    return document


def resolve_inputs(config: PrepareConfig) -> list[str]:
    """The WARC files to read: the configured patterns, or the embedded sample (built once)."""
    if config.corpus.warc_inputs:
        return match_inputs(config.corpus.warc_inputs)

    sample = ensure_sample_warc(
        f"{config.corpus.work_dir.rstrip('/')}/sample",
        max_math_pages=config.corpus.sample_max_math_pages,
        max_other_pages=config.corpus.sample_max_other_pages,
    )
    return [sample]


def run_prepare(config: PrepareConfig) -> dict:
    """Run prepare and write summary.json; returns the summary."""
    started = time.time()
    input_files = resolve_inputs(config)
    log.info("[prepare] %d WARC file(s) -> %s (runner: %s)", len(input_files), config.output_dir, config.beam.runner)
    clear_stage_dir(config.output_dir)
    pipeline = beam.Pipeline(options=pipeline_options(config.beam, job_name="prepare"))
    build_prepare_pipeline(pipeline, config, input_files)
    result = pipeline.run()
    result.wait_until_finish()
    tallies = tally_counters(result)
    read_tally = tallies.get("01_read")
    summary = build_summary(
        "prepare",
        tallies,
        STEPS,
        started,
        extra={
            "inputs": input_files,
            "quality_preset": config.quality.name if config.quality.enabled else "off",
            "skipped_non_response_records": dict(read_tally.other) if read_tally else {},
            "outputs": {
                "documents": documents_pattern(config.output_dir),
                "removed": f"{config.output_dir}/removed/",
                "dead_letter": f"{config.output_dir}/dead_letter/",
            },
        },
    )
    write_json(f"{config.output_dir.rstrip('/')}/{SUMMARY_FILE}", summary)
    log.info("%s", format_summary(summary))
    log.info("[prepare] pool: %s", documents_pattern(config.output_dir))
    log.info(
        "[prepare] summary: %s/%s (%.1f s)", config.output_dir.rstrip("/"), SUMMARY_FILE, summary["elapsed_seconds"]
    )
    if not summary["balanced"]:
        raise RuntimeError("prepare: counts do not add up (see summary.json); this is a bug, please report it")
    return summary
