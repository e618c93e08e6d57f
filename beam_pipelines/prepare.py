"""prepare: WARC files -> the document pool (Parquet), every record accounted for.

Steps (each a pure core in `transforms/` with a thin Beam wrapper):
  01_read          WARC response records -> decoded HTML pages (io/warc.py)
  02_extract       HTML -> text with math kept as delimited TeX (transforms/extract.py)
  03_language      language label and score (transforms/langid.py)
  04_quality       Gopher/C4-style signals and filters, math-safe (transforms/quality.py)
  05_url_dedup     one page per normalised URL (transforms/url_dedup.py)
  06_exact_dedup   one page per normalised-text hash (transforms/exact_dedup.py)
Outputs under `output_dir` (default `<corpus.work_dir>/pool`): documents/, removed/<step>/,
dead_letter/<step>/ and summary.json, whose counts add up: in = kept + dropped + dead-lettered.

Run locally (embedded sample WARC built from documentation on this machine, all cores):
    python -m beam_pipelines.prepare
    python -m beam_pipelines.prepare corpus.warc_inputs='[/data/cc/*.warc.gz]' corpus.work_dir=/data/run1
On a cluster (see launch/beam/): the same command with a runner preset, e.g.
    python -m beam_pipelines.prepare beam=dataflow beam.project=P beam.region=R \\
        beam.temp_location=gs://B/tmp corpus=commoncrawl corpus.work_dir=gs://B/dsm
Cost: linear in input bytes; per worker memory is one WARC record plus one document at a time,
except the two dedup GroupByKeys, whose groups are streamed.
"""

from __future__ import annotations

import logging
import time

from beam_pipelines.cli import hydra_entry_point
from beam_pipelines.config import PrepareConfig, register_configs

STEPS = ("01_read", "02_extract", "03_language", "04_quality", "05_url_dedup", "06_exact_dedup")
log = logging.getLogger("prepare")


def build_prepare_pipeline(pipeline, config: PrepareConfig, input_files: list[str]) -> None:
    """Add the prepare graph to `pipeline` (reading `input_files`, writing under output_dir)."""
    import apache_beam as beam

    from beam_pipelines.accounting import Ledger
    from beam_pipelines.document import removed_row
    from beam_pipelines.io.parquet import WriteDocuments
    from beam_pipelines.io.warc import READ_STEP, ReadWarcPages
    from beam_pipelines.transforms.exact_dedup import EXACT_DEDUP_STEP, ExactDedup
    from beam_pipelines.transforms.extract import ExtractDoFn, page_document
    from beam_pipelines.transforms.langid import LanguageDoFn
    from beam_pipelines.transforms.quality import QualityDoFn
    from beam_pipelines.transforms.url_dedup import URL_DEDUP_STEP, UrlDedup

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
    from apache_beam.metrics import Metrics

    Metrics.counter(step, "in").inc()
    Metrics.counter(step, "kept").inc()
    return document


def resolve_inputs(config: PrepareConfig) -> list[str]:
    """The WARC files to read: the configured patterns, or the embedded sample (built once)."""
    from beam_pipelines.io.warc import match_inputs

    if config.corpus.warc_inputs:
        return match_inputs(config.corpus.warc_inputs)
    from beam_pipelines.sample import ensure_sample_warc

    sample = ensure_sample_warc(
        f"{config.corpus.work_dir.rstrip('/')}/sample",
        max_math_pages=config.corpus.sample_max_math_pages,
        max_other_pages=config.corpus.sample_max_other_pages,
    )
    return [sample]


def run_prepare(config: PrepareConfig) -> dict:
    """Run prepare and write summary.json; returns the summary."""
    import apache_beam as beam

    from beam_pipelines.accounting import build_summary, format_summary, tally_counters
    from beam_pipelines.io.parquet import SUMMARY_FILE, clear_stage_dir, documents_pattern, write_json
    from beam_pipelines.options import describe_runner, pipeline_options

    started = time.time()
    input_files = resolve_inputs(config)
    print(
        f"[prepare] {len(input_files)} WARC file(s) -> {config.output_dir} (runner: {describe_runner(config.beam)})",
        flush=True,
    )
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
            "skipped_non_response_records": dict(read_tally.other) if read_tally else {},
            "outputs": {
                "documents": documents_pattern(config.output_dir),
                "removed": f"{config.output_dir}/removed/",
                "dead_letter": f"{config.output_dir}/dead_letter/",
            },
        },
    )
    write_json(f"{config.output_dir.rstrip('/')}/{SUMMARY_FILE}", summary)
    print(format_summary(summary), flush=True)
    print(f"[prepare] pool: {documents_pattern(config.output_dir)}", flush=True)
    print(
        f"[prepare] summary: {config.output_dir.rstrip('/')}/{SUMMARY_FILE} ({summary['elapsed_seconds']:.1f} s)",
        flush=True,
    )
    if not summary["balanced"]:
        raise RuntimeError("prepare: counts do not add up (see summary.json); this is a bug, please report it")
    return summary


@hydra_entry_point("prepare", register_configs)
def main(config: PrepareConfig) -> None:
    run_prepare(config)


if __name__ == "__main__":
    main()
