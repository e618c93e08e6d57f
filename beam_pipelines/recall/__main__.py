"""recall: the iterative math recall loop of DeepSeekMath (section 2.1) over the document pool.

Each round trains a fastText classifier (seed positives + discovered positives vs. pool
negatives), scores the whole pool in Beam, keeps the top pages up to the round's token budget,
and lists candidate math domains with their URL-path prefixes for review. Approved prefixes
(`<approval.annotations_dir>/round_<k>.yaml`, or the unattended policy) turn the pages the
classifier missed into positives of the next round. The loop stops when >= 98% of a round's
selection was already selected in the previous round, or after max_rounds (4). The last round's
selection goes to `<output_dir>/final/` (documents/ + summary.json), which decontamination reads.
See beam_pipelines/recall/loop.py for the round in detail and annotations/README.md for review.

Run locally (after prepare, and near-dedup or input_dir=${corpus.work_dir}/pool):
    python -m beam_pipelines.recall training.seed_positives='[/data/openwebmath/*.parquet]'
    python -m beam_pipelines.recall round=1 ...          # one round; review; then round=2 ...
    python -m beam_pipelines.recall +experiment=recall_unattended ...  # auto-approval policy
Paper scale (500k + 500k training samples, top 40B tokens in round 1, 4 rounds) on a cluster:
    python -m beam_pipelines.recall +experiment=recall_paper beam=dataflow beam.project=P \\
        beam.region=R beam.temp_location=gs://B/tmp corpus=commoncrawl \\
        training.seed_positives='[gs://B/openwebmath/*.parquet]'
The Beam passes run on the configured runner; fastText trains on the machine running this
command (size it for the training sample: ~1M documents). Rerunning resumes after the last
complete round. Cost per round: two passes over the pool, linear in its text.
"""

from __future__ import annotations

from beam_pipelines.config import register_configs
from beam_pipelines.recall.config import RecallConfig
from stack_common.cli import hydra_entry_point


@hydra_entry_point("recall", register_configs)
def main(config: RecallConfig) -> None:
    from beam_pipelines.recall.loop import run_recall  # noqa: PLC0415  Beam loads after the config checks

    run_recall(config)


if __name__ == "__main__":
    main()
