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

from beam_pipelines.config import PrepareConfig, register_configs
from stack_common.cli import hydra_entry_point


@hydra_entry_point("prepare", register_configs)
def main(config: PrepareConfig) -> None:
    from beam_pipelines.stages import prepare  # noqa: PLC0415  Beam loads after the config checks

    prepare.run_prepare(config)


if __name__ == "__main__":
    main()
