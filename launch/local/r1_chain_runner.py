"""The body of `python launch/local/chain.py chain=r1` (DeepSeek-R1's stages on the R1 CPU task;
see R1Chain): the DeepSeekMath chain's runner (chain_runner.Chain: markers, resume, force/skip,
logs, dry run) with the R1 stages' commands, markers and summary. chain.py checks its config
first and loads this afterwards.

Cost: the stages' own (each a subprocess); reading the outputs is linear in the metrics rows."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from launch.local.chain_runner import Chain, _escape, stage_rows

# Held-out accuracy after each stage: a GRPO run measures its starting checkpoint at step 0 and
# itself at the end (rl.eval_interval, greedy, the task's held-out file), so the RL stages report
# the stage before them too; the distilled student, which no RL run starts from, is evaluated by
# megatron_recipes.evaluate on the same file.
R1_ACCURACY_SOURCES = {
    "cold_start": ("reasoning_rl", "first"),
    "reasoning_rl": ("reasoning_rl", "last"),
    "sft": ("final_rl", "first"),
    "final_rl": ("final_rl", "last"),
    "student_pretrain": ("student_rl", "first"),
    "student_rl": ("student_rl", "last"),
}
# Per-step reward metrics that are not one reward's mean.
R1_REWARD_SUMMARIES = ("reward_mean", "reward_std")
# Samples per question of the R1 RL stages (rl.group_size of rl=r1_zero_tiny_cpu and the presets on it).
R1_GROUP_SIZE = 8
R1_TRAINING_RUNS = (
    "pretrain",
    "cold_start",
    "reasoning_rl",
    "sft",
    "final_rl",
    "student_pretrain",
    "distill",
    "student_rl",
)


class R1Chain(Chain):
    """`chain=r1`: DeepSeek-R1's pipeline on the R1 CPU task (megatron_recipes/data/r1_tasks.py),
    every stage a real subprocess with its preset (+experiment=r1_*_tiny_cpu):

      task              megatron_recipes.data.r1_tasks     the task's files -> task/ (held-out sums checked disjoint)
      tokenize          beam_pipelines.train_tokenizer, tokenize   the base text -> tokenizer/, tokenized/
      pretrain          megatron_recipes.pretrain          the tiny base model (a small share of tag-format text)
      cold_start        megatron_recipes.sft               readable long chains (reasoning, then summary)
      reasoning_rl      megatron_recipes.grpo              think_accuracy + think_format + language_consistency
      rejection_sample  megatron_recipes.rejection_sample  k samples per training question from reasoning_rl
      sft               megatron_recipes.sft               the kept samples + general data, from the base model
      final_rl          megatron_recipes.grpo              reasoning and general prompts (general_preference)
      student_pretrain  megatron_recipes.pretrain          a smaller Qwen2-style student (q/k/v bias, 2 layers)
      distill           megatron_recipes.sft               the student on the teacher's SFT data (kept + general)
      evaluate_distill  megatron_recipes.evaluate          the distilled student on the held-out questions
      student_rl        megatron_recipes.grpo              R1-Zero GRPO on the student, as many optimizer steps

    Same markers, resume, force/skip/from_stage, logs, dry run, summary and report as the
    DeepSeekMath chain; the summary's `heldout_accuracy` gives the accuracy after each stage and
    `distillation_vs_rl` the student comparison at equal optimizer steps."""

    def task_path(self, name: str) -> Path:
        return self.path("task", f"{name}.jsonl")

    def outputs_of(self, stage: str) -> list[Path]:
        if stage == "tokenize":
            return [self.path("tokenizer"), self.path("tokenized")]
        if stage == "evaluate_distill":
            return [self.path("evaluate", "distill")]
        return [self.path(stage)]

    def marker_text(self, stage: str) -> str:
        if stage == "task":
            return "task/manifest.json"
        if stage == "tokenize":
            return "tokenized/r1_text/summary.json"
        if stage == "rejection_sample":
            return "rejection_sample/summary.json"
        if stage == "evaluate_distill":
            return "evaluate/distill/results.json"
        return f"{stage}/checkpoints/exit_status.json"

    def steps_of(self, run: str) -> int:
        size = self.size
        return {
            "pretrain": size.r1_pretrain_steps,
            "cold_start": size.r1_cold_start_steps,
            "reasoning_rl": size.r1_rl_steps,
            "sft": size.r1_sft_steps,
            "final_rl": size.r1_final_rl_steps,
            "student_pretrain": size.r1_student_pretrain_steps,
            "distill": size.r1_student_steps,
            "student_rl": size.r1_student_steps,
        }[run]

    def done(self, stage: str) -> bool:
        if stage in R1_TRAINING_RUNS:
            return self.training_finished(stage, self.steps_of(stage))
        return self.path(self.marker_text(stage)).exists()

    def write_inputs(self, stage: str) -> None:
        """Everything the R1 chain reads is written by its `task` stage."""

    def commands(self, stage: str) -> list[list[str]]:
        size, tokenizer = self.size, str(self.path("tokenizer"))
        heldout = f"eval_prompts.path={self.task_path('prompts_heldout')}"

        def training(run: str, init: str | None) -> list[str]:
            start = [f"checkpoint.init_from={self.path(init, 'checkpoints')}"] if init else []
            return [*start, f"trainer.train_steps={self.steps_of(run)}", f"trainer.output_dir={self.path(run)}"]

        if stage == "task":
            return [
                [
                    "megatron_recipes.data.r1_tasks",
                    *("--out", str(self.path("task"))),
                    *("--pretrain-documents", str(size.r1_pretrain_documents)),
                    *("--train-prompts", str(size.r1_train_prompts)),
                    *("--heldout-prompts", str(size.r1_heldout_questions)),
                    *("--cold-start", str(size.r1_cold_start_chains)),
                ]
            ]
        if stage == "tokenize":
            source = [
                "source=arithmetic",
                "source.name=r1_text",
                f"source.input={self.task_path('pretrain_text')}",
            ]
            return [
                [
                    "beam_pipelines.train_tokenizer",
                    f"corpus.work_dir={self.work}",
                    *source,
                    f"vocab_size={size.r1_tokenizer_vocab_size}",
                    f"output_dir={tokenizer}",
                ],
                [
                    "beam_pipelines.tokenize",
                    f"corpus.work_dir={self.work}",
                    f"beam={self.config.beam_preset}",
                    *self.config.beam_overrides,
                    f"tokenizer.path={tokenizer}",
                    *source,
                ],
            ]
        if stage in ("pretrain", "student_pretrain"):
            preset = "+experiment=r1_base_tiny_cpu" if stage == "pretrain" else "+experiment=r1_student_base_tiny_cpu"
            return [
                [
                    "megatron_recipes.pretrain",
                    preset,
                    f"corpus.work_dir={self.work}",
                    f"data.tokenizer={tokenizer}",
                    *training(stage, None),
                ]
            ]
        if stage == "cold_start":
            return [
                [
                    "megatron_recipes.sft",
                    "+experiment=r1_cold_start_tiny_cpu",
                    f"sft_data.paths=[{self.task_path('cold_start')}]",
                    f"sft_data.tokenizer={tokenizer}",
                    *training(stage, "pretrain"),
                ]
            ]
        if stage in ("reasoning_rl", "final_rl", "student_rl"):
            preset, init, prompts = {
                "reasoning_rl": ("r1_reasoning_rl_tiny_cpu", "cold_start", "prompts_train"),
                "final_rl": ("r1_final_rl_tiny_cpu", "sft", "final_rl_prompts"),
                "student_rl": ("r1_student_rl_tiny_cpu", "student_pretrain", "prompts_train"),
            }[stage]
            rollout = [
                f"rl.questions_per_step={size.r1_rollout_questions}",
                f"rl.max_new_tokens={size.r1_max_new_tokens}",
            ]
            if stage == "student_rl":  # one optimizer step per GRPO step: the whole rollout is one mini-batch
                rollout.append(f"trainer.global_batch_size={size.r1_rollout_questions * R1_GROUP_SIZE}")
            return [
                [
                    "megatron_recipes.grpo",
                    f"+experiment={preset}",
                    f"prompts.path={self.task_path(prompts)}",
                    heldout,
                    *rollout,
                    *training(stage, init),
                ]
            ]
        if stage == "rejection_sample":
            return [
                [
                    "megatron_recipes.rejection_sample",
                    "+experiment=r1_rejection_tiny_cpu",
                    f"generator.checkpoint={self.path('reasoning_rl', 'checkpoints')}",
                    f"prompts.path={self.task_path('prompts_train')}",
                    f"max_prompts={size.r1_rejection_prompts}",
                    f"sampling.max_new_tokens={size.r1_max_new_tokens}",
                    f"output_dir={self.path('rejection_sample')}",
                ]
            ]
        if stage in ("sft", "distill"):
            # R1's second SFT: the kept reasoning samples plus general data. The report's students
            # are fine-tuned on the same curated samples (its 800k), so distillation reads them too.
            data = f"[{self.path('rejection_sample', 'kept')},{self.task_path('general_sft')}]"
            preset = "+experiment=r1_sft_tiny_cpu" if stage == "sft" else "+experiment=r1_distill_tiny_cpu"
            init = "pretrain" if stage == "sft" else "student_pretrain"
            return [
                [
                    "megatron_recipes.sft",
                    preset,
                    f"sft_data.paths={data}",
                    f"sft_data.tokenizer={tokenizer}",
                    *training(stage, init),
                ]
            ]
        if stage == "evaluate_distill":
            return [
                [
                    "megatron_recipes.evaluate",
                    "+experiment=r1_evaluate_tiny_cpu",
                    f"dataset.path={self.task_path('prompts_heldout')}",
                    f"generator.checkpoint={self.path('distill', 'checkpoints')}",
                    f"sampling.max_new_tokens={size.r1_max_new_tokens}",
                    f"output_dir={self.path('evaluate', 'distill')}",
                ]
            ]
        raise AssertionError(stage)

    # -- reading the stages' outputs ---------------------------------------------------------------
    def heldout_accuracy(self) -> dict[str, float]:
        """Held-out accuracy after each stage that has one (R1_ACCURACY_SOURCES)."""
        accuracy: dict[str, float] = {}
        for stage, (run, which) in R1_ACCURACY_SOURCES.items():
            points = [
                row["validation_accuracy"]
                for _, row in sorted(self.metrics(run).items())
                if "validation_accuracy" in row
            ]
            if points:
                accuracy[stage] = points[0] if which == "first" else points[-1]
        path = self.path("evaluate", "distill", "results.json")
        if path.exists():
            accuracy["distill"] = json.loads(path.read_text())["summary"]["accuracy"]
        return accuracy

    def rl_curves(self, run: str) -> dict[str, list[list[float]]]:
        rows = sorted(self.metrics(run).items())
        keys = ("reward_mean", "response_length", "reflection_rate", "validation_accuracy")
        curves = {key: [[step, row[key]] for step, row in rows if key in row] for key in keys}
        for key in {k for _, row in rows for k in row if k.startswith("reward_") and k not in R1_REWARD_SUMMARIES}:
            curves[key] = [[step, row[key]] for step, row in rows if key in row]
        return curves

    def describe(self, stage: str) -> str:
        try:
            if stage == "task":
                manifest = self.read_json("task", "manifest.json")
                counts = manifest["counts"]
                return (
                    f"{counts['prompts_train']:,} training / {counts['prompts_heldout']} held-out questions, "
                    f"{counts['cold_start']} cold-start chains, {manifest['pretrain_tagged_share_of_documents']:.1%} "
                    f"of the base text in the tag format, held-out sums in training files: "
                    f"{manifest['heldout_overlap_with_training_sums']}"
                )
            if stage == "tokenize":
                tokens = self.read_json("tokenized", "r1_text", "summary.json")["dataset"]["tokens"]
                return f"r1_text {tokens:,} tokens"
            if stage == "rejection_sample":
                summary = self.read_json("rejection_sample", "summary.json")
                return f"{summary['samples']:,} samples of {summary['prompts']:,} questions, {summary['kept']:,} kept"
            if stage == "evaluate_distill":
                result = self.read_json("evaluate", "distill", "results.json")["summary"]
                return f"accuracy {result['accuracy']:.3f} on {result['problems']} held-out problems"
            rows = self.metrics(stage)
            steps = sorted(step for step, row in rows.items() if "loss" in row)
            if not steps:
                return "no metrics"
            if stage in ("reasoning_rl", "final_rl", "student_rl"):
                curves = self.rl_curves(stage)
                validation = curves["validation_accuracy"]
                others = ", ".join(
                    f"{key} {points[0][1]:.3f} -> {points[-1][1]:.3f}"
                    for key, points in sorted(curves.items())
                    if key.startswith("reward_") and key not in R1_REWARD_SUMMARIES and points
                )
                return (
                    f"{len(steps)} steps, {others}, held-out accuracy {validation[0][1]:.3f} -> {validation[-1][1]:.3f}"
                )
            return f"{steps[-1]} steps, loss {rows[steps[0]]['loss']:.3f} -> {rows[steps[-1]]['loss']:.3f}"
        except (OSError, KeyError, IndexError, ValueError) as error:
            return f"(no figures: {type(error).__name__}: {error})"

    def summary(self, seconds: float) -> dict:
        accuracy = self.heldout_accuracy()
        # Both student runs take one optimizer step per step; GRPO skips a step's update when every
        # group of its rollout had one reward (nothing to learn from), so its updates are counted.
        student_updates = int(sum(row.get("updates", 0) for row in self.metrics("student_rl").values()))
        out: dict = {
            "chain": "r1",
            "work_dir": str(self.work),
            "sizes": self.size.name,
            "seconds": round(seconds, 1),
            "stage_seconds": self.timings,
            "stages": {stage: self.describe(stage) for stage in self.stages if stage not in self.config.skip},
            "heldout_accuracy": accuracy,
            "distillation_vs_rl": {
                "student": "r1_student_base_tiny_cpu (Qwen2-style: q/k/v bias)",
                "steps": {"distill": self.steps_of("distill"), "student_rl": self.steps_of("student_rl")},
                "student_rl_optimizer_updates": student_updates,
                "heldout_accuracy": {"distill": accuracy.get("distill"), "student_rl": accuracy.get("student_rl")},
            },
            "curves": {run: self.rl_curves(run) for run in ("reasoning_rl", "final_rl", "student_rl")},
        }
        rejection = self.path("rejection_sample", "summary.json")
        if rejection.exists():
            out["rejection_sample"] = json.loads(rejection.read_text())
        out["tensorboard"] = [str(self.path(run, "tensorboard")) for run in R1_TRAINING_RUNS]
        out["report"] = str(self.work / "chain_report.html")
        return out

    def write_report(self, summary: dict) -> None:
        panels = ("reward_think_format", "reward_language_consistency", "response_length", "validation_accuracy")
        figure = Figure(figsize=(18, 3.6))
        axes = figure.subplots(1, len(panels))
        for axis, key in zip(axes, panels):
            for run, curves in summary["curves"].items():
                points = curves.get(key) or []
                if points:
                    axis.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=run)
            axis.set_title(key)
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        image = self.save_curves(figure, dpi=90)
        rows = stage_rows(summary)
        accuracy = "".join(f"<tr><td>{k}</td><td>{v:.3f}</td></tr>" for k, v in summary["heldout_accuracy"].items())
        comparison = summary["distillation_vs_rl"]
        html = f"""<!doctype html><html><head><meta charset="utf-8"><title>R1 chain report</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:3px 8px}}
table{{border-collapse:collapse;margin-bottom:1.5em}}</style></head><body>
<h1>DeepSeek-R1 chain on {_escape(summary["work_dir"])}</h1>
<p>sizes {summary["sizes"]}, {summary["seconds"]:.0f} s.</p>
<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th><th>result</th></tr>{rows}</table>
<h2>Held-out accuracy after each stage</h2><table>{accuracy}</table>
<h2>Distillation vs RL on the student</h2><p>{_escape(json.dumps(comparison))}</p>
<h2>RL curves</h2><img src="data:image/png;base64,{image}" alt="RL curves">
<p>TensorBoard: <code>tensorboard --logdir {_escape(str(self.work))}</code></p></body></html>"""
        (self.work / "chain_report.html").write_text(html)

    def print_summary(self, summary: dict) -> None:
        print(f"[chain] finished in {summary['seconds']:.0f} s", flush=True)
        print(
            "[chain] held-out accuracy after each stage: "
            + ", ".join(f"{k} {v:.3f}" for k, v in summary["heldout_accuracy"].items()),
            flush=True,
        )
        comparison = summary["distillation_vs_rl"]
        print(f"[chain] student at equal optimizer steps: {json.dumps(comparison['heldout_accuracy'])}", flush=True)
        print(
            f"[chain] report {summary['report']}; summary {self.work / 'chain_summary.json'}; "
            f"TensorBoard: tensorboard --logdir {self.work}",
            flush=True,
        )
