"""beam=dask on a real dask.distributed cluster: a scheduler and two worker processes on 127.0.0.1
(started and stopped by this module by PID, beam_pipelines/runners/dask_cluster.py).

1. Every Beam feature the pipelines use gives what the direct runner gives (tagged outputs, several
   sinks, side inputs, GroupByKey/CoGroupByKey/Combine, Reshuffle, file reads and writes,
   counters and distributions, a Map before a write run once); what the runner cannot run fails
   before any work with one line.
2. The chain's corpus stages (launch/local/chain.py, half the `ci` crawl) on beam=dask give the documents,
   removed and dead-lettered records, summaries and tokenized .bin/.idx bytes of beam=direct, and
   both workers did work (task counts from a scheduler plugin).
3. A worker killed (SIGKILL) while prepare runs: the stage completes with identical outputs.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.transforms.userstate import BagStateSpec
from distributed.diagnostics.plugin import SchedulerPlugin

from beam_pipelines.runners.dask import UnsupportedOnDask, cluster_client
from beam_pipelines.runners.dask_cluster import LocalDaskCluster
from tests.support import REPO_ROOT, subprocess_env

pytestmark = pytest.mark.integration

CHAIN = REPO_ROOT / "launch" / "local" / "chain.py"
TRAINING_STAGES = "skip=[pretrain,sft,evaluate_sft,grpo,evaluate_grpo]"
# Half the `ci` crawl: every corpus stage still has work (and prepare something to remove).
SMALL_CORPUS = [
    "chain_size=ci",
    "chain_size.sample_math_pages=60",
    "chain_size.sample_other_pages=60",
    "chain_size.seed_positive_pages=30",
    "chain_size.arithmetic_documents=200",
]
# fastText trains hogwild with several threads (a different model each run): one thread, so
# the two runs can be compared at all.
RECALL_ONE_THREAD = "overrides.recall=['fasttext.threads=1']"
STAGE_DIRS = ("pool", "pool_near_dedup", "recall/round_1", "recall/round_2", "recall/final", "corpus")


def task_counter_plugin() -> SchedulerPlugin:
    # Defined inside a function so cloudpickle ships the class by value to the scheduler process.
    class TaskCounter(SchedulerPlugin):
        """Tasks computed per worker, and the order in which results entered and left memory."""

        name = "task-counter"

        def __init__(self):
            self.by_worker: dict[str, int] = {}
            self.memory_events: list[tuple[str, str]] = []

        def transition(self, key, start, finish, *args, stimulus_id=None, **kwargs):
            if start == "processing" and finish == "memory" and kwargs.get("worker"):
                self.by_worker[kwargs["worker"]] = self.by_worker.get(kwargs["worker"], 0) + 1
            if finish == "memory":
                self.memory_events.append(("in", str(key)))
            elif start == "memory":
                self.memory_events.append(("out", str(key)))

    return TaskCounter()


def tasks_by_worker(client, reset: bool = False) -> dict[str, int]:
    def read(dask_scheduler, reset):
        plugin = dask_scheduler.plugins["task-counter"]
        counts = dict(plugin.by_worker)
        if reset:
            plugin.by_worker.clear()
            plugin.memory_events.clear()
        return counts

    return client.run_on_scheduler(read, reset=reset)


def memory_events(client) -> list[tuple[str, str]]:
    def read(dask_scheduler):
        plugin = dask_scheduler.plugins["task-counter"]
        events = list(plugin.memory_events)
        plugin.memory_events.clear()
        return events

    return client.run_on_scheduler(read)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    cluster = LocalDaskCluster(tmp_path_factory.mktemp("dask"), workers=2, memory_limit="2GB")
    with cluster:
        client = cluster_client(scheduler_file=str(cluster.scheduler_file))
        client.register_plugin(task_counter_plugin())
        yield cluster


def dask_args(cluster: LocalDaskCluster) -> list[str]:
    return ["--runner=beam_pipelines.runners.dask.DaskRunner", f"--dask_scheduler_file={cluster.scheduler_file}"]


# ----------------------------------------------------------------------------------------------
# 1. Features


class SplitByThree(beam.DoFn):
    def process(self, number):
        Metrics.counter("probe", "in").inc()
        Metrics.distribution("probe", "value").update(number)
        yield beam.pvalue.TaggedOutput("three", number) if number % 3 == 0 else number


def counted_before_write(number):
    Metrics.counter("probe", "before_write").inc()
    return str(number)


def build_feature_pipeline(pipeline, out: Path, inputs: Path) -> None:
    numbers = pipeline | beam.Create(list(range(40)))
    split = numbers | beam.ParDo(SplitByThree()).with_outputs("three", main="rest")
    split.rest | "Count" >> beam.Map(counted_before_write) | "Write rest" >> beam.io.WriteToText(f"{out}/rest")
    split.three | "Three" >> beam.Map(str) | "Write three" >> beam.io.WriteToText(f"{out}/three")
    total = numbers | beam.CombineGlobally(sum)
    (
        numbers
        | "With total" >> beam.Map(lambda n, t: f"{n}/{t}", beam.pvalue.AsSingleton(total))
        | "Write side" >> beam.io.WriteToText(f"{out}/side")
    )
    keyed = numbers | "Key" >> beam.Map(lambda n: (n % 4, n))
    (
        keyed
        | beam.GroupByKey()
        | "Group line" >> beam.MapTuple(lambda k, vs: f"{k}:{sorted(vs)}")
        | "Write gbk" >> beam.io.WriteToText(f"{out}/gbk")
    )
    (
        {"a": keyed, "b": numbers | "Key b" >> beam.Map(lambda n: (n % 2, -n))}
        | beam.CoGroupByKey()
        | "Join line" >> beam.MapTuple(lambda k, d: f"{k}:{sorted(d['a'])}:{sorted(d['b'])}")
        | "Write cogbk" >> beam.io.WriteToText(f"{out}/cogbk")
    )
    (
        keyed
        | beam.CombinePerKey(sum)
        | "Sum line" >> beam.MapTuple(lambda k, v: f"{k}={v}")
        | "Write combine" >> beam.io.WriteToText(f"{out}/combine")
    )
    pipeline | beam.io.ReadFromText(f"{inputs}/*.txt") | "Write text" >> beam.io.WriteToText(f"{out}/text")
    (
        pipeline
        | beam.io.ReadFromParquet(f"{inputs}/*.parquet")
        | "Row" >> beam.Map(lambda row: str(row["v"]))
        | "Write parquet" >> beam.io.WriteToText(f"{out}/parquet")
    )
    numbers | beam.Reshuffle() | "Reshuffled" >> beam.Map(str) | "Write reshuffle" >> beam.io.WriteToText(f"{out}/rs")


OUTPUTS = ("rest", "three", "side", "gbk", "cogbk", "combine", "text", "parquet", "rs")


def run_feature_pipeline(args: list[str], out: Path, inputs: Path, client=None):
    pipeline = beam.Pipeline(argv=args)
    build_feature_pipeline(pipeline, out, inputs)
    result = pipeline.run()
    result.wait_until_finish()
    if client is not None:
        # Nothing of the run stays on the cluster once it is done (Dask frees every result).
        def keys_of_run(dask_scheduler, run):
            return [str(key) for key in dask_scheduler.tasks if run in str(key)]

        deadline = time.monotonic() + 60
        while left := client.run_on_scheduler(keys_of_run, run=result.run):
            assert time.monotonic() < deadline, f"still on the scheduler: {left[:5]}"
            time.sleep(0.1)
        assert_intermediates_freed_before_the_end(memory_events(client), result.run)
    lines = {
        name: sorted(line for f in glob.glob(f"{out}/{name}-*") for line in Path(f).read_text().splitlines())
        for name in OUTPUTS
    }
    metrics = result.metrics().query(MetricsFilter().with_namespace("probe"))
    counters = {m.key.metric.name: m.committed for m in metrics["counters"]}
    distributions = {
        m.key.metric.name: (m.committed.sum, m.committed.count, m.committed.max) for m in metrics["distributions"]
    }
    return lines, counters, distributions


def assert_intermediates_freed_before_the_end(events: list[tuple[str, str]], run: str) -> None:
    """Every result of the run (bundles, shuffle buckets, groups, side inputs) left memory before
    the run's final task completed, except the per-stage metric lists that task reads: nothing
    waits for the end of the pipeline to be freed."""
    keys = [(direction, ast.literal_eval(key)) for direction, key in events if run in key]
    done = keys.index(("in", (f"metrics:{run}", 0)))
    entered = [key for direction, key in keys[:done] if direction == "in"]
    held = set(entered) - {key for direction, key in keys[:done] if direction == "out"}
    assert {"bundle", "split", "shuffled"} <= {name.split(":", 1)[0] for name, _ in entered}, entered
    assert held and all(name.startswith("metrics:") and part == "all" for name, part in held), sorted(held)[:10]


def test_every_feature_the_pipelines_use_matches_the_direct_runner(dask_cluster, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.txt").write_text("\n".join(f"line {i}" for i in range(60)) + "\n")
    (inputs / "b.txt").write_text("\n".join(f"other {i}" for i in range(25)) + "\n")
    pq.write_table(pa.table({"v": list(range(30))}), inputs / "a.parquet")

    direct = run_feature_pipeline(["--runner=FnApiRunner"], tmp_path / "direct", inputs)
    client = cluster_client(scheduler_file=str(dask_cluster.scheduler_file))
    dask = run_feature_pipeline(dask_args(dask_cluster), tmp_path / "dask", inputs, client)

    assert dask[0] == direct[0]
    assert len(direct[0]["text"]) == 85 and len(direct[0]["parquet"]) == 30 and len(direct[0]["three"]) == 14
    # Every element once: the Map before the write ran 26 times, not once per consumer or sink.
    assert dask[1] == direct[1] == {"in": 40, "before_write": 26}
    assert dask[2] == direct[2] == {"value": (780, 40, 39)}


class KeepFirst(beam.DoFn):
    SEEN = BagStateSpec("seen", beam.coders.VarIntCoder())

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        yield element


def test_what_the_runner_cannot_run_fails_before_any_work(dask_cluster, tmp_path):
    pipeline = beam.Pipeline(argv=dask_args(dask_cluster))
    written = tmp_path / "never"
    numbers = pipeline | beam.Create([(1, 2), (1, 3)])
    numbers | "Write" >> beam.io.WriteToText(str(written))
    numbers | "Stateful" >> beam.ParDo(KeepFirst())
    with pytest.raises(UnsupportedOnDask) as raised:
        pipeline.run()
    assert str(raised.value) == "beam=dask does not run stateful DoFns: Stateful (KeepFirst)"
    assert not glob.glob(f"{written}*")


# ----------------------------------------------------------------------------------------------
# 2. The chain's corpus stages


def run_chain(work: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(CHAIN),
            *SMALL_CORPUS,
            f"work_dir={work}",
            TRAINING_STAGES,
            RECALL_ONE_THREAD,
            *overrides,
        ],
        cwd=REPO_ROOT,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=1200,
    )


def parquet_ids(pattern: str) -> list[str]:
    return sorted(
        i for path in glob.glob(pattern) for i in pq.read_table(path, columns=["id"]).column("id").to_pylist()
    )


def stage_outputs(stage_dir: Path) -> dict:
    """What a stage produced, free of paths and timings: ids of kept and removed documents per
    step, dead-letter counts per step, the summary's totals and per-step tallies."""
    record = {
        "documents": parquet_ids(f"{stage_dir}/documents/*.parquet"),
        "removed": {p.name: parquet_ids(f"{p}/*.parquet") for p in sorted((stage_dir / "removed").glob("*"))},
        "dead_letter": {
            p.name: sum(len(Path(f).read_text().splitlines()) for f in glob.glob(f"{p}/*.jsonl"))
            for p in sorted((stage_dir / "dead_letter").glob("*"))
        },
    }
    summary_file = stage_dir / "summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        record["totals"], record["steps"] = summary["totals"], summary.get("steps")
        for section in ("lsh", "clusters"):  # dedup's LSH counters (without their timings)
            if section in summary:
                record[section] = {k: v for k, v in summary[section].items() if k != "seconds"}
    return record


@pytest.fixture(scope="module")
def chains(tmp_path_factory, dask_cluster):
    root = tmp_path_factory.mktemp("chains")
    direct = run_chain(root / "direct", "beam_preset=direct_single")
    assert direct.returncode == 0, direct.stdout[-3000:] + direct.stderr[-3000:]
    # The same crawl and seed documents (their record ids are minted when the sample is built).
    for shared in ("sample", "inputs"):
        shutil.copytree(root / "direct" / shared, root / "dask" / shared)
    client = cluster_client(scheduler_file=str(dask_cluster.scheduler_file))
    tasks_by_worker(client, reset=True)
    dask = run_chain(
        root / "dask", "beam_preset=dask", f"beam_overrides=['beam.dask_scheduler_file={dask_cluster.scheduler_file}']"
    )
    assert dask.returncode == 0, dask.stdout[-3000:] + dask.stderr[-3000:]
    return root / "direct", root / "dask", dask.stdout, tasks_by_worker(client)


def test_the_corpus_stages_on_dask_give_what_the_direct_runner_gives(chains):
    direct, dask, stdout, _ = chains
    assert "(runner: DaskRunner on scheduler file " in stdout
    for stage in STAGE_DIRS:
        expected = stage_outputs(direct / stage)
        assert expected["documents"], stage
        assert stage_outputs(dask / stage) == expected, stage
    # The pool had something to remove, so the removed records were compared too.
    assert sum(len(ids) for ids in stage_outputs(direct / "pool")["removed"].values()) > 0
    for name in ("math_corpus", "arithmetic"):
        for suffix in (".bin", ".idx"):
            produced = (dask / "tokenized" / f"{name}{suffix}").read_bytes()
            assert produced and produced == (direct / "tokenized" / f"{name}{suffix}").read_bytes(), (name, suffix)
        assert (
            json.loads((dask / "tokenized" / name / "summary.json").read_text())["totals"]
            == json.loads((direct / "tokenized" / name / "summary.json").read_text())["totals"]
        )


def test_both_workers_ran_tasks(chains):
    *_, counts = chains
    assert len(counts) == 2, counts
    total = sum(counts.values())
    assert total > 1000 and min(counts.values()) > 0.1 * total, counts


# ----------------------------------------------------------------------------------------------
# 3. A worker killed mid-stage


def test_a_worker_killed_mid_stage_is_survived_with_identical_outputs(chains, dask_cluster, tmp_path):
    direct, *_ = chains
    work = tmp_path / "work"
    shutil.copytree(direct / "sample", work / "sample")
    log_path = tmp_path / "prepare.log"
    client = cluster_client(scheduler_file=str(dask_cluster.scheduler_file))
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "beam_pipelines.prepare",
                f"corpus.work_dir={work}",
                "corpus.sample_max_math_pages=60",
                "corpus.sample_max_other_pages=60",
                "beam=dask",
                f"beam.dask_scheduler_file={dask_cluster.scheduler_file}",
            ],
            cwd=REPO_ROOT,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            victim = None
            # The stage that reads the WARC and extracts text: the longest bundles of prepare.
            while victim is None and process.poll() is None:
                for worker, keys in client.processing().items():
                    if any(
                        isinstance(key, tuple) and "Read WARC" in key[0] and key[0].startswith("bundle:")
                        for key in keys
                    ):
                        victim = worker
                time.sleep(0.02)
            assert victim is not None, log_path.read_text()
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
            killed_while_running = process.poll() is None
            returncode = process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
    output = log_path.read_text()
    assert killed_while_running, output
    assert returncode == 0, output
    assert stage_outputs(work / "pool") == stage_outputs(direct / "pool")
    # Outside what was compared, only the temp directory of a file sink whose InitializeWrite was
    # recomputed on the other worker (a new uuid names a second one) may remain.
    pool = work / "pool"
    compared = {*pool.glob("documents/*.parquet"), *pool.glob("removed/*/*.parquet"), pool / "summary.json"}
    compared |= set(pool.glob("dead_letter/*/*.jsonl"))
    others = [p for p in pool.rglob("*") if p.is_file() and p not in compared]
    assert all(any(part.startswith("beam-temp-") for part in p.relative_to(pool).parts) for p in others), others
    # The nanny brings the worker back for whatever runs next.
    client.wait_for_workers(2, timeout=120)
