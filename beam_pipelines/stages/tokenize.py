"""The body of `python -m beam_pipelines.tokenize` (see that module for what it does and how to run
it): builds and runs the Beam graph, writes the summary."""

from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.accounting import DEAD_LETTER, KEPT, REMOVED, Ledger, build_summary, format_summary, tally_counters
from beam_pipelines.config import TokenizeConfig
from beam_pipelines.io.megatron import WriteIndexedDataset, bin_path, delete_dataset, idx_path, token_dtype
from beam_pipelines.io.parquet import SUMMARY_FILE, read_json, write_json
from beam_pipelines.io.text_sources import (
    TOKENIZE_STEP,
    ReadTextSource,
    check_source,
    count_source_records,
    source_pattern,
)
from beam_pipelines.options import describe_runner, pipeline_options
from beam_pipelines.transforms.tokenize import (
    TokenizeDoFn,
    load_tokenizer,
    resolve_eod,
    tokenizer_file,
    tokenizer_identity,
)

MERGE_FILE = "merge.json"
log = logging.getLogger("tokenize")


def dataset_prefix(config: TokenizeConfig) -> str:
    """The megatron prefix of the source's dataset: `<output_dir>/<source.name>`."""
    return f"{config.output_dir.rstrip('/')}/{config.source.name}"


def clear_source_outputs(prefix: str) -> None:
    """Remove a previous run of this source (summary first, so a half-cleared source never
    looks complete), including megatron's index cache under `<prefix>/cache/`."""
    summary = f"{prefix}/{SUMMARY_FILE}"
    if FileSystems.exists(summary):
        FileSystems.delete([summary])
    delete_dataset(prefix)
    if FileSystems.exists(prefix):
        FileSystems.delete([prefix])


def build_tokenize_pipeline(pipeline, config: TokenizeConfig, eod_id: int, vocab_size: int, dtype_name: str) -> None:
    """Add the tokenize graph for `config.source` to `pipeline`."""
    prefix = dataset_prefix(config)
    ledger = Ledger(prefix)
    read = pipeline | f"Read {config.source.name}" >> ReadTextSource(config.source)
    ledger.add(TOKENIZE_STEP, dead_letters=read[DEAD_LETTER])
    tokenized = read.documents | "Tokenize" >> beam.ParDo(
        TokenizeDoFn(
            config.tokenizer.path,
            eod_id,
            vocab_size,
            dtype_name,
            config.batch_documents,
            config.batch_characters,
            config.max_characters,
            config.tokenizer.parallelism,
        )
    ).with_outputs(REMOVED, DEAD_LETTER, main=KEPT)
    ledger.add(TOKENIZE_STEP, removed=tokenized[REMOVED], dead_letters=tokenized[DEAD_LETTER])
    merged = tokenized[KEPT] | "Write dataset" >> WriteIndexedDataset(
        prefix, f"{prefix}/shards", dtype_name, config.max_documents_per_shard, config.keep_shards
    )
    merge_file = f"{prefix}/{MERGE_FILE}"
    merged | "Record merge" >> beam.Map(lambda result: write_json(merge_file, result))
    ledger.write(pipeline)


def run_tokenize(config: TokenizeConfig) -> dict:
    """Tokenize `config.source`, write `<prefix>/summary.json`; returns the summary.

    Raises ConfigError (before any pipeline work) for a bad tokenizer, EOD or input, and
    RuntimeError when the counts do not add up or no document was kept.
    """
    started = time.time()
    source = config.source
    tokenizer = load_tokenizer(config.tokenizer.path)
    eod_token, eod_id = resolve_eod(tokenizer, config.tokenizer.path, config.tokenizer.eod_token)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab_size)
    check_source(source)
    prefix = dataset_prefix(config)
    log.info(
        "[tokenize] source %s (%s: %s) -> %s.bin/.idx (%s, EOD %r = %d, runner: %s)",
        source.name,
        source.format,
        source_pattern(source),
        prefix,
        dtype.name,
        eod_token,
        eod_id,
        describe_runner(config.beam),
    )
    clear_source_outputs(prefix)
    pipeline = beam.Pipeline(options=pipeline_options(config.beam, job_name=f"tokenize-{source.name}"))
    build_tokenize_pipeline(pipeline, config, eod_id, vocab_size, dtype.name)
    result = pipeline.run()
    result.wait_until_finish()

    tallies = tally_counters(result)
    input_records = count_source_records(source, config.count_jsonl_input_up_to_bytes)
    if input_records is None:
        log.info("[tokenize] the input's record count is not checked (count_jsonl_input_up_to_bytes)")
    step = tallies.get(TOKENIZE_STEP)
    counted_tokens = step.other.get("tokens", 0) if step else 0
    merge_file = f"{prefix}/{MERGE_FILE}"
    merged = read_json(merge_file) if FileSystems.exists(merge_file) else None
    dataset = None
    if merged is not None:
        dataset = {
            "prefix": prefix,
            "bin": bin_path(prefix),
            "idx": idx_path(prefix),
            "dtype": merged["dtype"],
            "documents": merged["documents"],
            "tokens": merged["tokens"],
            "eod_tokens": merged["documents"],
            "text_tokens": merged["tokens"] - merged["documents"],
            "shard_count": len(merged["shards"]),
        }
    summary = build_summary(
        "tokenize",
        tallies,
        [TOKENIZE_STEP],
        started,
        input_rows=input_records,
        extra={
            "source": {
                "name": source.name,
                "format": source.format,
                "input": source_pattern(source),
                "text_field": source.text_field,
                "id_field": source.id_field,
            },
            "tokenizer": {
                "file": tokenizer_file(config.tokenizer.path),
                # Training compares this with its own tokenizer and refuses data made by another.
                "sha256": tokenizer_identity(config.tokenizer.path),
                "vocab_size": vocab_size,
                "eod_token": eod_token,
                "eod_id": eod_id,
            },
            "dataset": dataset,
            "shards": merged["shards"] if merged else [],
            "outputs": {"removed": f"{prefix}/removed/", "dead_letter": f"{prefix}/dead_letter/"},
        },
    )
    kept = summary["totals"]["kept"]
    consistent = (dataset is None and kept == 0 and counted_tokens == 0) or (
        dataset is not None and dataset["documents"] == kept and dataset["tokens"] == counted_tokens
    )
    summary["dataset_matches_counters"] = consistent
    write_json(f"{prefix}/{SUMMARY_FILE}", summary)
    log.info("%s", format_summary(summary))
    if dataset:
        log.info(
            "[tokenize] %s: %d documents, %d tokens (%d text + %d EOD) in %d shard(s)",
            prefix,
            dataset["documents"],
            dataset["tokens"],
            dataset["text_tokens"],
            dataset["eod_tokens"],
            dataset["shard_count"],
        )
    log.info("[tokenize] summary: %s/%s (%.1f s)", prefix, SUMMARY_FILE, summary["elapsed_seconds"])
    if not summary["balanced"] or not consistent:
        raise RuntimeError("tokenize: counts do not add up (see summary.json); this is a bug, please report it")
    if dataset is None:
        raise RuntimeError(
            f"tokenize: source {source.name} kept no document; no dataset was written (see {prefix}/{SUMMARY_FILE})"
        )
    return summary
