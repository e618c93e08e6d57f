"""Iterative RL (DeepSeekMath section 4.1.4): the policy's own samples keep retraining the reward
model, with a replay of 10% historical data, and the reference model follows the policy.

    loop = IterativeRl(config.iterative)
    summary = loop.run()            # every unfinished stage, in order; returns the summary

Iteration k (1-based; its files under `<work_dir>/iteration_<k>/`) runs four real entry points,
each a subprocess (`launcher -m module`, the user's overrides first, then what the loop sets):

  grpo          megatron_recipes.grpo: one GRPO run under `<work_dir>/grpo/`, resumed every
                iteration: trainer.train_steps = k x grpo_steps, rl.reward_model = the reward
                model of iteration k-1 (the starting one for k = 1), a checkpoint every
                grpo_steps steps (all kept: `grpo/checkpoints/iter_<k x S>` is iteration k's
                policy) and rl.reference_reset_interval = grpo_steps: at the end of the stage the
                reference takes the policy's weights and is saved with the checkpoint, so
                iteration k+1 starts with the reference = the policy of iteration k.
  label_steps   megatron_recipes.label_steps: solutions of iteration k's policy, labelled by
                outcome (the reward model is an ORM) or with Math-Shepherd step labels from the
                completer (a PRM) -> iteration_<k>/labels/.
  reward_model  megatron_recipes.reward_model: continues from the previous reward model's
                weights on iteration k's labels, with reward_model.replay_fraction of every batch
                drawn from all earlier data (the starting model's and iterations 1..k-1) ->
                iteration_<k>/reward_model/.
  (reset)       done by the grpo stage above; recorded in the manifest.

Resumption after a crash or SIGKILL at any point: a stage counts as finished only from its own
completion marker (grpo: its checkpoint of step k x S exists; label_steps: summary.json, written
last; reward_model: exit_status.json with reason "finished" at reward_model_steps). An
unfinished stage is simply run again: every entry point resumes from its own checkpoints (GRPO
from its last iteration boundary, label_steps shard by shard, the reward model from its last
checkpoint), and all their randomness is seeded by position, so the rerun computes what the
uninterrupted run would have. `<work_dir>/iteration_<k>/manifest.json` (written atomically when
the iteration is complete) versions the iteration's artefacts: policy, reference, labels and
reward model checkpoints, and their summaries. Logs: `<work_dir>/logs/iteration_<k>_<stage>.log`.

Cost: the stages' own; the loop adds one process start per stage.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from megatron_recipes.reward_models.kinds import get_reward_model_kind
from megatron_recipes.reward_models.scoring import read_reward_model_record
from megatron_recipes.rl.config import IterativeConfig
from megatron_recipes.training.checkpointing import iteration_directory, latest_iteration
from megatron_recipes.training.loop import EXIT_STATUS_FILE
from megatron_recipes.training.metrics import read_metrics

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("grpo", "label_steps", "reward_model")
MANIFEST_FILE = "manifest.json"
SUMMARY_FILE = "iterative_summary.json"


class StageFailed(RuntimeError):
    """A stage's process exited with an error: the message names the stage and its log."""


class IterativeRl:
    def __init__(self, config: IterativeConfig):
        self.config = config
        self.work = Path(config.work_dir)
        record = read_reward_model_record(config.reward_model)
        self.kind = record["kind"]
        self.per_step = get_reward_model_kind(self.kind).per_step

    # -- paths -------------------------------------------------------------------------------
    def iteration_dir(self, k: int) -> Path:
        return self.work / f"iteration_{k}"

    @property
    def grpo_dir(self) -> Path:
        return self.work / "grpo"

    def policy_checkpoint(self, k: int) -> Path:
        return iteration_directory(self.grpo_dir / "checkpoints", k * self.config.grpo_steps)

    def reference_checkpoint(self, k: int) -> Path:
        return iteration_directory(self.grpo_dir / "checkpoints" / "reference", k * self.config.grpo_steps)

    def labels_dir(self, k: int) -> Path:
        return self.iteration_dir(k) / "labels"

    def reward_model_dir(self, k: int) -> Path:
        return self.iteration_dir(k) / "reward_model"

    def reward_model_checkpoint(self, k: int) -> str:
        """The reward model GRPO uses in iteration k+1 (k = 0: the starting one)."""
        if k == 0:
            return str(self.config.reward_model)
        return str(iteration_directory(self.reward_model_dir(k) / "checkpoints", self.config.reward_model_steps))

    # -- stages ------------------------------------------------------------------------------
    def command(self, stage: str, k: int) -> list[str]:
        c, steps = self.config, self.config.grpo_steps
        if stage == "grpo":
            return [
                "megatron_recipes.grpo",
                *c.grpo_overrides,
                *c.prompt_overrides,
                f"checkpoint.init_from={c.policy}",
                f"trainer.output_dir={self.grpo_dir}",
                f"checkpoint.dir={self.grpo_dir / 'checkpoints'}",
                f"trainer.train_steps={k * steps}",
                f"checkpoint.save_interval={steps}",
                "checkpoint.keep_last=0",
                f"rl.reference_reset_interval={steps}",
                f"rl.reward_model={self.reward_model_checkpoint(k - 1)}",
            ]
        if stage == "label_steps":
            return [
                "megatron_recipes.label_steps",
                *c.label_overrides,
                *c.prompt_overrides,
                f"prompts.seed={1000 + k}",
                f"policy={self.policy_checkpoint(k)}",
                f"completer={c.completer or c.policy}",
                f"label.method={'math_shepherd' if self.per_step else 'outcome'}",
                f"output_dir={self.labels_dir(k)}",
                f"seed={1000 + k}",
            ]
        if stage == "reward_model":
            replay = [*c.reward_model_data, *(str(self.labels_dir(j)) for j in range(1, k))]
            return [
                "megatron_recipes.reward_model",
                *c.reward_model_overrides,
                f"reward_model.kind={self.kind}",
                f"checkpoint.init_from={self.reward_model_checkpoint(k - 1)}",
                f"reward_model.train_paths=[{self.labels_dir(k)}]",
                f"reward_model.replay_paths=[{','.join(replay)}]",
                f"reward_model.replay_fraction={c.replay_fraction}",
                f"trainer.train_steps={c.reward_model_steps}",
                f"trainer.output_dir={self.reward_model_dir(k)}",
                f"checkpoint.save_interval={c.reward_model_steps}",
            ]
        raise AssertionError(stage)

    def finished(self, stage: str, k: int) -> bool:
        if stage == "grpo":
            latest = latest_iteration(self.grpo_dir / "checkpoints")
            return latest is not None and latest >= k * self.config.grpo_steps and self.policy_checkpoint(k).exists()
        if stage == "label_steps":
            return (self.labels_dir(k) / "summary.json").exists()
        if stage == "reward_model":
            status = self.reward_model_dir(k) / "checkpoints" / EXIT_STATUS_FILE
            if not status.exists():
                return False
            outcome = json.loads(status.read_text())
            return outcome.get("reason") == "finished" and outcome.get("iteration") == self.config.reward_model_steps
        raise AssertionError(stage)

    def run_stage(self, stage: str, k: int) -> None:
        module, *arguments = self.command(stage, k)
        launcher = list(self.config.launcher) or [sys.executable]
        command = [*launcher, "-m", module, *arguments]
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"iteration_{k}_{stage}.log"
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), environment.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        started = time.perf_counter()
        with log_path.open("a", encoding="utf-8") as handle:
            handle.write(f"$ {' '.join(command)}\n")
            handle.flush()
            result = subprocess.run(command, cwd=REPO_ROOT, env=environment, stdout=handle, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
            raise StageFailed(
                f"iteration {k} stage {stage} failed (exit {result.returncode}):"
                f" {tail[0][:300] if tail else ''} | log: {log_path}"
            )
        log.info("iteration %d: %s finished in %.1f s (log %s)", k, stage, time.perf_counter() - started, log_path)

    # -- the loop ----------------------------------------------------------------------------
    def manifest(self, k: int) -> dict:
        labels = json.loads((self.labels_dir(k) / "summary.json").read_text())
        reward_rows = read_metrics(self.reward_model_dir(k) / "metrics.jsonl")
        replay = [row["replay_fraction"] for row in reward_rows.values() if "replay_fraction" in row]
        final = reward_rows.get(self.config.reward_model_steps, {})
        grpo_rows = read_metrics(self.grpo_dir / "metrics.jsonl")
        steps = range((k - 1) * self.config.grpo_steps + 1, k * self.config.grpo_steps + 1)
        return {
            "iteration": k,
            "grpo_steps": [(k - 1) * self.config.grpo_steps + 1, k * self.config.grpo_steps],
            "policy": str(self.policy_checkpoint(k)),
            "reference": str(self.reference_checkpoint(k)),
            "reward_model_used": self.reward_model_checkpoint(k - 1),
            "labels": str(self.labels_dir(k)),
            "reward_model": self.reward_model_checkpoint(k),
            "reward_model_kind": self.kind,
            "label_summary": labels,
            "grpo_loss": [grpo_rows[s]["loss"] for s in steps if s in grpo_rows],
            "grpo_accuracy": [grpo_rows[s].get("accuracy") for s in steps if s in grpo_rows],
            "reward_model_loss": [reward_rows[s]["loss"] for s in sorted(reward_rows) if "loss" in reward_rows[s]],
            "replay_fraction": sum(replay) / len(replay) if replay else None,
            "reward_model_validation_auc": final.get("validation_auc"),
        }

    def run(self) -> dict:
        self.work.mkdir(parents=True, exist_ok=True)
        manifests = []
        for k in range(1, self.config.iterations + 1):
            for stage in STAGES:
                if self.finished(stage, k):
                    log.info("iteration %d: %s already finished", k, stage)
                    continue
                self.run_stage(stage, k)
                if not self.finished(stage, k):
                    raise StageFailed(f"iteration {k} stage {stage} exited without its completion marker")
            manifest = self.manifest(k)
            path = self.iteration_dir(k) / MANIFEST_FILE
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text(json.dumps(manifest, indent=2) + "\n")
            os.replace(temporary, path)
            manifests.append(manifest)
        summary = {"iterations": manifests, "work_dir": str(self.work), "reward_model_kind": self.kind}
        (self.work / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        return summary


__all__ = ["IterativeRl", "StageFailed"]
