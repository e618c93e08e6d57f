"""Where the direct runner's memory goes in `python -m beam_pipelines.dedup`: RSS of the driver
and of its worker processes, sampled every 0.2 s, attributed to the Beam stage that was running.

Generates `--documents` documents (as `benchmarks/dedup_scale.py` does, same generator and
shard size), runs the dedup stage once on the direct runner (`--workers` processes, extra
Hydra overrides after `--`), and prints ONE JSON line: the overall peaks (driver, workers,
their sum: what `dedup_scale.py` reports) and, per pipeline stage, the peak driver and worker
RSS while that stage ran. Stages are told apart by the runner's DEBUG log line "Running
<stage>"; the driver's own log lines (`[dedup]`, `[components]`) mark the pipelines.

    PYTHONPATH=. python benchmarks/dedup_memory.py --documents 100000 --workers 2
    PYTHONPATH=. python benchmarks/dedup_memory.py --documents 30000 -- minhash.band_partition_records=200000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_STAGE = re.compile(r"Running bundle for stage (\S+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/dedup_memory")
    parser.add_argument("--reuse", action="store_true", help="reuse generated documents if present")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the dedup stage")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.dedup_scale import TreeSampler, generate  # noqa: PLC0415  after the path is set

    data = Path(args.work_dir) / f"n{args.documents}"
    if not (args.reuse and (data / "pool" / "documents").exists()):
        shutil.rmtree(data, ignore_errors=True)
        generate(data / "pool", args.documents, args.seed)
    for name in ("output", "work", "hydra"):
        shutil.rmtree(data / name, ignore_errors=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [
        sys.executable,
        "-m",
        "beam_pipelines.dedup",
        f"input_dir={data / 'pool'}",
        f"output_dir={data / 'output'}",
        f"work_dir={data / 'work'}",
        f"beam.direct_num_workers={args.workers}",
        f"hydra.run.dir={data / 'hydra'}",
        # The runner names each stage it starts at DEBUG.
        "hydra.verbose=[apache_beam.runners.portability.fn_api_runner.fn_runner]",
        *args.overrides,
    ]
    load_before = [round(value, 2) for value in os.getloadavg()]
    started = time.time()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler = TreeSampler(process.pid)
    pipeline = 0
    tail: list[str] = []
    for line in process.stdout:
        tail = (tail + [line])[-40:]
        if "[dedup]" in line or "[components]" in line:
            pipeline += 1
        found = _STAGE.search(line)
        if found:
            name = re.sub(r"ref_AppliedPTransform_|ref_PCollection_|[()]", "", found.group(1))
            sampler.stage = f"p{pipeline}:{name[:120]}"
    process.wait()
    sampler.stop()
    if process.returncode:
        raise SystemExit("".join(tail))
    stages: dict[str, dict] = {}
    for _, stage, driver, workers in sampler.samples:
        entry = stages.setdefault(stage, {"driver_mb": 0.0, "workers_mb": 0.0, "sum_mb": 0.0, "samples": 0})
        entry["driver_mb"] = max(entry["driver_mb"], round(driver / 2**20, 1))
        entry["workers_mb"] = max(entry["workers_mb"], round(workers / 2**20, 1))
        entry["sum_mb"] = max(entry["sum_mb"], round((driver + workers) / 2**20, 1))
        entry["samples"] += 1
    summary = json.loads((data / "output" / "summary.json").read_text())
    print(
        json.dumps(
            {
                "benchmark": "dedup_memory",
                "documents": args.documents,
                "workers": args.workers,
                "overrides": args.overrides,
                "wall_seconds": round(time.time() - started, 1),
                "load_average_before": load_before,
                "load_average_after": [round(value, 2) for value in os.getloadavg()],
                "removed": summary["totals"]["dropped"],
                "candidate_pairs": summary["lsh"].get("candidate_pairs", 0),
                "band_partitions": summary["lsh"].get("band_partitions"),
                "peak_driver_mb": max(entry["driver_mb"] for entry in stages.values()),
                "peak_workers_mb": max(entry["workers_mb"] for entry in stages.values()),
                "peak_sum_mb": max(entry["sum_mb"] for entry in stages.values()),
                "stages": stages,
            }
        )
    )


if __name__ == "__main__":
    main()
