"""Recall with and without a reviewer on real multi-site crawls: precision and recall side by side.

Each crawl (tests/recall_crawl.py) is a set of Debian documentation packages, one site each, run
through the real `prepare` pipeline; labels are by site (every page of a math package's site is
math). Both sides run the same loop on the same pool with the same settings (small-pool fastText
settings, one thread, beam=direct_single, token budget = the math sites' tokens):
- reviewer: the paper's loop (approval.policy=annotations_only) with an oracle reviewer who, after
  each round, approves every candidate math site and rejects every other candidate site;
- unattended: +experiment=recall_unattended, no annotations.
Prints ONE JSON line: per crawl, the packages, the pool, and for each side the final precision,
recall, selected pages, stop reason and per-round figures (with the prefixes approved before each
round). Crawls: `tune` (the policy's thresholds were looked at on it), `confirm` (the CI test's)
and `issue` (the packages the issue names that ship HTML); they share no math site with `tune`.

    python benchmarks/recall_unattended.py                      # all three crawls (~12 min)
    python benchmarks/recall_unattended.py --crawls confirm --work-dir /tmp/recall_unattended
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

from tests.recall_crawl import CRAWLS, SEED_PACKAGE, build_crawl, run_unattended, run_with_reviewer  # noqa: E402

log = logging.getLogger("recall_unattended")


def compare(name: str, work_dir: Path) -> dict:
    crawl = build_crawl(name)
    row: dict = {
        "crawl": name,
        "math_packages": list(crawl.spec.math_packages),
        "other_packages": list(crawl.spec.other_packages),
        "seed_package": SEED_PACKAGE,
        "pool_pages": len(crawl.all_ids),
        "math_pages": len(crawl.math_ids),
        "pages_by_site": crawl.pages_by_domain,
    }
    for side, run in (("reviewer", run_with_reviewer), ("unattended", run_unattended)):
        output_dir = work_dir / f"{name}-{side}"
        shutil.rmtree(output_dir, ignore_errors=True)
        started = time.process_time()
        row[side] = run(crawl, str(output_dir))
        row[side]["cpu_seconds"] = round(time.process_time() - started, 1)
        final = row[side]["final"] or {}
        log.info(f"{name} {side}: precision {final.get('precision')} recall {final.get('recall')}")
    reviewer, unattended = row["reviewer"]["final"], row["unattended"]["final"]
    if reviewer and unattended:
        row["recall_gap"] = round(reviewer["recall"] - unattended["recall"], 4)
        row["precision_gap"] = round(reviewer["precision"] - unattended["precision"], 4)
        row["within_target"] = row["recall_gap"] <= 0.05 and row["precision_gap"] <= 0.02
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--crawls", default="tune,confirm,issue", help=f"comma-separated, of {sorted(CRAWLS)}")
    parser.add_argument("--work-dir", default="", help="where the loops write (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    log.setLevel(logging.INFO)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="recall_unattended-"))
    rows = [compare(name, work_dir) for name in args.crawls.split(",") if name]
    print(json.dumps({"benchmark": "recall_unattended", "crawls": rows}))


if __name__ == "__main__":
    main()
