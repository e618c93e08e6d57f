"""tokenize: one text source -> one Megatron indexed dataset (`.bin` + `.idx`), every record counted.

Steps: read the source (our Document Parquet, or JSONL / Parquet with a text field), encode each
document with a Hugging Face tokenizer and append the end-of-document token (step `09_tokenize`,
transforms/tokenize.py), write per-worker shards, merge them into one dataset (io/megatron.py).

On-disk layout for source `<name>` (default output_dir `<corpus.work_dir>/tokenized`):
    <output_dir>/<name>.bin, <output_dir>/<name>.idx   the dataset; its megatron prefix is
                                                        <output_dir>/<name>
    <output_dir>/<name>/summary.json                   written last: token counts per shard and
                                                        in total, tokenizer, EOD id, dtype, balance
    <output_dir>/<name>/merge.json                     what the merge wrote (shard list)
    <output_dir>/<name>/removed/09_tokenize/           dropped documents (empty_text, too_long, ...)
    <output_dir>/<name>/dead_letter/09_tokenize/       records that could not be read or encoded
    <output_dir>/<name>/shards/                        per-worker shards, removed after the merge
megatron-core's GPTDataset caches its indices in `<prefix>/cache/` by default, i.e. in the same
`<output_dir>/<name>/` directory: re-tokenizing a source deletes that directory, so a stale
index cache can never be paired with new data. Other sources in output_dir are left alone.

Run locally (the default source is the decontaminated corpus, `<corpus.work_dir>/corpus`):
    python -m beam_pipelines.tokenize
    python -m beam_pipelines.tokenize source=arxiv source.input='/data/proof-pile-2/arxiv/train/*.jsonl.zst'
    python -m beam_pipelines.tokenize source.name=my_text source.format=parquet \\
        source.input='/data/x/*.parquet' source.text_field=content tokenizer.path=/models/tok
On a cluster: the same with a runner preset; the tokenizer and the data must be readable by the
workers (gs:// paths work; the default tokenizer is resolved from the package on each worker):
    python -m beam_pipelines.tokenize beam=dataflow beam.project=P beam.region=R \\
        beam.temp_location=gs://B/tmp corpus.work_dir=gs://B/dsm
Cost: linear in characters (tokenization dominates, spread over all workers), then one sequential
merge pass per source on one worker (see io/megatron.py for its cost). Memory per worker: one
encoding batch plus 4 bytes per document of the open shard.
"""

from __future__ import annotations

import sys
import time

from beam_pipelines.cli import hydra_entry_point
from beam_pipelines.config import ConfigError, TokenizeConfig, register_configs

MERGE_FILE = "merge.json"


def dataset_prefix(config: TokenizeConfig) -> str:
    """The megatron prefix of the source's dataset: `<output_dir>/<source.name>`."""
    return f"{config.output_dir.rstrip('/')}/{config.source.name}"


def clear_source_outputs(prefix: str) -> None:
    """Remove a previous run of this source (summary first, so a half-cleared source never
    looks complete), including megatron's index cache under `<prefix>/cache/`."""
    from apache_beam.io.filesystems import FileSystems

    from beam_pipelines.io.megatron import delete_dataset
    from beam_pipelines.io.parquet import SUMMARY_FILE

    summary = f"{prefix}/{SUMMARY_FILE}"
    if FileSystems.exists(summary):
        FileSystems.delete([summary])
    delete_dataset(prefix)
    if FileSystems.exists(prefix):
        FileSystems.delete([prefix])


def build_tokenize_pipeline(pipeline, config: TokenizeConfig, eod_id: int, vocab_size: int, dtype_name: str) -> None:
    """Add the tokenize graph for `config.source` to `pipeline`."""
    import apache_beam as beam

    from beam_pipelines.accounting import DEAD_LETTER, KEPT, REMOVED, Ledger
    from beam_pipelines.io.megatron import WriteIndexedDataset
    from beam_pipelines.io.parquet import write_json
    from beam_pipelines.io.text_sources import TOKENIZE_STEP, ReadTextSource
    from beam_pipelines.transforms.tokenize import TokenizeDoFn

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
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from beam_pipelines.accounting import build_summary, format_summary, tally_counters
    from beam_pipelines.io.megatron import bin_path, idx_path, token_dtype
    from beam_pipelines.io.parquet import SUMMARY_FILE, read_json, write_json
    from beam_pipelines.io.text_sources import TOKENIZE_STEP, check_source, source_pattern
    from beam_pipelines.options import describe_runner, pipeline_options
    from beam_pipelines.transforms.tokenize import load_tokenizer, resolve_eod, tokenizer_file

    started = time.time()
    source = config.source
    tokenizer = load_tokenizer(config.tokenizer.path)
    eod_token, eod_id = resolve_eod(tokenizer, config.tokenizer.path, config.tokenizer.eod_token)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab_size)
    check_source(source)
    prefix = dataset_prefix(config)
    print(
        f"[tokenize] source {source.name} ({source.format}: {source_pattern(source)}) -> {prefix}.bin/.idx "
        f"({dtype.name}, EOD {eod_token!r} = {eod_id}, runner: {describe_runner(config.beam)})",
        flush=True,
    )
    clear_source_outputs(prefix)
    pipeline = beam.Pipeline(options=pipeline_options(config.beam, job_name=f"tokenize-{source.name}"))
    build_tokenize_pipeline(pipeline, config, eod_id, vocab_size, dtype.name)
    result = pipeline.run()
    result.wait_until_finish()

    tallies = tally_counters(result)
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
    print(format_summary(summary), flush=True)
    if dataset:
        print(
            f"[tokenize] {prefix}: {dataset['documents']} documents, {dataset['tokens']} tokens "
            f"({dataset['text_tokens']} text + {dataset['eod_tokens']} EOD) in {dataset['shard_count']} shard(s)",
            flush=True,
        )
    print(f"[tokenize] summary: {prefix}/{SUMMARY_FILE} ({summary['elapsed_seconds']:.1f} s)", flush=True)
    if not summary["balanced"] or not consistent:
        raise RuntimeError("tokenize: counts do not add up (see summary.json); this is a bug, please report it")
    if dataset is None:
        raise RuntimeError(
            f"tokenize: source {source.name} kept no document; no dataset was written (see {prefix}/{SUMMARY_FILE})"
        )
    return summary


@hydra_entry_point("tokenize", register_configs)
def main(config: TokenizeConfig) -> None:
    try:
        run_tokenize(config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
