"""The body of launch/local/chain.py (see there for what the chain does and how to run it): writes
each stage's generated inputs, runs the stages as subprocesses, skips finished ones, and writes the
summary and the report. chain.py checks its config first and loads this afterwards: it imports Beam,
torch and reasoning-gym, which take seconds."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from matplotlib.figure import Figure

from beam_pipelines.sample import ensure_sample_seed_positives, sample_seed_positives_path
from megatron_recipes.config import register_configs
from megatron_recipes.data.config import ChatTemplateConfig
from megatron_recipes.data.rl_prompts import PromptStream, distinct_records, drop_overlapping
from megatron_recipes.evaluation.datasets import load_problems
from megatron_recipes.training.metrics import read_metrics
from stack_common.cli import compose_config

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every stage's settings other than paths and sizes live in its preset under conf/
# (experiment/chain_<stage>.yaml, source/arithmetic.yaml). The GRPO stage's composition also names
# the arithmetic task of the chain's generated inputs: its `prompts` (the train side of the
# question split) and `eval_prompts` (the held-out side).
GRPO_PRESET = "+experiment=chain_grpo"
# Seeds of the other training inputs drawn from that task's train side (GRPO draws with its own).
ARITHMETIC_TEXT_SEED = 7
SFT_DATA_SEED = 99
# Each evaluate stage scores its checkpoint twice on the held-out set: greedy, and sampled as GRPO samples.
EVALUATIONS = {"greedy": "+experiment=chain_evaluate", "sampled": "+experiment=chain_evaluate_sampled"}


class StageFailed(Exception):
    pass


class Chain:
    def __init__(self, config, stages: tuple[str, ...]):
        self.config = config
        self.stages = stages
        self.size = config.chain_size
        self.work = Path(config.work_dir).resolve()
        self.inputs = self.work / "inputs"
        self.logs = self.work / "logs"
        self.timings: dict[str, dict] = {}

    # -- paths -----------------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    def outputs_of(self, stage: str) -> list[Path]:
        return {
            "prepare": [self.path("pool")],
            "dedup": [self.path("pool_near_dedup")],
            "recall": [self.path("recall")],
            "decontaminate": [self.path("corpus")],
            "train_tokenizer": [self.path("tokenizer")],
            "tokenize": [self.path("tokenized")],
            "pretrain": [self.path("pretrain")],
            "sft": [self.path("sft")],
            "evaluate_sft": [self.path("evaluate", "sft")],
            "grpo": [self.path("grpo")],
            "evaluate_grpo": [self.path("evaluate", "grpo")],
        }[stage]

    def training_finished(self, run: str, steps: int) -> bool:
        status = self.path(run, "checkpoints", "exit_status.json")
        if not status.exists():
            return False
        info = json.loads(status.read_text())
        return info.get("reason") == "finished" and info.get("iteration") == steps

    def done(self, stage: str) -> bool:
        size = self.size
        markers = {
            "prepare": lambda: self.path("pool", "summary.json").exists(),
            "dedup": lambda: self.path("pool_near_dedup", "summary.json").exists(),
            "recall": lambda: self.path("recall", "final", "summary.json").exists(),
            "decontaminate": lambda: self.path("corpus", "summary.json").exists(),
            "train_tokenizer": lambda: self.path("tokenizer", "tokenizer.json").exists(),
            "tokenize": lambda: all(
                self.path("tokenized", name, "summary.json").exists() for name in ("math_corpus", "arithmetic")
            ),
            "pretrain": lambda: self.training_finished("pretrain", size.pretrain_steps),
            "sft": lambda: self.training_finished("sft", size.sft_steps),
            "evaluate_sft": lambda: self.evaluated("sft"),
            "grpo": lambda: self.training_finished("grpo", size.grpo_steps),
            "evaluate_grpo": lambda: self.evaluated("grpo"),
        }
        return markers[stage]()

    def evaluated(self, run: str) -> bool:
        return all(self.path("evaluate", run, kind, "results.json").exists() for kind in EVALUATIONS)

    # -- inputs the chain generates (not pipelines: seed data and benchmark files) -----------------
    def seed_positives_path(self) -> str:
        return sample_seed_positives_path(str(self.inputs), self.size.sample_math_pages, self.size.seed_positive_pages)

    def benchmark_paths(self) -> dict[str, Path]:
        directory = self.inputs / "benchmarks"
        return {"champ": directory / "champ.jsonl", "arithmetic_heldout": directory / "arithmetic_heldout.jsonl"}

    def held_out_check_path(self) -> Path:
        return self.inputs / "benchmarks" / "arithmetic_heldout_check.json"

    def arithmetic_text_path(self) -> Path:
        return self.inputs / "arithmetic_text.jsonl"

    def sft_data_path(self) -> Path:
        return self.inputs / f"sft-{self.size.sft_examples}.jsonl"

    @functools.cached_property
    def grpo_config(self):
        """The GRPO stage's composition: its `prompts` name the task every generated input is drawn
        from, its `eval_prompts` the held-out side of the question split."""
        return compose_config("grpo", [GRPO_PRESET], register_configs)

    def training_sources(self) -> dict:
        """Every training set the chain draws from GRPO's task: name -> (source, questions used)."""
        grpo, size = self.grpo_config, self.size
        return {
            "pretraining_text": (
                replace(grpo.prompts, seed=ARITHMETIC_TEXT_SEED, limit=None),
                size.arithmetic_documents,
            ),
            "sft": (replace(grpo.prompts, seed=SFT_DATA_SEED, limit=None), size.sft_examples),
            "grpo_prompts": (grpo.prompts, size.grpo_steps * grpo.rl.questions_per_step),
        }

    def write_inputs(self, stage: str) -> None:
        """Write what `stage` reads besides earlier stages' outputs (each file once)."""
        if stage == "recall":
            ensure_sample_seed_positives(str(self.inputs), self.size.sample_math_pages, self.size.seed_positive_pages)
        elif stage in ("decontaminate", "evaluate_sft", "grpo", "evaluate_grpo"):
            self.write_benchmark_files()
        elif stage == "tokenize":
            self.write_arithmetic_text()

    def write_benchmark_files(self) -> None:
        """CHAMP (ships with the champ-dataset package) and the chain's own held-out arithmetic set,
        both as GSM8K-format JSONL: the decontamination benchmarks and the evaluation set (which is
        also GRPO's held-out check)."""
        paths = self.benchmark_paths()
        paths["champ"].parent.mkdir(parents=True, exist_ok=True)
        if not paths["champ"].exists():
            rows = [
                {"question": p.question, "answer": f"{p.solution}\n#### {p.answers[0]}".strip()}
                for p in load_problems("champ")
            ]
            _write_jsonl(paths["champ"], rows)
        if not paths["arithmetic_heldout"].exists():
            held_out, check = self.held_out_set()
            rows = [
                {"question": r.question, "answer": f"{r.question} is {r.answer}.\n#### {r.answer}"} for r in held_out
            ]
            self.held_out_check_path().write_text(json.dumps(check, indent=2) + "\n")
            _write_jsonl(paths["arithmetic_heldout"], rows)

    def held_out_set(self) -> tuple[list, dict]:
        """The first eval_questions questions of the held-out side (distinct), less any that occurs in a
        training set (the split rule makes that none; the check is what proves it), and the check's
        record: candidates, kept, removed per training set, the size of each training set."""
        # The task repeats questions within a stream (a few thousand distinct ones): draw four times
        # as many and keep the first eval_questions distinct ones.
        wanted = self.size.eval_questions
        source = replace(self.grpo_config.eval_prompts, limit=4 * wanted)
        candidates = distinct_records(PromptStream(source, ChatTemplateConfig()).take(0, 4 * wanted))[:wanted]
        training = {
            name: [r.question for r in PromptStream(training_source, ChatTemplateConfig()).take(0, count)]
            for name, (training_source, count) in self.training_sources().items()
        }
        held_out, removed = drop_overlapping(candidates, training)
        check = {
            "questions": len(held_out),
            "candidates": len(candidates),
            "split": source.split,
            "held_out_fraction": source.held_out_fraction,
            "overlaps_dropped": removed,
            "training_questions": {name: len(questions) for name, questions in training.items()},
        }
        if removed["total"]:
            print(
                f"[chain] held-out set: {removed['total']} of {len(candidates)} questions are training questions"
                f" ({removed}); they are left out",
                flush=True,
            )
        return held_out, check

    def write_arithmetic_text(self) -> None:
        """Plain arithmetic text for the pretraining mixture (the tiny model's "non-web" source):
        worked sums phrased like the SFT answers, from the task's train side with its own seed."""
        path = self.arithmetic_text_path()
        if path.exists():
            return

        source, count = self.training_sources()["pretraining_text"]
        rows = [
            {
                "id": f"arith-{i}",
                "text": f"{r.question} {r.question[len('Calculate ') :].rstrip('.')} = {r.answer}.",
            }
            for i, r in enumerate(PromptStream(source, ChatTemplateConfig()).take(0, count))
        ]
        _write_jsonl(path, rows)

    # -- the stages' commands ----------------------------------------------------------------------
    def commands(self, stage: str) -> list[list[str]]:
        """`[module, *arguments]` per command of `stage`: the preset that holds the stage's settings,
        then paths and sizes. The user's `overrides.<stage>` are added by `with_user_overrides`."""
        w, size = str(self.work), self.size
        corpus = [f"corpus.work_dir={w}", f"beam={self.config.beam_preset}", *self.config.beam_overrides]
        tokenizer = str(self.path("tokenizer"))
        if stage == "prepare":
            return [
                [
                    "beam_pipelines.prepare",
                    *corpus,
                    f"corpus.sample_max_math_pages={size.sample_math_pages}",
                    f"corpus.sample_max_other_pages={size.sample_other_pages}",
                ]
            ]
        if stage == "dedup":
            return [["beam_pipelines.dedup", *corpus]]
        if stage == "recall":
            return [
                [
                    "beam_pipelines.recall",
                    "+experiment=chain_recall",
                    *corpus,
                    f"training.seed_positives=[{self.seed_positives_path()}]",
                    f"max_rounds={size.recall_max_rounds}",
                ]
            ]
        if stage == "decontaminate":
            listing = ",".join(
                f"{{name:{name},path:'{path}',format:gsm8k}}" for name, path in self.benchmark_paths().items()
            )
            return [["beam_pipelines.decontaminate", *corpus, f"benchmarks=[{listing}]"]]
        if stage == "train_tokenizer":
            return [
                ["beam_pipelines.train_tokenizer", f"corpus.work_dir={w}", f"vocab_size={size.tokenizer_vocab_size}"]
            ]
        if stage == "tokenize":
            return [
                ["beam_pipelines.tokenize", *corpus, f"tokenizer.path={tokenizer}"],
                [
                    "beam_pipelines.tokenize",
                    *corpus,
                    f"tokenizer.path={tokenizer}",
                    "source=arithmetic",
                    f"source.input={self.arithmetic_text_path()}",
                ],
            ]
        if stage == "pretrain":
            return [
                [
                    "megatron_recipes.pretrain",
                    "+experiment=chain_pretrain",
                    f"corpus.work_dir={w}",
                    f"data.tokenizer={tokenizer}",
                    f"trainer.train_steps={size.pretrain_steps}",
                    f"trainer.output_dir={self.path('pretrain')}",
                ]
            ]
        if stage == "sft":
            source, count = self.training_sources()["sft"]
            data = str(self.sft_data_path())
            generate = [
                "megatron_recipes.data.rl_prompts",
                *("--out", data, "--count", str(count), "--seed", str(source.seed)),
                *("--split", source.split, "--held-out-fraction", str(source.held_out_fraction)),
                *source.tasks,
            ]
            return [
                generate,
                [
                    "megatron_recipes.sft",
                    "+experiment=chain_sft",
                    f"sft_data.paths=[{data}]",
                    f"sft_data.tokenizer={tokenizer}",
                    f"checkpoint.init_from={self.path('pretrain', 'checkpoints')}",
                    f"trainer.train_steps={size.sft_steps}",
                    f"trainer.output_dir={self.path('sft')}",
                ],
            ]
        if stage in ("evaluate_sft", "evaluate_grpo"):
            run = stage.split("_")[1]
            return [
                [
                    "megatron_recipes.evaluate",
                    preset,
                    f"dataset.path={self.benchmark_paths()['arithmetic_heldout']}",
                    f"generator.checkpoint={self.path(run, 'checkpoints')}",
                    f"output_dir={self.path('evaluate', run, kind)}",
                ]
                for kind, preset in EVALUATIONS.items()
            ]
        if stage == "grpo":
            # GRPO's held-out check is the chain's held-out set, checked against every training set.
            return [
                [
                    "megatron_recipes.grpo",
                    GRPO_PRESET,
                    f"checkpoint.init_from={self.path('sft', 'checkpoints')}",
                    f"trainer.train_steps={size.grpo_steps}",
                    f"trainer.output_dir={self.path('grpo')}",
                    "eval_prompts.source=gsm8k",
                    f"eval_prompts.path={self.benchmark_paths()['arithmetic_heldout']}",
                    "eval_prompts.split=all",
                ]
            ]
        raise AssertionError(stage)

    def with_user_overrides(self, stage: str) -> list[list[str]]:
        """The stage's commands with `overrides.<stage>` appended to its last Hydra command."""
        commands = self.commands(stage)
        *earlier, last = commands
        return [*earlier, [*last, *self.config.overrides.get(stage, [])]]

    # -- running -----------------------------------------------------------------------------------
    def run_command(self, stage: str, module_and_args: list[str], log) -> None:
        module, *arguments = module_and_args
        command = [sys.executable, "-m", module, *arguments]
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), environment.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        environment.setdefault("OMP_NUM_THREADS", str(max(1, os.cpu_count() or 1)))
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        tail: list[str] = []
        for line in process.stdout:
            log.write(line)
            tail = (tail + [line.rstrip()])[-15:]
            if self.config.verbose or _is_progress(line):
                print(f"    {line.rstrip()}", flush=True)
        code = process.wait()
        log.flush()
        if code != 0:
            last = next((line for line in reversed(tail) if line.strip()), "")
            raise StageFailed(f"stage {stage} failed (exit {code}): {last.strip()[:300]} | log: {log.name}")

    def print_commands(self) -> int:
        """dry_run=true: every stage's commands as a shell script, in order; stages that a run
        would skip (skip=, or finished and not forced) are commented out."""
        redo_from = self.redo_from()
        print(f"# chain: work dir {self.work} | sizes {self.size.name}")
        for number, stage in enumerate(self.stages, 1):
            skipped = stage in self.config.skip
            finished = not skipped and (redo_from is None or number - 1 < redo_from) and self.done(stage)
            note = (
                " (skipped: skip=)" if skipped else f" (skipped: done, {self.marker_text(stage)})" if finished else ""
            )
            print(f"# {number:2d}/{len(self.stages)} {stage}{note}")
            for module, *arguments in self.with_user_overrides(stage):
                line = shlex.join([sys.executable, "-m", module, *arguments])
                print(f"# {line}" if note else line)
        return 0

    def redo_from(self) -> int | None:
        """Index of the first stage that force= or from_stage= reruns (None: none)."""
        config = self.config
        return min(
            [self.stages.index(s) for s in [*config.force, *([config.from_stage] if config.from_stage else [])]],
            default=None,
        )

    def run(self) -> int:
        if self.config.dry_run:
            return self.print_commands()
        config = self.config
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        redo_from = self.redo_from()
        started = time.time()
        print(f"[chain] work dir {self.work} | sizes {self.size.name} | stages {' -> '.join(self.stages)}", flush=True)
        for number, stage in enumerate(self.stages, 1):
            prefix = f"[chain] {number:2d}/{len(self.stages)} {stage:<15}"
            if stage in config.skip:
                print(f"{prefix} skipped (skip=)", flush=True)
                continue
            if redo_from is not None and number - 1 >= redo_from:
                for output in self.outputs_of(stage):
                    shutil.rmtree(output, ignore_errors=True)
            elif self.done(stage):
                print(f"{prefix} skipped (done: {self.marker_text(stage)}) | {self.describe(stage)}", flush=True)
                continue
            print(f"{prefix} running ...", flush=True)
            stage_start = time.time()
            log_path = self.logs / f"{number:02d}_{stage}.log"
            try:
                self.write_inputs(stage)
                with open(log_path, "a", encoding="utf-8") as log:
                    for command in self.with_user_overrides(stage):
                        self.run_command(stage, command, log)
            except StageFailed as error:
                print(f"[chain] error: {error}", file=sys.stderr, flush=True)
                return 1
            if not self.done(stage):
                print(
                    f"[chain] error: stage {stage} exited 0 but its completion marker is missing "
                    f"({self.marker_text(stage)}) | log: {log_path}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            seconds = time.time() - stage_start
            self.timings[stage] = {"seconds": round(seconds, 1)}
            print(f"{prefix} done in {seconds:.1f} s | {self.describe(stage)}", flush=True)
        summary = self.summary(time.time() - started)
        (self.work / "chain_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.write_report(summary)
        self.print_summary(summary)
        return 0

    def marker_text(self, stage: str) -> str:
        return {
            "prepare": "pool/summary.json",
            "dedup": "pool_near_dedup/summary.json",
            "recall": "recall/final/summary.json",
            "decontaminate": "corpus/summary.json",
            "train_tokenizer": "tokenizer/tokenizer.json",
            "tokenize": "tokenized/<source>/summary.json",
            "pretrain": "pretrain/checkpoints/exit_status.json",
            "sft": "sft/checkpoints/exit_status.json",
            "evaluate_sft": "evaluate/sft/{greedy,sampled}/results.json",
            "grpo": "grpo/checkpoints/exit_status.json",
            "evaluate_grpo": "evaluate/grpo/{greedy,sampled}/results.json",
        }[stage]

    # -- reading the stages' outputs ---------------------------------------------------------------
    def read_json(self, *parts: str) -> dict:
        return json.loads(self.path(*parts).read_text())

    def metrics(self, run: str) -> dict[int, dict]:
        path = self.path(run, "metrics.jsonl")
        return read_metrics(path) if path.exists() else {}

    def describe(self, stage: str) -> str:
        try:
            if stage in ("prepare", "dedup", "decontaminate"):
                directory = {"prepare": "pool", "dedup": "pool_near_dedup", "decontaminate": "corpus"}[stage]
                totals = self.read_json(directory, "summary.json")["totals"]
                return (
                    f"{totals['in']:,} in -> {totals['kept']:,} kept, {totals.get('dropped', 0):,} removed, "
                    f"{totals.get('dead_lettered', 0):,} dead-lettered"
                )
            if stage == "recall":
                final = self.read_json("recall", "final", "summary.json")
                return (
                    f"{len(final['rounds'])} rounds (stopped: {final['stop_reason']}), {final['totals']['kept']:,} of "
                    f"{final['totals']['in']:,} pages selected, {final['selected_tokens']:,} tokens"
                )
            if stage == "train_tokenizer":
                vocabulary = json.loads(self.path("tokenizer", "tokenizer.json").read_text())["model"]["vocab"]
                return f"byte-level BPE, {len(vocabulary):,} tokens"
            if stage == "tokenize":
                parts = [
                    f"{name} {self.read_json('tokenized', name, 'summary.json')['dataset']['tokens']:,} tokens"
                    for name in ("math_corpus", "arithmetic")
                ]
                return ", ".join(parts)
            if stage in ("pretrain", "sft", "grpo"):
                rows = self.metrics(stage)
                steps = sorted(step for step, row in rows.items() if "loss" in row)
                text = (
                    f"{steps[-1]} steps, loss {rows[steps[0]]['loss']:.3f} -> {rows[steps[-1]]['loss']:.3f}"
                    if steps
                    else "no metrics"
                )
                if stage == "grpo":
                    validation = [
                        (s, r["validation_accuracy"]) for s, r in sorted(rows.items()) if "validation_accuracy" in r
                    ]
                    rewards = [rows[s]["reward_mean"] for s in steps if "reward_mean" in rows[s]]
                    text = (
                        f"{len(steps)} steps, reward {rewards[0]:.3f} -> {rewards[-1]:.3f}, held-out accuracy "
                        f"{validation[0][1]:.3f} -> {validation[-1][1]:.3f}"
                    )
                return text
            if stage.startswith("evaluate"):
                run = stage.split("_")[1]
                greedy, sampled = (
                    self.read_json("evaluate", run, kind, "results.json")["summary"] for kind in EVALUATIONS
                )
                return (
                    f"accuracy greedy {greedy['accuracy']:.3f}, sampled {sampled['accuracy']:.3f} "
                    f"({sampled['samples_per_problem']} per question, T=1) on {greedy['problems']} held-out problems"
                )
        except (OSError, KeyError, IndexError, ValueError) as error:
            return f"(no figures: {type(error).__name__}: {error})"
        return ""

    def summary(self, seconds: float) -> dict:
        out: dict = {
            "work_dir": str(self.work),
            "sizes": self.size.name,
            "seconds": round(seconds, 1),
            "stage_seconds": self.timings,
            "stages": {stage: self.describe(stage) for stage in self.stages if stage not in self.config.skip},
        }
        try:
            pool, dedup = self.read_json("pool", "summary.json"), self.read_json("pool_near_dedup", "summary.json")
            final, corpus = self.read_json("recall", "final", "summary.json"), self.read_json("corpus", "summary.json")
            out["pages"] = {
                "warc_html_records": pool["totals"]["in"],
                "pool": pool["totals"]["kept"],
                "after_near_dedup": dedup["totals"]["kept"],
                "selected_by_recall": final["totals"]["kept"],
                "after_decontamination": corpus["totals"]["kept"],
            }
            out["recall"] = {
                "rounds": final["rounds"],
                "stop_reason": final["stop_reason"],
                "report": str(self.path("recall", "report.html")),
            }
            out["tokens"] = {
                name: self.read_json("tokenized", name, "summary.json")["dataset"]["tokens"]
                for name in ("math_corpus", "arithmetic")
            }
        except (OSError, KeyError) as error:
            out["corpus_error"] = str(error)
        curves = {}
        for run, key in (("pretrain", "loss"), ("sft", "loss"), ("grpo", "reward_mean")):
            rows = self.metrics(run)
            curves[run] = [[step, row[key]] for step, row in sorted(rows.items()) if key in row]
        curves["grpo_heldout_accuracy"] = [
            [s, r["validation_accuracy"]] for s, r in sorted(self.metrics("grpo").items()) if "validation_accuracy" in r
        ]
        out["curves"] = curves
        evaluation = {}
        for run in ("sft", "grpo"):
            if self.evaluated(run):
                evaluation[f"after_{run}"] = {
                    kind: self.read_json("evaluate", run, kind, "results.json")["summary"]["accuracy"]
                    for kind in EVALUATIONS
                }
        out["evaluation_accuracy"] = evaluation
        if self.evaluated("sft"):
            sampled = self.read_json("evaluate", "sft", "sampled", "results.json")["summary"]
            out["evaluation_sampling"] = {"temperature": 1.0, "samples_per_question": sampled["samples_per_problem"]}
        if self.held_out_check_path().exists():
            out["held_out"] = json.loads(self.held_out_check_path().read_text())
        out["tensorboard"] = [str(self.path(run, "tensorboard")) for run in ("pretrain", "sft", "grpo")]
        out["report"] = str(self.work / "chain_report.html")
        return out

    def save_curves(self, figure: Figure, dpi: int) -> str:
        """Write the figure to chain_curves.png; returns it base64-encoded for the HTML report."""
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        (self.work / "chain_curves.png").write_bytes(buffer.getvalue())
        return base64.b64encode(buffer.getvalue()).decode()

    def write_report(self, summary: dict) -> None:
        # Two by two, so that the image keeps a readable size when the page scales it to its width.
        figure = Figure(figsize=(10, 6.4))
        axes = figure.subplots(2, 2)
        titles = {
            "pretrain": "pretrain loss",
            "sft": "SFT loss",
            "grpo": "GRPO mean reward (training questions)",
            "grpo_heldout_accuracy": "GRPO held-out accuracy (sampled)",
        }
        for axis, (name, title) in zip(axes.flat, titles.items()):
            points = summary["curves"].get(name) or []
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
            axis.set_title(title)
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
        image = self.save_curves(figure, dpi=100)
        rows = stage_rows(summary)
        pages = "".join(f"<tr><td>{k}</td><td>{v:,}</td></tr>" for k, v in summary.get("pages", {}).items())
        recall = summary.get("recall", {})
        rounds = "".join(
            f"<tr><td>{r['round']}</td><td>{r['selected_pages']}</td><td>{r['selected_tokens']:,}</td>"
            f"<td>{_fraction(r['overlap_fraction'])}</td></tr>"
            for r in recall.get("rounds", [])
        )
        html = f"""<!doctype html><html><head><meta charset="utf-8"><title>chain report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;margin:2em;max-width:72em}}td,th{{border:1px solid #ccc;padding:3px 8px}}
table{{border-collapse:collapse;margin-bottom:1.5em}}td.number{{text-align:right}}
img{{display:block;max-width:100%;height:auto}}</style></head><body>
<h1>DeepSeekMath chain on {_escape(summary["work_dir"])}</h1>
<p>sizes {summary["sizes"]}, {summary["seconds"]:.0f} s.</p>
<h2>Evaluation on the held-out set</h2>{_accuracy_table(summary)}{_held_out_text(summary)}
<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th><th>result</th></tr>{rows}</table>
<h2>Pages</h2><table>{pages}</table>
<h2>Recall rounds (stopped: {_escape(str(recall.get("stop_reason")))};
<a href="recall/report.html">corpus report</a>)</h2>
<table><tr><th>round</th><th>selected pages</th><th>tokens</th><th>overlap with previous</th></tr>{rounds}</table>
<h2>Training</h2><img src="data:image/png;base64,{image}" alt="training curves">
<p>TensorBoard: <code>tensorboard --logdir {_escape(str(self.work))}</code></p></body></html>"""
        (self.work / "chain_report.html").write_text(html)

    def print_summary(self, summary: dict) -> None:
        print(f"[chain] finished in {summary['seconds']:.0f} s", flush=True)
        pages = summary.get("pages", {})
        if pages:
            print("[chain] pages: " + " -> ".join(f"{k} {v:,}" for k, v in pages.items()))
            recall = summary["recall"]
            print(
                f"[chain] recall: {len(recall['rounds'])} rounds, stopped by {recall['stop_reason']}; "
                f"report {recall['report']}"
            )
            print("[chain] tokens: " + ", ".join(f"{k} {v:,}" for k, v in summary["tokens"].items()))
        for run in ("pretrain", "sft"):
            curve = summary["curves"].get(run) or []
            if curve:
                print(
                    f"[chain] {run} loss: {curve[0][1]:.3f} (step {curve[0][0]}) -> "
                    f"{curve[-1][1]:.3f} (step {curve[-1][0]})"
                )
        rewards, accuracy = summary["curves"].get("grpo") or [], summary["curves"].get("grpo_heldout_accuracy") or []
        if rewards:
            print(
                f"[chain] GRPO mean reward: {rewards[0][1]:.3f} -> {rewards[-1][1]:.3f}; "
                "held-out accuracy during GRPO: " + ", ".join(f"{a:.3f}@{s}" for s, a in accuracy)
            )
        evaluation, held_out = summary["evaluation_accuracy"], summary.get("held_out", {})
        if evaluation:
            sampling = summary.get("evaluation_sampling", {})
            for kind in EVALUATIONS:
                how = (
                    "greedy"
                    if kind == "greedy"
                    else f"sampled (T=1, {sampling.get('samples_per_question')} per question)"
                )
                print(
                    f"[chain] evaluation, {how}, on {held_out.get('questions', '?')} held-out questions: "
                    + " -> ".join(f"{run} {values[kind]:.3f}" for run, values in evaluation.items())
                )
        if held_out:
            print(
                f"[chain] held-out set: {held_out['questions']} questions of the held-out split; "
                f"{held_out['overlaps_dropped']['total']} dropped as training questions "
                f"(checked against {', '.join(f'{k} {v:,}' for k, v in held_out['training_questions'].items())})"
            )
        print(
            f"[chain] report {summary['report']}; summary {self.work / 'chain_summary.json'}; "
            f"TensorBoard: tensorboard --logdir {self.work}",
            flush=True,
        )


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    partial.replace(path)


def _accuracy_table(summary: dict) -> str:
    """Greedy and sampled accuracy after SFT and after GRPO, and GRPO's gain, as an HTML table."""
    evaluation = summary.get("evaluation_accuracy") or {}
    if not evaluation:
        return "<p>No evaluation ran.</p>"
    samples = summary.get("evaluation_sampling", {}).get("samples_per_question")
    header = f"<tr><th>model</th><th>greedy</th><th>sampled (T=1, {samples} per question)</th></tr>"
    rows = [
        f"<tr><td>after {run.removeprefix('after_').upper()}</td>"
        + "".join(f'<td class="number">{values[kind]:.3f}</td>' for kind in EVALUATIONS)
        + "</tr>"
        for run, values in evaluation.items()
    ]
    if {"after_sft", "after_grpo"} <= set(evaluation):
        gains = [100 * (evaluation["after_grpo"][kind] - evaluation["after_sft"][kind]) for kind in EVALUATIONS]
        rows.append(
            "<tr><td>GRPO gain (points)</td>" + "".join(f'<td class="number">{g:+.1f}</td>' for g in gains) + "</tr>"
        )
    return f"<table>{header}{''.join(rows)}</table>"


def _held_out_text(summary: dict) -> str:
    held_out = summary.get("held_out")
    if not held_out:
        return ""
    checked = ", ".join(f"{name} ({count:,} questions)" for name, count in held_out["training_questions"].items())
    return (
        f"<p>{held_out['questions']} held-out questions (the {held_out['split']} side of the question split, "
        f"fraction {held_out['held_out_fraction']}), checked against every training set: {_escape(checked)}; "
        f"{held_out['overlaps_dropped']['total']} dropped as training questions.</p>"
    )


def _fraction(value) -> str:
    return "" if value is None else f"{value:.3f}"


def stage_rows(summary: dict) -> str:
    """The report's table rows: each stage, its seconds (or skipped) and its one-line result."""
    return "".join(
        f"<tr><td>{stage}</td><td>{summary['stage_seconds'].get(stage, {}).get('seconds', 'skipped')}</td>"
        f"<td>{_escape(text)}</td></tr>"
        for stage, text in summary["stages"].items()
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_PIPELINE_LINE = re.compile(r"^\[[a-z_]+\] ")  # "[recall] round 2: ...", not Hydra's "[2026-..." log lines


def _is_progress(line: str) -> bool:
    # The corpus pipelines' own progress lines ("[recall] round 2: ...") and the trainers' step and
    # validation lines; Beam's and libraries' chatter stays in the log.
    return (
        bool(_PIPELINE_LINE.match(line)) or " step " in line or "validation at step" in line or line.startswith("error")
    )
