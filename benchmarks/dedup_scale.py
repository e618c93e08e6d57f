"""Near-dedup at scale: our Beam graph on the direct runner (and, with `--runner dask`, on a
Dask cluster) vs an in-process loop doing the same work.

For each size (default 100k and 1M documents of ~2 KB, generated from real prose with planted
near-duplicates by `tests/planted_duplicates.py`, written to Parquet first and not timed):
- ours: `python -m beam_pipelines.dedup` on the direct runner (FnApiRunner, multi-processing,
  `--workers` worker processes) with the default settings (20 x 6 bands, exact verification);
- reference: one Python process that reads the same Parquet files and does the same work in
  memory - same tokens and shingles, same datasketch `MinHash.update_batch` with xxh32,
  `MinHashLSH(params=(20, 6))` buckets, candidate pairs by our rule (every pair of a bucket of up
  to 16 documents, a star on the smallest id for larger ones), exact Jaccard >= 0.8 on the same
  xxh32 shingle hashes (skipping pairs union-find already joined), union-find components, the
  same survivor rule (math score, length, smallest id), kept documents written to Parquet.
The run fails unless both sides remove the identical set of document ids (printed as
`same_removed_ids_checked`). Each side runs in its own subprocess, `--repeats` times,
interleaved; this process samples the RSS of that process tree every 0.2 s (peak RSS) and reads
its CPU time; the figures are the minimum CPU over the repeats and the maximum peak RSS. Prints
ONE JSON line: per size, CPU seconds (with the reference's per-phase CPU), docs per CPU second,
peak RSS, documents removed; then ours/reference ratios and how each side grows with size.

    PYTHONPATH=. python benchmarks/dedup_scale.py                        # 100k and 1M
    PYTHONPATH=. python benchmarks/dedup_scale.py --sizes 20000 --workers 2 --repeats 2
    PYTHONPATH=. python benchmarks/dedup_scale.py --runner dask --sizes 100000 --dask-memory-limit 4GB

`--runner dask` adds a third side: the same `python -m beam_pipelines.dedup` with beam=dask on a
local cluster (scheduler + `--dask-workers` worker processes under nannies, one thread each,
`--dask-memory-limit` each, started per size and stopped by PID). It reports wall, CPU seconds of
the driver and every cluster process, docs per CPU second, the peak RSS of each worker against
its limit (`within_memory_limit`, and `worker_restarts`: a nanny restarts a worker that dies or
outgrows the limit), and checks it removed exactly what the direct runner removed.

The reference is what one machine can do when everything fits in its memory; its index and
shingle arrays grow with the corpus. Ours pays for shuffles (in the direct runner: in the
driver's memory) and would spread over workers on a cluster. Both sides' CPU includes process
start-up (the reference's imports this script's modules, ~3 s). Timings on a shared machine are
noisy: compare the ratios within one run.

Measured (direct runner, 2 workers; CPU of the whole process tree; results JSON beside each):
- before (per-document Beam elements: N x 20 band records, N shingle arrays and all N documents
  through the runner's shuffles), `dedup_scale_20k.json`/`dedup_scale_100k.json`: 491 vs the
  reference's 1,010 docs/CPU-s at 20k (0.49x), 1,037 vs 1,342 at 100k (0.77x, load 8-15);
  peak RSS 1.9 GB at 20k, 3.4 GB at 100k (the reference 0.66 and 1.4 GB).
- after (per input file: batched signatures, band records written to band-key partitions and
  grouped by a numpy sort, verification joined by file, each file filtered where it lies),
  `dedup_scale_per_file_direct.json`, our side only (load 35-90, too high for a full
  interleaved run): 20k 33.4 CPU s = 599 docs/CPU-s (the code before, same data and machine
  that hour: 40.3 s = 496), peak RSS 1.27 GB (before 2.04 GB), the same 938 removed ids
  (sha1 of the sorted ids equal); 100k 65.4 CPU s = 1,529 docs/CPU-s (before 96.4 s = 1,037),
  1.60 GB peak (before 3.35 GB), 4,571 removed, 31,502 candidate pairs, 4,806 verified, as
  before. Against the committed reference figure at 100k (1,342 docs/CPU-s): 1.14x; at 20k
  (1,010): 0.59x: four pipelines each start two worker processes (~3.4 CPU s a start), a
  fixed ~15-20 CPU s that dominates small inputs.
  The full benchmark at 100k (`dedup_scale_100k_per_file.json`, identical removed ids checked):
  ours 55.5 CPU s = 1,802 docs/CPU-s, peak 1.55 GB; reference 97.1 CPU s = 1,030, 1.41 GB:
  1.75x, but the reference ran at load 40-90 and ours at ~20 (CPU seconds inflate under
  load); against the reference's 74.5 s at load 8-15, 1.34x. Our side's stages at 100k
  (wall): candidates 101 s, components 15 s, removal 31 s.
  Memory is not yet flat: our peak RSS (driver + 2 workers) 1.27 GB at 20k, 1.60 GB at 100k,
  2.34 GB at 300k (126.2 CPU s = 2,377 docs/CPU-s, 13,551 removed; load 13-35). The band
  partitions are bounded (`minhash.band_partition_records`), the documents no longer travel;
  what still grows is proportional to the candidates (E edges, each carrying one shingle-hash
  array through the verification join, held in the direct runner's driver) - not profiled yet.
- hashes via files (`benchmarks/dedup_memory.py` found the verification join's stage the peak,
  driver 533 MB at 100k; now only ids are shuffled and each endpoint's hashes are written once
  per verification partition), `dedup_scale_100k_300k_hashes_via_files.json`, load 5-20,
  identical removed ids: 100k ours 49.2 CPU s = 2,033 docs/CPU-s vs the loop's 1,675 (1.21x),
  peak 1,329 MB (driver 357, workers 1,050) vs 1,447; 300k 123.5 CPU s = 2,429 vs 1,537
  (1.58x), peak 1,619 MB (driver 444, workers 1,214) vs 3,026 (x1.22 from 100k; the loop x2.09).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import math
import os
import pstats
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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from dask.utils import parse_bytes
from datasketch import MinHash, MinHashLSH

from beam_pipelines.config import register_configs
from beam_pipelines.document import documents_to_table
from beam_pipelines.runners.dask_cluster import ClusterSampler, LocalDaskCluster
from beam_pipelines.stages.dedup import run_dedup
from beam_pipelines.transforms.config import MinHashConfig
from beam_pipelines.transforms.minhash import MinHashSettings, Signer
from stack_common.cli import compose_config
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


_THRESHOLD, _PAIRWISE_BUCKET_LIMIT = 0.8, 16


def _already_hashed(value):
    return value


def _plain_rank(math_score, text: str) -> tuple[float, float]:
    # The default survivor order: math score (missing ranks lowest), then text length.
    return (-math.inf if math_score is None else float(math_score), float(len(text)))


def reference_loop(directory: Path, output: Path) -> dict:
    """The in-process loop doing our pipeline's work (runs inside its own subprocess):
    signatures -> MinHashLSH buckets -> candidate pairs (every pair of a bucket of up to 16
    documents, a star on the smallest id for larger ones) -> exact Jaccard >= 0.8 on the xxh32
    shingle hashes, skipping pairs union-find has already joined -> components -> the best
    document of each (math score, length, then smallest id) is kept -> kept documents written
    to Parquet, removed ids to `output`/removed_ids.txt."""
    clock = time.process_time
    phases = dict.fromkeys(("read", "signatures", "lsh_insert", "buckets_and_verification", "write"), 0.0)
    template = MinHash(num_perm=_NUM_PERM, seed=_SEED, hashfunc=_already_hashed, scheme="affine32")
    lsh = MinHashLSH(num_perm=_NUM_PERM, params=(_BANDS, _ROWS))
    hashes: dict[str, np.ndarray] = {}
    ranks: dict[str, tuple[float, float]] = {}
    paths = sorted((directory / "documents").glob("*.parquet"))
    for path in paths:
        mark = clock()
        table = pq.read_table(path, columns=["id", "text", "math_score"])
        rows = zip(*(table.column(name).to_pylist() for name in ("id", "text", "math_score")))
        phases["read"] += clock() - mark
        for document_id, text, math_score in rows:
            mark = clock()
            shingle_set = _plain_shingles(text)
            if not shingle_set:
                phases["signatures"] += clock() - mark
                continue
            # Each shingle is hashed once; the hashes feed both the MinHash and verification.
            shingle_hashes = np.unique(np.fromiter(map(xxhash.xxh32_intdigest, shingle_set), np.uint32))
            minhash = template.copy()
            minhash.update_batch(shingle_hashes)
            hashes[document_id] = shingle_hashes
            ranks[document_id] = _plain_rank(math_score, text)
            middle = clock()
            lsh.insert(document_id, minhash, check_duplication=False)
            phases["signatures"] += middle - mark
            phases["lsh_insert"] += clock() - middle

    mark = clock()
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        root = node
        while parent.get(root, root) != root:
            root = parent[root]
        while node != root:  # path compression
            parent[node], node = root, parent[node]
        return root

    candidates = verified = skipped = 0
    for table in lsh.hashtables:
        for key in table.keys():
            members = sorted(table.get(key))
            if len(members) < 2:
                continue
            if len(members) <= _PAIRWISE_BUCKET_LIMIT:
                pairs = ((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
            else:
                pairs = ((members[0], b) for b in members[1:])
            for first, second in pairs:
                candidates += 1
                first_root, second_root = find(first), find(second)
                if first_root == second_root:
                    skipped += 1
                    continue
                a, b = hashes[first], hashes[second]
                common = np.intersect1d(a, b, assume_unique=True).size
                if common / (a.size + b.size - common) >= _THRESHOLD:
                    verified += 1
                    parent[max(first_root, second_root)] = min(first_root, second_root)
    best: dict[str, str] = {}
    for node in set(parent) | set(parent.values()):
        root = find(node)
        current = best.get(root)
        if current is None or ranks[node] > ranks[current] or (ranks[node] == ranks[current] and node < current):
            best[root] = node
    removed = {node for node in set(parent) | set(parent.values()) if best[find(node)] != node}
    phases["buckets_and_verification"] = clock() - mark

    mark = clock()
    output.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(paths):
        table = pq.read_table(path)
        kept = pc.invert(pc.is_in(table.column("id"), value_set=pa.array(sorted(removed), pa.string())))
        pq.write_table(table.filter(kept), output / f"part-{index:05d}.parquet")
    (output / "removed_ids.txt").write_text("".join(f"{node}\n" for node in sorted(removed)))
    phases["write"] = clock() - mark
    return {
        "documents": len(hashes),
        "removed": len(removed),
        "candidate_pairs": candidates,
        "pairs_skipped_already_joined": skipped,
        "verified_pairs": verified,
        "phase_cpu_seconds": {name: round(value, 2) for name, value in phases.items()},
    }


# Our functions whose cumulative profile time is one part of the breakdown (they do not call
# each other); everything else is the runner: element coding, shuffles, bundles, Parquet I/O.
_PROFILE_PARTS = {
    "tokenising": [("minhash.py", "word_tokens")],
    "shingle_hashing": [("minhash.py", "shingle_hashes")],
    "signature": [("minhash.py", "signatures")],
    "band_keys": [("minhash.py", "band_hashes")],
    "bucket_edges": [("minhash.py", "process", "PartitionEdges")],
    "verification": [("minhash.py", "process", "_WriteEndpoints"), ("minhash.py", "process", "_ComparePartition")],
    "components": [("connected_components.py", "process", "_LargeStar"), ("connected_components.py", "_small_star")],
    "survivors_and_removal": [
        ("minhash.py", "_label_members"),
        ("minhash.py", "process", "_ChooseSurvivor"),
        ("minhash.py", "process", "DuplicateIds"),
        ("minhash.py", "process", "RemoveFromUnit"),
    ],
}


_WAITING = ("acquire", "sleep", "wait", "select", "poll")


def profile_ours(directory: Path) -> dict:
    """Where our CPU goes: the whole dedup in this process (beam=direct_single, so one profile
    sees every stage) under cProfile, split into `_PROFILE_PARTS` and the runner's share.
    Profiling inflates Python-heavy parts; read the shares, not the seconds."""
    config = compose_config(
        "dedup",
        [
            f"input_dir={directory / 'pool'}",
            f"output_dir={directory / 'profile_output'}",
            f"work_dir={directory / 'profile_work'}",
            "beam=direct_single",
        ],
        register_configs,
    )
    profiler = cProfile.Profile()
    profiler.enable()
    run_dedup(config)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    # All tottime except time blocked on locks and sleeps (waiting is not CPU).
    total = sum(
        entry[2]
        for (filename, _, name), entry in stats.items()
        if not (filename == "~" and any(word in name for word in _WAITING))
    )
    lines = {}
    for (filename, line, name), entry in stats.items():
        lines.setdefault((Path(filename).name, name), []).append((filename, line, entry[3]))
    parts = {}
    for part, functions in _PROFILE_PARTS.items():
        seconds = 0.0
        for function in functions:
            for filename, line, cumulative in lines.get(function[:2], []):
                if len(function) == 2 or _defined_in_class(filename, line, function[2]):
                    seconds += cumulative
        parts[part] = seconds
    parts["runner_coding_shuffle_io"] = total - sum(parts.values())
    return {
        "profiled_cpu_seconds": round(total, 1),
        "share": {part: round(seconds / total, 3) for part, seconds in parts.items()},
    }


def _defined_in_class(filename: str, line: int, class_name: str) -> bool:
    source = Path(filename).read_text().splitlines()[:line]
    for text in reversed(source):
        if text.startswith("class "):
            return text.startswith(f"class {class_name}(")
    return False


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
    """Peak RSS (sum over a process and its descendants) and their CPU seconds. Every sample is
    also kept as (time, stage, root RSS, descendants' RSS), `stage` being whatever label the
    caller set last (dedup_memory.py names the Beam stage running then)."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = self.peak_root_rss = self.peak_children_rss = 0
        self.cpu_seconds: dict[int, float] = {}
        self.stage = "start"
        self.samples: list[tuple[float, str, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            total = children = 0
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    times = process.cpu_times()
                    self.cpu_seconds[process.pid] = times.user + times.system
                except psutil.NoSuchProcess:
                    continue
                total += rss
                if process.pid != self.root.pid:
                    children += rss
            self.peak_rss = max(self.peak_rss, total)
            # The direct runner's driver holds every shuffle; its workers one task's data each.
            self.peak_root_rss = max(self.peak_root_rss, total - children)
            self.peak_children_rss = max(self.peak_children_rss, children)
            self.samples.append((time.time(), self.stage, total - children, children))
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "peak_rss_mb_main_process": round(self.peak_root_rss / 2**20, 1),
            "peak_rss_mb_child_processes": round(self.peak_children_rss / 2**20, 1),
            "cpu_seconds": round(sum(self.cpu_seconds.values()), 1),
        }


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


def removed_ids(output: Path) -> list[str]:
    return [
        row_id
        for path in sorted((output / "removed" / "07_minhash").glob("*.parquet"))
        for row_id in pq.read_table(path, columns=["id"]).column("id").to_pylist()
    ]


def run_reference(count: int, data: Path, env: dict) -> dict:
    output = data / "reference_output"
    shutil.rmtree(output, ignore_errors=True)
    measured, wall, stdout = run_measured(
        [sys.executable, __file__, "--role", "reference", "--input", str(data / "pool"), "--output", str(output)], env
    )
    loop = json.loads(stdout.strip().splitlines()[-1])
    return {
        "wall_seconds": round(wall, 1),
        "cpu_seconds": measured["cpu_seconds"],
        "cores": 1,
        "docs_per_cpu_second": round(count / max(measured["cpu_seconds"], 1e-9), 1),
        "peak_rss_mb": measured["peak_rss_mb"],
        **loop,
    }


def run_ours(count: int, data: Path, args, env: dict) -> dict:
    output = data / "pool_near_dedup"
    measured, wall, _ = run_measured(
        [
            sys.executable,
            "-m",
            "beam_pipelines.dedup",
            f"input_dir={data / 'pool'}",
            f"output_dir={output}",
            f"work_dir={data / 'work'}",
            f"beam.direct_num_workers={args.workers}",
            f"hydra.run.dir={data / 'hydra'}",
        ],
        env,
    )
    summary = json.loads((output / "summary.json").read_text())
    return {
        "wall_seconds": round(wall, 1),
        "pipeline_seconds": summary["elapsed_seconds"],
        "stage_seconds": {
            "candidates": summary["lsh"]["seconds"],
            "components": summary["components"]["seconds"],
            "removal": summary["clusters"]["seconds"],
        },
        "cpu_seconds": measured["cpu_seconds"],
        "cores": args.workers,
        "docs_per_cpu_second": round(count / max(measured["cpu_seconds"], 1e-9), 1),
        "peak_rss_mb": measured["peak_rss_mb"],
        "peak_rss_mb_driver": measured["peak_rss_mb_main_process"],
        "peak_rss_mb_workers": measured["peak_rss_mb_child_processes"],
        "removed": summary["totals"]["dropped"],
        "candidate_pairs": summary["lsh"].get("candidate_pairs", 0),
        "verified_pairs": summary["lsh"].get("verified_pairs", 0),
        "component_rounds": summary["components"]["rounds"],
        "balanced": summary["balanced"],
    }


def measure_size(count: int, args, env: dict) -> dict:
    data = Path(args.work_dir) / f"n{count}"
    shutil.rmtree(data, ignore_errors=True)
    log.info(f"generating {count} documents under {data}")
    generation_seconds = generate(data / "pool", count, args.seed)
    size_bytes = sum(p.stat().st_size for p in (data / "pool" / "documents").glob("*.parquet"))
    if not check_same_signatures(data / "pool"):
        raise RuntimeError("the reference loop and the pipeline compute different signatures")

    reference_runs, our_runs = [], []
    for repeat in range(args.repeats):  # interleaved, so load changes hit both sides alike
        log.info(f"reference loop on {count} documents (repeat {repeat + 1}/{args.repeats})")
        reference_runs.append(run_reference(count, data, env))
        log.info(f"our Beam graph on {count} documents ({args.workers} worker processes, repeat {repeat + 1})")
        our_runs.append(run_ours(count, data, args, env))
    reference = min(reference_runs, key=lambda run: run["cpu_seconds"])
    ours = min(our_runs, key=lambda run: run["cpu_seconds"])
    reference["peak_rss_mb"] = max(run["peak_rss_mb"] for run in reference_runs)
    ours["peak_rss_mb"] = max(run["peak_rss_mb"] for run in our_runs)
    ours["peak_rss_mb_driver"] = max(run["peak_rss_mb_driver"] for run in our_runs)
    ours["peak_rss_mb_workers"] = max(run["peak_rss_mb_workers"] for run in our_runs)
    reference["cpu_seconds_per_repeat"] = [run["cpu_seconds"] for run in reference_runs]
    ours["cpu_seconds_per_repeat"] = [run["cpu_seconds"] for run in our_runs]
    if args.profile:
        log.info(f"profiling our Beam graph on {count} documents (in one process)")
        _, _, stdout = run_measured([sys.executable, __file__, "--role", "profile", "--input", str(data)], env)
        ours["profile"] = json.loads(stdout.strip().splitlines()[-1])
    reference_removed = (data / "reference_output" / "removed_ids.txt").read_text().split()
    our_removed = removed_ids(data / "pool_near_dedup")
    same_removed = sorted(reference_removed) == sorted(our_removed)
    if not same_removed:
        raise RuntimeError(
            f"different removals: reference {len(reference_removed)}, ours {len(our_removed)}, "
            f"{len(set(reference_removed) ^ set(our_removed))} ids differ"
        )
    if args.runner == "dask":
        dask = measure_dask(count, data, args, env)
        dask_removed = removed_ids(data / "pool_near_dedup_dask")
        dask["same_removed_ids_as_direct"] = sorted(dask_removed) == sorted(our_removed)
        if not dask["same_removed_ids_as_direct"]:
            raise RuntimeError(f"beam=dask removed {len(dask_removed)} documents, the direct runner {len(our_removed)}")
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    extra = {}
    if args.runner == "dask":
        extra = {
            "dask": dask,
            "ratio_dask_to_direct_docs_per_cpu_second": round(
                dask["docs_per_cpu_second"] / ours["docs_per_cpu_second"], 3
            ),
            "ratio_dask_to_reference_docs_per_cpu_second": round(
                dask["docs_per_cpu_second"] / reference["docs_per_cpu_second"], 3
            ),
        }
    return {
        "documents": count,
        "input_mb": round(size_bytes / 2**20, 1),
        "same_signatures_checked": True,
        "same_removed_ids_checked": same_removed,
        "generation_seconds": round(generation_seconds, 1),
        "ours": ours,
        "reference": reference,
        "ratio_docs_per_cpu_second": round(ours["docs_per_cpu_second"] / reference["docs_per_cpu_second"], 3),
        "ratio_peak_rss": round(ours["peak_rss_mb"] / reference["peak_rss_mb"], 3),
        **extra,
    }


def measure_dask(count: int, data: Path, args, env: dict) -> dict:
    """The dedup stage with beam=dask on a fresh local cluster; the driver's process tree and
    every cluster process are sampled."""
    output = data / "pool_near_dedup_dask"
    cluster = LocalDaskCluster(
        data / "dask-cluster", workers=args.dask_workers, memory_limit=args.dask_memory_limit
    ).start()
    try:
        log.info("beam=dask on %d documents (%d workers, %s each)", count, args.dask_workers, args.dask_memory_limit)
        sampler = ClusterSampler(cluster).start()
        partitions = [f"beam.dask_partitions={args.dask_partitions}"] if args.dask_partitions else []
        measured, wall, _ = run_measured(
            [
                sys.executable,
                "-m",
                "beam_pipelines.dedup",
                f"input_dir={data / 'pool'}",
                f"output_dir={output}",
                f"work_dir={data / 'dask-work'}",
                "beam=dask",
                f"beam.dask_scheduler_file={cluster.scheduler_file}",
                *partitions,
                f"hydra.run.dir={data / 'hydra-dask'}",
            ],
            env,
        )
        cluster_measured = sampler.stop()
    finally:
        cluster.stop()
    summary = json.loads((output / "summary.json").read_text())
    limit_mb = _bytes(args.dask_memory_limit) / 2**20
    cpu_seconds = measured["cpu_seconds"] + cluster_measured["cpu_seconds"]
    return {
        "wall_seconds": round(wall, 1),
        "pipeline_seconds": summary["elapsed_seconds"],
        "stage_seconds": {
            "candidates": summary["lsh"]["seconds"],
            "components": summary["components"]["seconds"],
            "removal": summary["clusters"]["seconds"],
        },
        "cpu_seconds": round(cpu_seconds, 1),
        "driver_cpu_seconds": measured["cpu_seconds"],
        "workers": args.dask_workers,
        "docs_per_second_per_worker": round(count / wall / args.dask_workers, 1),
        "docs_per_cpu_second": round(count / max(cpu_seconds, 1e-9), 1),
        "driver_peak_rss_mb": measured["peak_rss_mb"],
        "peak_rss_mb_per_worker": cluster_measured["peak_rss_mb_per_worker"],
        "memory_limit_mb_per_worker": round(limit_mb, 1),
        "within_memory_limit": all(rss < limit_mb for rss in cluster_measured["peak_rss_mb_per_worker"]),
        "worker_restarts": cluster_measured["worker_restarts"],
        "removed": summary["totals"]["dropped"],
        "balanced": summary["balanced"],
    }


def _bytes(text: str) -> float:
    return float(parse_bytes(text))


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[dedup_scale] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated document counts")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="direct runner worker processes")
    parser.add_argument("--work-dir", default="/tmp/dedup_scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep generated data and outputs")
    parser.add_argument("--runner", choices=["direct", "dask"], default="direct", help="dask: also run beam=dask")
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--dask-memory-limit", default="4GB", help="per worker")
    parser.add_argument("--dask-partitions", type=int, default=0, help="beam.dask_partitions (0: the runner's default)")
    parser.add_argument("--role", choices=["driver", "reference", "profile"], default="driver", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="add a cProfile breakdown of our side (one more run)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats per side (figures: min CPU)")
    args = parser.parse_args()
    if args.role == "reference":
        print(json.dumps(reference_loop(Path(args.input), Path(args.output))))
        return
    if args.role == "profile":
        print(json.dumps(profile_ours(Path(args.input))))
        return
    sys.path.insert(0, str(REPO_ROOT))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    load_before = [round(value, 2) for value in os.getloadavg()]
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
        if args.runner == "dask":
            growth["dask_wall_factor"] = round(large["dask"]["wall_seconds"] / small["dask"]["wall_seconds"], 2)
            growth["dask_peak_worker_rss_factor"] = round(
                max(large["dask"]["peak_rss_mb_per_worker"]) / max(small["dask"]["peak_rss_mb_per_worker"]), 2
            )
    print(
        json.dumps(
            {
                "benchmark": "dedup_scale",
                "load_average_before": load_before,
                "load_average_after": [round(value, 2) for value in os.getloadavg()],
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
