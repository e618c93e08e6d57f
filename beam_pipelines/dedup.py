"""dedup: MinHash LSH near-duplicate removal of a document stage (step 07_minhash).

Reads `input_dir` (default `<corpus.work_dir>/pool`) and writes `output_dir` (default
`<corpus.work_dir>/pool_near_dedup`): documents/, removed/07_minhash/ (each removed document
with its cluster id, survivor id and cluster size as JSON in `removed_detail`),
dead_letter/07_minhash/ and summary.json, whose counts add up (in = kept + dropped +
dead-lettered), with the LSH statistics and the connected-components convergence.

Three kinds of Beam pipeline, driven from here (transforms/minhash.py has the cost model):
  1. per input file: signatures and band records written to band-key partitions; per
     partition: shared buckets -> candidate edges (-> exact-Jaccard verification per edge
     partition, the endpoints' shingle hashes exchanged through work files) -> work files
  2. connected components: large-star / small-star rounds, `minhash.rounds_per_pipeline` per
     pipeline, until a round reports a star forest (or `minhash.max_component_rounds` fails)
  3. one survivor per component (best `minhash.survivor_order`, then smallest id); each input
     file is filtered where it lies (one output file per input file; `num_shards` must stay 0)
     and its losers, duplicate-id copies and failures written to removed/ and dead_letter/.

Run locally (all cores, after `python -m beam_pipelines.prepare`):
    python -m beam_pipelines.dedup
    python -m beam_pipelines.dedup input_dir=/data/run1/pool output_dir=/data/run1/pool_nd \\
        minhash.threshold=0.7 minhash.bands=25 minhash.rows=5 minhash.num_perm=125
On a cluster: the same command with a runner preset (the three kinds of pipeline are
submitted one after another as separate jobs; work files go to `work_dir`):
    python -m beam_pipelines.dedup beam=dataflow beam.project=P beam.region=R \\
        beam.temp_location=gs://B/tmp corpus=commoncrawl corpus.work_dir=gs://B/dsm
Cost: linear in the documents for signatures and the final filter; what goes through the
runner's shuffles grows with the number of near-duplicate candidates, not with the corpus.
No worker holds more than one input file, one band partition (`minhash.band_partition_records`),
one verification partition (as many as band partitions: its edges and their endpoints' hashes),
or one node's streamed neighbour list.
"""

from __future__ import annotations

from beam_pipelines.config import DedupConfig, register_configs
from stack_common.cli import hydra_entry_point


@hydra_entry_point("dedup", register_configs)
def main(config: DedupConfig) -> None:
    from beam_pipelines.stages import dedup  # noqa: PLC0415  Beam loads after the config checks

    dedup.run_dedup(config)


if __name__ == "__main__":
    main()
