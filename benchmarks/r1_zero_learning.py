"""R1-Zero on the CPU: does GRPO teach a never-SFT'd tiny base model the <think> format and raise
its held-out accuracy? Too slow for CI (the base model and the GRPO run take minutes each on one
core); the chain test runs the same stages at reduced size.

    python benchmarks/r1_zero_learning.py                                # the measured defaults
    python benchmarks/r1_zero_learning.py --base-work outputs/chain_r1   # reuse a chain=r1 run's base model
    python benchmarks/r1_zero_learning.py --tag-share 0.05 --grpo optimizer.lr=5e-4   # try settings

Steps (every one a real entry point, as a user runs it):
  1. The base model by the R1 chain's own first stages (`launch/local/chain.py chain=r1`, every
     stage after `pretrain` skipped, default sizes): the R1 task's files
     (megatron_recipes/data/r1_tasks.py), a byte-level BPE tokenizer, and +experiment=r1_base_tiny_cpu
     pretraining on the task's text, of which a `--tag-share` of the chat exchanges (the manifest's
     `pretrain_tagged_share_of_documents` of all documents, printed) answer in the tag format. The
     model is never SFT'd. `--base-work` reuses a finished chain=r1 work dir instead.
  2. Held-out: `--heldout` distinct questions on the held-out side of the task's split (the task's
     own draw, with more questions). Checked: no held-out sum is a training prompt's sum, and no
     held-out question's text occurs in any pretraining document (both counts printed, both 0).
  3. GRPO by +experiment=r1_zero_tiny_cpu (rewards think_accuracy + think_format) from the base
     model on the task's training prompts, `--grpo-steps` steps, the held-out check at temperature 1
     with `--samples` samples per question before the first step, every 10 steps and at the end.
     A third reward of weight 0, gsm8k_accuracy (the last number of the whole response, format or
     not), is logged beside them: it says whether the model learned the sums or only the format.

Measured 2026-12-07 on the shared 2-core machine (load average 12-20; results/r1_zero_learning.json,
defaults: 7.4% of the 6,000 base documents in the tag format, 1,200 pretraining steps, 60 GRPO
steps, 200 held-out questions (39 sums, none in any training file) x 4 samples at T=1): the format
reward 0.125 at step 1 (0.20 over steps 1-5) -> 0.98 over the last 5 steps (held-out 0.095 -> 0.98);
held-out accuracy (think_accuracy) 0.020 -> 0.194, +17.4 points; mean response length 11 -> 27-31
tokens. But the any-format accuracy falls, 0.249 -> 0.194: the gain is the format (the base model
answers without the tags), not the sums; training accuracy rises 0.09 -> 0.58, on sums it was
pretrained on. From the chain's 300-step base (results/r1_zero_learning_base300.json): format
0.086 -> 0.99, accuracy 0.008 -> 0.039 (+3.1), any-format accuracy 0.078 -> 0.039.

Prints ONE JSON line (and writes it to --result when given): the format reward's mean over the first
and the last `--window` training steps, the held-out accuracy (think_accuracy: the answer after
</think>) and format rate before/after at T=1, the weight-0 any-format accuracy before/after, mean
response length per step, overlap counts, wall time and the load average at start and end.
Subprocesses run with the reproducible CPU environment (stack_common/reproducible.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.local.chain import R1_STAGES  # noqa: E402
from megatron_recipes.data.r1_tasks import SumQuestion, draw_questions, write_jsonl  # noqa: E402
from stack_common.reproducible import run_logged_reproducibly  # noqa: E402

log = logging.getLogger("r1_zero_learning")

BASE_STAGES = ("task", "tokenize", "pretrain")
EVAL_INTERVAL = 10
# The logged-only reward: any-format accuracy (weight 0 leaves GRPO's training signal unchanged).
REWARDS = "rl.rewards=[think_accuracy,think_format,gsm8k_accuracy]"
REWARD_WEIGHTS = "rl.reward_weights=[1.0,1.0,0.0]"


def build_base(work: Path, tag_share: float, pretrain_steps: int) -> None:
    """Steps 1: task, tokenizer, base model, by the R1 chain (resumes: finished stages are kept)."""
    later = [stage for stage in R1_STAGES if stage not in BASE_STAGES]
    command = [
        sys.executable,
        str(REPO / "launch" / "local" / "chain.py"),
        "chain=r1",
        f"work_dir={work}",
        f"skip=[{','.join(later)}]",
        f"overrides.task=['--tag-share={tag_share}']",
        f"chain_size.r1_pretrain_steps={pretrain_steps}",
    ]
    run_logged_reproducibly(command, REPO, work.parent / f"{work.name}-chain.log")


def _question_from_record(record: dict) -> SumQuestion:
    terms = tuple(int(t) for t in re.findall(r"\d+", record["question"]))
    return SumQuestion(terms, record["language"])


def write_heldout(base: Path, count: int, path: Path) -> dict:
    """Step 2: the held-out file and its overlap checks against every training text."""
    sizes = json.loads((base / "task" / "manifest.json").read_text())["sizes"]
    # The task's own held-out draw (r1_tasks.write_task_files: seed + 1), with `count` questions.
    held_out = draw_questions(random.Random(sizes["seed"] + 1), count, True, sizes["heldout_fraction"], distinct=True)
    write_jsonl(path, [q.record() for q in held_out])
    train = [json.loads(line) for line in (base / "task" / "prompts_train.jsonl").read_text().splitlines()]
    train_keys = {_question_from_record(r).key for r in train}
    pretrain_text = (base / "task" / "pretrain_text.jsonl").read_text(encoding="utf-8")
    documents = [json.loads(line)["text"] for line in pretrain_text.splitlines()]
    in_pretraining = sum(any(q.text in d for d in documents) for q in held_out)
    return {
        "heldout_questions": len(held_out),
        "heldout_sums": len({q.key for q in held_out}),
        "heldout_sums_in_training_prompts": len({q.key for q in held_out} & train_keys),
        "heldout_questions_in_pretraining_text": in_pretraining,
    }


def run_grpo(base: Path, heldout: Path, output: Path, arguments) -> None:
    """Step 3 (skipped when `output` holds a finished run)."""
    if (output / "checkpoints" / "exit_status.json").exists():
        return
    command = [
        sys.executable,
        "-m",
        "megatron_recipes.grpo",
        "+experiment=r1_zero_tiny_cpu",
        f"checkpoint.init_from={base / 'pretrain' / 'checkpoints'}",
        f"prompts.path={base / 'task' / 'prompts_train.jsonl'}",
        f"eval_prompts.path={heldout}",
        "eval_prompts.split=all",  # the file is the held-out side already (checked above)
        REWARDS,
        REWARD_WEIGHTS,
        f"rl.eval_interval={EVAL_INTERVAL}",
        "rl.eval_temperature=1.0",
        f"rl.eval_samples={arguments.samples}",
        f"trainer.train_steps={arguments.grpo_steps}",
        f"trainer.output_dir={output}",
        "trainer.log_interval=1",
        "trainer.tensorboard=false",
        *arguments.grpo,
    ]
    run_logged_reproducibly(command, REPO, output.parent / f"{output.name}.log")


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else float("nan")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[r1_zero_learning] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "benchmarks" / "r1_zero_learning")
    parser.add_argument("--base-work", type=Path, help="a finished chain=r1 work dir to take the base model from")
    parser.add_argument("--tag-share", type=float, default=0.1, help="share of chat exchanges in the tag format")
    # 1200, not the chain's 300: the 300-step base answers 8% of held-out sums in any format and
    # gains 3 points (benchmarks/results/r1_zero_learning_base300.json).
    parser.add_argument("--pretrain-steps", type=int, default=1200, help="base model steps")
    parser.add_argument("--grpo-steps", type=int, default=60)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--samples", type=int, default=4, help="held-out samples per question (temperature 1)")
    parser.add_argument("--window", type=int, default=5, help="training steps averaged at each end")
    parser.add_argument("--grpo", nargs="*", default=[], help="extra Hydra overrides of the GRPO run")
    parser.add_argument("--result", type=Path, help="also write the JSON line here")
    arguments = parser.parse_args()
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    load_start, started = os.getloadavg(), time.time()

    base = (
        arguments.base_work.resolve()
        if arguments.base_work
        else work / f"base-tag{arguments.tag_share}-steps{arguments.pretrain_steps}"
    )
    if not arguments.base_work:
        log.info("base model under %s", base)
        build_base(base, arguments.tag_share, arguments.pretrain_steps)
    base_seconds = time.time() - started
    manifest = json.loads((base / "task" / "manifest.json").read_text())
    heldout = work / f"heldout-{arguments.heldout}.jsonl"
    overlap = write_heldout(base, arguments.heldout, heldout)
    if overlap["heldout_sums_in_training_prompts"] or overlap["heldout_questions_in_pretraining_text"]:
        raise SystemExit(f"error: held-out questions overlap the training data: {overlap}")

    settings = "-".join([base.name, str(arguments.grpo_steps), str(arguments.heldout), str(arguments.samples)])
    output = work / f"grpo-{hashlib.sha1(json.dumps([settings, arguments.grpo]).encode()).hexdigest()[:10]}"
    log.info("GRPO run under %s", output)
    grpo_started = time.time()
    cached = (output / "checkpoints" / "exit_status.json").exists()
    run_grpo(base, heldout, output, arguments)
    grpo_seconds = time.time() - grpo_started
    # Wall time and load of the invocation that trained (a rerun only re-reads the finished run).
    measured_path = output.parent / f"{output.name}-measured.json"
    if not cached:
        measured = {
            "seconds": {"base": round(base_seconds, 1), "grpo": round(grpo_seconds, 1)},
            "load_average": {
                "start": [round(x, 2) for x in load_start],
                "end": [round(x, 2) for x in os.getloadavg()],
            },
        }
        measured_path.write_text(json.dumps(measured) + "\n")
    measured = json.loads(measured_path.read_text()) if measured_path.exists() else {}

    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward_think_format" in r]
    checks = [r for r in rows if "validation_accuracy" in r]
    window = arguments.window
    first, last = checks[0], checks[-1]
    result = {
        "benchmark": "r1_zero_learning",
        "command": shlex.join([sys.executable, *sys.argv]),
        "base": {
            "work_dir": str(base),
            "tag_share_of_chat_exchanges": manifest["sizes"]["tag_share"],
            "tagged_share_of_pretraining_documents": round(manifest["pretrain_tagged_share_of_documents"], 4),
            "pretraining_documents": manifest["counts"]["pretrain_text"],
            "pretrain_kinds": manifest["pretrain_kinds"],
        },
        "overlap": overlap,
        "grpo_steps": len(steps),
        "grpo_overrides": arguments.grpo,
        "format_reward_mean": {
            # The first rollout is sampled before any update: the base model's rate on training questions.
            "step_1": round(steps[0]["reward_think_format"], 4),
            f"first_{window}_steps": _mean([r["reward_think_format"] for r in steps[:window]]),
            f"last_{window}_steps": _mean([r["reward_think_format"] for r in steps[-window:]]),
        },
        "heldout_T1": {
            # The GRPO entry point keeps the distinct questions (megatron_recipes/recipes/grpo.py).
            "questions_graded": first.get("validation_problems"),
            "samples_per_question": arguments.samples,
            "accuracy_before": first["validation_accuracy"],
            "accuracy_after": last["validation_accuracy"],
            "gain_points": round(100 * (last["validation_accuracy"] - first["validation_accuracy"]), 1),
            "format_before": first.get("validation_reward_think_format"),
            "format_after": last.get("validation_reward_think_format"),
            "any_format_accuracy_before": first.get("validation_reward_gsm8k_accuracy"),
            "any_format_accuracy_after": last.get("validation_reward_gsm8k_accuracy"),
            "checks": [[r["step"], r["validation_accuracy"], r.get("validation_reward_think_format")] for r in checks],
        },
        "training_accuracy_first_last": [
            _mean([r["reward_think_accuracy"] for r in steps[:window]]),
            _mean([r["reward_think_accuracy"] for r in steps[-window:]]),
        ],
        "response_length_per_step": [round(r["response_length"], 1) for r in steps],
        "format_reward_per_step": [round(r["reward_think_format"], 3) for r in steps],
        "reused_finished_run": cached,
        **measured,
    }
    line = json.dumps(result)
    if arguments.result:
        arguments.result.write_text(json.dumps(result, indent=1) + "\n")
    print(line)


if __name__ == "__main__":
    main()
