"""decontaminate: remove benchmark contamination from the final selection (step 08_decontaminate).

Reads `input_dir` (default `<corpus.work_dir>/recall/final`) and writes `output_dir` (default
`<corpus.work_dir>/corpus`): documents/ (segments that match a benchmark removed),
removed/08_decontaminate/ (documents dropped whole, with the benchmark item in
`removed_detail`), dead_letter/08_decontaminate/, contamination/matches/*.jsonl (one record per
matching segment: document, benchmark, item id, question or answer, matched n-gram, segment
text), contamination_report.json (per benchmark: items read and indexed, segments matched,
documents touched and dropped, items matched, the most frequent items) and summary.json
(in = kept + dropped + dead-lettered; `documents_modified` and `segments_removed` count the
kept documents that lost text).

Benchmarks are local files in their public formats (config `benchmarks`, default
`<benchmarks_dir>/{gsm8k,math,cmath,agieval}`: a JSONL/JSON file, a glob or a directory). The
index of their n-grams is built here, on the driver, before any pipeline starts (an unreadable
file fails with one line), written to `contamination/benchmark_index.pkl` and broadcast to the
workers as a side input.

Run locally (after the recall loop, with GSM8K's test.jsonl in data/benchmarks/gsm8k/ etc.):
    python -m beam_pipelines.decontaminate
    python -m beam_pipelines.decontaminate input_dir=/data/run1/pool_near_dedup \\
        'benchmarks=[{name: gsm8k, path: /data/gsm8k/test.jsonl, format: gsm8k}]' \\
        decontamination.level=document
On a cluster: the same command with a runner preset; benchmark files may be on gs://:
    python -m beam_pipelines.decontaminate beam=dataflow beam.project=P beam.region=R \\
        beam.temp_location=gs://B/tmp corpus=commoncrawl benchmarks_dir=gs://B/benchmarks
Cost: one pass over the documents, O(words x log(benchmark n-grams)) each; per-worker memory
is the index (grows with the benchmarks, ~12 bytes per n-gram), not with the corpus.
"""

from __future__ import annotations

from beam_pipelines.config import DecontaminateConfig, register_configs
from stack_common.cli import hydra_entry_point


@hydra_entry_point("decontaminate", register_configs)
def main(config: DecontaminateConfig) -> None:
    from beam_pipelines.stages import decontaminate  # noqa: PLC0415  Beam loads after the config checks

    decontaminate.run_decontaminate(config)


if __name__ == "__main__":
    main()
