"""tokenize: one text source -> one Megatron indexed dataset (`.bin` + `.idx`), every record counted.

Steps: read the source (our Document Parquet, or JSONL / Parquet with a text field), encode each
document with a Hugging Face tokenizer and append the end-of-document token (step `09_tokenize`,
transforms/tokenize.py), write per-worker shards, merge them into one dataset (io/megatron.py).

On-disk layout for source `<name>` (default output_dir `<corpus.work_dir>/tokenized`):
    <output_dir>/<name>.bin, <output_dir>/<name>.idx   the dataset; its megatron prefix is
                                                        <output_dir>/<name>
    <output_dir>/<name>/summary.json                   written last: token counts per shard and
                                                        in total, tokenizer (file, SHA-256 of its
                                                        tokenizer.json, EOD id), dtype, balance
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

from beam_pipelines.config import TokenizeConfig, register_configs
from stack_common.cli import hydra_entry_point


@hydra_entry_point("tokenize", register_configs)
def main(config: TokenizeConfig) -> None:
    from beam_pipelines.stages import tokenize  # noqa: PLC0415  Beam loads after the config checks

    tokenize.run_tokenize(config)


if __name__ == "__main__":
    main()
