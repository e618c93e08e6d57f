"""How many math pages each quality preset keeps on a real crawl, through the real prepare pipeline.

    python benchmarks/quality_presets.py [--presets gopher math_tuned paper] [--limit N]

The crawl: four Debian documentation packages served from their sites (python-scipy-doc and
python-mpmath-doc: math; python3.11-doc and git-doc: not) and the Chinese manual pages of
manpages-zh (rendered by `man`), one WARC (tests/support.py downloads and caches them). For each
preset, `python -m beam_pipelines.prepare quality=<preset>` runs on it (beam=direct), and the
pages that reached the quality step (04_quality) are counted by kind, with what the step kept:
- tex: pages whose extracted text carries TeX (math spans);
- math_site: pages of the two math sites; other_site: the two others; chinese: manpages-zh;
plus the drop reasons of the TeX and the Chinese pages. Prints one JSON line.
Cost: one prepare run per preset (about a minute each on 2 cores for the ~5,800 pages).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from beam_pipelines.config import register_configs  # noqa: E402
from beam_pipelines.io.warc import write_html_warc  # noqa: E402
from beam_pipelines.stages.prepare import run_prepare  # noqa: E402
from stack_common.cli import compose_config  # noqa: E402
from tests.support import chinese_man_pages, debian_doc_pages  # noqa: E402

MATH_SITES = {"docs.scipy.org", "mpmath.org"}
OTHER_SITES = {"docs.python.org", "git-scm.com"}
CHINESE_SITE = "manpages.debian.org"
QUALITY_STEP = "04_quality"
COLUMNS = ["domain", "math_spans", "language"]


def rows(pattern: str, columns: list[str]) -> list[dict]:
    found = []
    for path in sorted(glob.glob(pattern)):
        found.extend(pq.read_table(path, columns=columns).to_pylist())
    return found


def kinds(row: dict) -> list[str]:
    labels = []
    if row["math_spans"] > 0:
        labels.append("tex")
    if row["domain"] in MATH_SITES:
        labels.append("math_site")
    elif row["domain"] in OTHER_SITES:
        labels.append("other_site")
    elif row["domain"] == CHINESE_SITE:
        labels.append("chinese")
    return labels


def measure(warc: str, work_dir: str, preset: str) -> dict:
    config = compose_config(
        "prepare",
        [f"quality={preset}", f"corpus.warc_inputs=[{warc}]", f"corpus.work_dir={work_dir}", "beam=direct"],
        register_configs,
    )
    summary = run_prepare(config)
    output = config.output_dir
    # Pages that reached the quality step: dropped there, dropped by a later step, or kept.
    dropped_here = rows(f"{output}/removed/{QUALITY_STEP}/*.parquet", [*COLUMNS, "removed_reason"])
    later = [
        row
        for step in ("05_url_dedup", "06_exact_dedup")
        for row in rows(f"{output}/removed/{step}/*.parquet", COLUMNS)
    ] + rows(f"{output}/documents/*.parquet", COLUMNS)
    entered, kept, reasons, chinese_reasons = Counter(), Counter(), Counter(), Counter()
    for row in dropped_here:
        entered.update(kinds(row))
        if row["math_spans"] > 0:
            reasons[row["removed_reason"]] += 1
        if row["domain"] == CHINESE_SITE:
            chinese_reasons[row["removed_reason"]] += 1
    for row in later:
        entered.update(kinds(row))
        kept.update(kinds(row))
    assert sum(1 for _ in dropped_here) + len(later) == summary["steps"][QUALITY_STEP]["in"]
    return {
        "quality_step_in": summary["steps"][QUALITY_STEP]["in"],
        "quality_step_kept": summary["steps"][QUALITY_STEP]["kept"],
        **{f"{kind}_kept": f"{kept[kind]}/{entered[kind]}" for kind in ("tex", "math_site", "other_site", "chinese")},
        "tex_drop_reasons": dict(reasons.most_common()),
        "chinese_drop_reasons": dict(chinese_reasons.most_common()),
        "chinese_labelled_zh": sum(1 for row in later if row["domain"] == CHINESE_SITE and row["language"] == "zh"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["gopher", "math_tuned", "paper"])
    parser.add_argument("--limit", type=int, default=None, help="pages per package (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    packages = ("python-scipy-doc", "python-mpmath-doc", "python3.11-doc", "git-doc")
    pages = [page for package in packages for page in debian_doc_pages(package, args.limit)]
    pages += chinese_man_pages(args.limit)
    results = {"pages": len(pages)}
    with tempfile.TemporaryDirectory() as scratch:
        warc = os.path.join(scratch, "crawl.warc.gz")
        write_html_warc(warc, pages)
        for preset in args.presets:
            results[preset] = measure(warc, os.path.join(scratch, preset), preset)
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
