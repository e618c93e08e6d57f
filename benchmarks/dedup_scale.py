"""Near-dedup at scale: our Beam graph on the direct runner vs a plain in-process datasketch loop.

For each size (default 100k and 1M documents of ~2 KB, generated from real prose with planted
near-duplicates by `tests/planted_duplicates.py`, written to Parquet first and not timed):
- ours: `python -m beam_pipelines.dedup` on the direct runner (FnApiRunner, multi-processing,
  `--workers` worker processes) with the default settings (20 x 6 bands, exact verification);
- reference: one Python process that reads the same Parquet files and runs the classic loop -
  same tokens and shingles, same datasketch `MinHash.update_batch` with xxh32, then
  `MinHashLSH(params=(20, 6))`: query, keep the document if nothing similar was seen, insert.
Each side runs in its own subprocess; this process samples the RSS of that process tree every
0.2 s (peak RSS) and reads its CPU time. Prints ONE JSON line: per size, wall seconds, CPU
seconds, docs/s per core (wall x cores used, and per CPU second), peak RSS, documents removed;
then ours/reference ratios and how each side's time grows from the smallest to the largest size.

    python benchmarks/dedup_scale.py                         # 100k and 1M
    python benchmarks/dedup_scale.py --sizes 100000 --workers 2 --work-dir /tmp/dedup_scale

The reference is what one machine can do when everything fits in its memory; its index grows
with the corpus. Ours pays for a shuffle (in the direct runner: in the driver's memory) and
would spread over workers on a cluster. Timings on a shared machine are noisy: compare the
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import xxhash
from datasketch import MinHash, MinHashLSH

from beam_pipelines.document import documents_to_table
from beam_pipelines.transforms.config import MinHashConfig
from beam_pipelines.transforms.minhash import MinHashSettings, Signer
from tests.planted_duplicates import generate_documents

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARD_DOCUMENTS = 10_000


# Progress on stderr; stdout carries only the JSON line of figures.
log = logging.getLogger("dedup_scale")


def generate(directory: Path, count: int, seed: int) -> float:
    """Write `count` generated documents as Parquet shards; returns seconds spent."""
    started = time.time()
    target = directory / "documents"
    target.mkdir(parents=True, exist_ok=True)
    batch, shard = [], 0
    for generated in generate_documents(
        count, seed=seed, duplicate_fraction=0.3, max_edit_rate=0.05, target_characters=1700, memory=5000
    ):
        batch.append(generated.document)
        if len(batch) == SHARD_DOCUMENTS:
            pq.write_table(documents_to_table(batch), target / f"part-{shard:05d}.parquet")
            batch, shard = [], shard + 1
            if shard % 10 == 0:
                log.info(f"generated {shard * SHARD_DOCUMENTS} documents")
    if batch:
        pq.write_table(documents_to_table(batch), target / f"part-{shard:05d}.parquet")
    return time.time() - started


# The reference is written the plain way, importing only datasketch, xxhash and pyarrow (not
# Beam, not this project): the same normalisation as `transforms.minhash.word_tokens`, shingle
# bytes hashed by datasketch's `update_batch` with xxh32. `check_same_signatures` proves on a
# sample that it computes exactly our signatures.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_SHINGLE_SIZE, _NUM_PERM, _BANDS, _ROWS, _SEED = 5, 120, 20, 6, 1


def _plain_shingles(text: str) -> set[bytes]:
    tokens = re.findall(rf"[{_CJK}]|\d+|[^\W\d_{_CJK}]+", unicodedata.normalize("NFKC", text).lower())
    if len(tokens) <= _SHINGLE_SIZE:
        return {" ".join(tokens).encode()} if tokens else set()
    return {" ".join(tokens[i : i + _SHINGLE_SIZE]).encode() for i in range(len(tokens) - _SHINGLE_SIZE + 1)}


def _plain_template():
    return MinHash(num_perm=_NUM_PERM, seed=_SEED, hashfunc=xxhash.xxh32_intdigest, scheme="affine32")


def reference_loop(directory: Path) -> dict:
    """The in-process datasketch loop (runs inside its own subprocess)."""
    template = _plain_template()
    lsh = MinHashLSH(num_perm=_NUM_PERM, params=(_BANDS, _ROWS))
    started = time.time()
    seen = removed = 0
    for shard, path in enumerate(sorted((directory / "documents").glob("*.parquet")), start=1):
        table = pq.read_table(path, columns=["id", "text"])
        for document_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
            shingle_set = _plain_shingles(text)
            if not shingle_set:
                continue
            minhash = template.copy()
            minhash.update_batch(shingle_set)
            seen += 1
            if lsh.query(minhash):
                removed += 1
            else:
                lsh.insert(document_id, minhash, check_duplication=False)
        if shard % 10 == 0:
            log.info(f"reference: {seen} documents")
    return {"seconds": time.time() - started, "documents": seen, "removed": removed}


def check_same_signatures(directory: Path, sample: int = 300) -> bool:
    """Both sides compute the same signatures (so the comparison is of the dataflow, not of
    different work)."""
    config = MinHashConfig()
    assert (config.num_perm, config.bands, config.rows, config.seed, config.shingle_size) == (
        _NUM_PERM,
        _BANDS,
        _ROWS,
        _SEED,
        _SHINGLE_SIZE,
    ), "the reference must use the default settings"
    signer = Signer(MinHashSettings.from_config(config))
    template = _plain_template()
    first = sorted((directory / "documents").glob("*.parquet"))[0]
    for text in pq.read_table(first, columns=["text"]).column("text").to_pylist()[:sample]:
        plain = template.copy()
        plain.update_batch(_plain_shingles(text))
        if not np.array_equal(plain.hashvalues, signer.sign(text)):
            return False
    return True


class TreeSampler:
    """Peak RSS (sum over a process and its descendants) and their CPU seconds."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.cpu_seconds: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                    times = process.cpu_times()
                    self.cpu_seconds[process.pid] = times.user + times.system
                except psutil.NoSuchProcess:
                    continue
            self.peak_rss = max(self.peak_rss, total)
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_mb": round(self.peak_rss / 2**20, 1), "cpu_seconds": round(sum(self.cpu_seconds.values()), 1)}


def run_measured(command: list[str], env: dict) -> tuple[dict, float, str]:
    started = time.time()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = TreeSampler(process.pid)
    stdout, stderr = process.communicate()
    wall = time.time() - started
    measured = sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{stderr[-3000:]}")
    return measured, wall, stdout


def measure_size(count: int, args, env: dict) -> dict:
    data = Path(args.work_dir) / f"n{count}"
    shutil.rmtree(data, ignore_errors=True)
    log.info(f"generating {count} documents under {data}")
    generation_seconds = generate(data / "pool", count, args.seed)
    size_bytes = sum(p.stat().st_size for p in (data / "pool" / "documents").glob("*.parquet"))
    if not check_same_signatures(data / "pool"):
        raise RuntimeError("the reference loop and the pipeline compute different signatures")

    log.info(f"reference loop on {count} documents")
    measured, wall, stdout = run_measured(
        [sys.executable, __file__, "--role", "reference", "--input", str(data / "pool")], env
    )
    loop = json.loads(stdout.strip().splitlines()[-1])
    reference = {
        "wall_seconds": round(wall, 1),
        "loop_seconds": round(loop["seconds"], 1),
        "cpu_seconds": measured["cpu_seconds"],
        "cores": 1,
        "docs_per_second_per_core": round(count / wall, 1),
        "docs_per_cpu_second": round(count / max(measured["cpu_seconds"], 1e-9), 1),
        "peak_rss_mb": measured["peak_rss_mb"],
        "removed": loop["removed"],
    }

    log.info(f"our Beam graph on {count} documents ({args.workers} worker processes)")
    output = data / "pool_near_dedup"
    measured, wall, _ = run_measured(
        [
            sys.executable,
            "-m",
            "beam_pipelines.dedup",
            f"input_dir={data / 'pool'}",
            f"output_dir={output}",
            f"beam.direct_num_workers={args.workers}",
            f"hydra.run.dir={data / 'hydra'}",
        ],
        env,
    )
    summary = json.loads((output / "summary.json").read_text())
    ours = {
        "wall_seconds": round(wall, 1),
        "pipeline_seconds": summary["elapsed_seconds"],
        "stage_seconds": {
            "candidates": summary["lsh"]["seconds"],
            "components": summary["components"]["seconds"],
            "removal": summary["clusters"]["seconds"],
        },
        "cpu_seconds": measured["cpu_seconds"],
        "cores": args.workers,
        "docs_per_second_per_core": round(count / wall / args.workers, 1),
        "docs_per_cpu_second": round(count / max(measured["cpu_seconds"], 1e-9), 1),
        "peak_rss_mb": measured["peak_rss_mb"],
        "removed": summary["totals"]["dropped"],
        "candidate_pairs": summary["lsh"].get("candidate_pairs", 0),
        "verified_pairs": summary["lsh"].get("verified_pairs", 0),
        "component_rounds": summary["components"]["rounds"],
        "balanced": summary["balanced"],
    }
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return {
        "documents": count,
        "input_mb": round(size_bytes / 2**20, 1),
        "same_signatures_checked": True,
        "generation_seconds": round(generation_seconds, 1),
        "ours": ours,
        "reference": reference,
        "ratio_docs_per_second_per_core": round(
            ours["docs_per_second_per_core"] / reference["docs_per_second_per_core"], 3
        ),
        "ratio_docs_per_cpu_second": round(ours["docs_per_cpu_second"] / reference["docs_per_cpu_second"], 3),
        "ratio_peak_rss": round(ours["peak_rss_mb"] / reference["peak_rss_mb"], 3),
    }


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[dedup_scale] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated document counts")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="direct runner worker processes")
    parser.add_argument("--work-dir", default="/tmp/dedup_scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep generated data and outputs")
    parser.add_argument("--role", choices=["driver", "reference"], default="driver", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "reference":
        print(json.dumps(reference_loop(Path(args.input))))
        return
    sys.path.insert(0, str(REPO_ROOT))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results = [measure_size(count, args, env) for count in sizes]
    growth = {}
    if len(results) > 1:
        small, large = results[0], results[-1]
        factor = large["documents"] / small["documents"]
        growth = {
            "documents_factor": factor,
            "ours_wall_factor": round(large["ours"]["wall_seconds"] / small["ours"]["wall_seconds"], 2),
            "reference_wall_factor": round(large["reference"]["wall_seconds"] / small["reference"]["wall_seconds"], 2),
            "ours_peak_rss_factor": round(large["ours"]["peak_rss_mb"] / small["ours"]["peak_rss_mb"], 2),
            "reference_peak_rss_factor": round(
                large["reference"]["peak_rss_mb"] / small["reference"]["peak_rss_mb"], 2
            ),
        }
    print(
        json.dumps(
            {
                "benchmark": "dedup_scale",
                "machine": f"{os.cpu_count()} cores, shared with other jobs (timings noisy; compare ratios within "
                "this run)",
                "settings": "num_perm=120, bands=20, rows=6, 5-word shingles, xxh32 + update_batch; ours verifies "
                "candidates by exact Jaccard >= 0.8",
                "sizes": results,
                "growth": growth,
            }
        )
    )


if __name__ == "__main__":
    main()
