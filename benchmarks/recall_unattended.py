"""Recall with and without a reviewer on real multi-site crawls: precision and recall side by side.

Each crawl (tests/recall_crawl.py) is a set of Debian documentation packages, one site each, run
through the real `prepare` pipeline; labels are by site (every page of a math package's site is
math). Both sides run the same loop on the same pool with the same settings (small-pool fastText
settings, one thread, beam=direct_single, token budget = the math sites' tokens, the same seeds
and the same `training.sample_seed`):
- reviewer: the paper's loop (approval.policy=annotations_only) with an oracle reviewer who, after
  each round, approves every candidate math site and rejects every other candidate site;
- unattended: +experiment=recall_unattended (approval.policy=annotations_and_auto_prefix_evidence),
  no annotations.
Prints ONE JSON line: per crawl and sample seed, the packages, the pool, and for each side the
final precision, recall, selected pages, stop reason and per-round figures (with the prefixes
approved before each round; for the unattended side also the prefixes it rejected and its
threshold), the gaps and whether the goal holds (recall at most 0.05 and precision at most 0.02
below the reviewer's). Crawls: `tune` (the evidence policy was developed on it), `confirm` (the
CI test's), `issue` (the packages the issue names that ship HTML) and `fresh` (packages looked at
only after the policy was fixed); the last three share no math site with `tune`.
`--sample-seeds 0,1,2` repeats each comparison on other hash samples (training/hold-out split and
negatives), which on pools this small move both sides' figures by several points.

    python benchmarks/recall_unattended.py                      # four crawls, sample seed 0 (~30 min)
    python benchmarks/recall_unattended.py --crawls confirm --sample-seeds 0,1,2 --work-dir /tmp/ru
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beam_pipelines.io.parquet import read_json  # noqa: E402
from tests.recall_crawl import CRAWLS, SEED_PACKAGE, build_crawl, run_unattended, run_with_reviewer  # noqa: E402

log = logging.getLogger("recall_unattended")
ROLES = {"tune": "tuned on", "confirm": "confirmation", "issue": "confirmation", "fresh": "confirmation"}


def policy_decisions(output_dir: Path, rounds: list[dict]) -> list[dict]:
    """What the unattended policy decided after each round (from the last round's approvals.json)."""
    if not rounds:
        return []
    record = read_json(str(output_dir / f"round_{rounds[-1]['round']}" / "approvals.json"))
    return [
        {
            "after_round": decision["after_round"],
            "approved": decision["automatic"],
            "rejected": decision.get("automatic_rejected", []),
            "evidence": decision.get("evidence"),
        }
        for decision in record["rounds"]
    ]


def compare(name: str, sample_seed: int, work_dir: Path) -> dict:
    crawl = build_crawl(name)
    row: dict = {
        "crawl": name,
        "role": ROLES.get(name, "confirmation"),
        "sample_seed": sample_seed,
        "math_packages": list(crawl.spec.math_packages),
        "other_packages": list(crawl.spec.other_packages),
        "seed_package": SEED_PACKAGE,
        "pool_pages": len(crawl.all_ids),
        "math_pages": len(crawl.math_ids),
        "pages_by_site": crawl.pages_by_domain,
    }
    extra = (f"training.sample_seed={sample_seed}",)
    for side, run in (("reviewer", run_with_reviewer), ("unattended", run_unattended)):
        output_dir = work_dir / f"{name}-{sample_seed}-{side}"
        shutil.rmtree(output_dir, ignore_errors=True)
        started, wall_started = time.process_time(), time.time()
        row[side] = run(crawl, str(output_dir), extra)
        row[side]["cpu_seconds"] = round(time.process_time() - started, 1)
        row[side]["wall_seconds"] = round(time.time() - wall_started, 1)
        if side == "unattended":
            row[side]["decisions"] = policy_decisions(output_dir, row[side]["rounds"])
        final = row[side]["final"] or {}
        log.info(f"{name} seed {sample_seed} {side}: precision {final.get('precision')} recall {final.get('recall')}")
    reviewer, unattended = row["reviewer"]["final"], row["unattended"]["final"]
    if reviewer and unattended:
        row["recall_gap"] = round(reviewer["recall"] - unattended["recall"], 4)
        row["precision_gap"] = round(reviewer["precision"] - unattended["precision"], 4)
        row["within_target"] = row["recall_gap"] <= 0.05 and row["precision_gap"] <= 0.02
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--crawls", default="tune,confirm,issue,fresh", help=f"comma-separated, of {sorted(CRAWLS)}")
    parser.add_argument("--sample-seeds", default="0", help="comma-separated training.sample_seed values")
    parser.add_argument("--work-dir", default="", help="where the loops write (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    log.setLevel(logging.INFO)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="recall_unattended-"))
    seeds = [int(seed) for seed in args.sample_seeds.split(",") if seed]
    rows = [compare(name, seed, work_dir) for name in args.crawls.split(",") if name for seed in seeds]
    print(json.dumps({"benchmark": "recall_unattended", "crawls": rows}))


if __name__ == "__main__":
    main()
