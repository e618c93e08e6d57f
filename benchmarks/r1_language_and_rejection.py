"""Two of DeepSeek-R1's claims on the R1 CPU task (megatron_recipes/data/r1_tasks.py: one-digit sums
asked in English and Chinese), measured with the real entry points. Too slow for CI (every stage
is a training or sampling run of minutes on this machine); the chain test runs the stages at
reduced size.

    python benchmarks/r1_language_and_rejection.py                         # the measured defaults
    python benchmarks/r1_language_and_rejection.py --base-work outputs/chain_r1   # a chain=r1 run's base
    python benchmarks/r1_language_and_rejection.py --rejection-prompts 1024 --distill-steps 60   # as measured
    python benchmarks/r1_language_and_rejection.py --grpo-steps 120 --eval-interval 40 --language-only

1. Language consistency. A policy SFT'd on chains that mix languages (the task's
   mixed_language_sft.jsonl: each sentence of the chain in the other language than the question's
   with probability --mix) is trained by GRPO twice from the same checkpoint, same seed and steps:
   with the language-consistency reward (+experiment=r1_reasoning_rl_tiny_cpu: think_accuracy +
   think_format + language_consistency, weights 1, 1, 1) and without it (the same preset, the
   language reward's weight 0: logged, not trained on). Before and after, on the held-out questions
   at temperature 1: the consistency score (the share of the chain's words in the question's
   language) and accuracy (the answer after </think>).
2. Rejection sampling. `megatron_recipes.rejection_sample` (+experiment=r1_rejection_tiny_cpu) draws
   k samples per training question from the language-RL checkpoint (R1's order: the reasoning-RL
   model writes the data); SFT from the base model (+experiment=r1_sft_tiny_cpu, same steps and
   batch) on the kept samples (checker-accepted, readability filters, capped per question) and on
   every sample (its samples/ directory, the unfiltered baseline) and on the same samples judged
   again by the checker alone (generator=precomputed, language filter off); `megatron_recipes.evaluate`
   (+experiment=r1_evaluate_tiny_cpu, greedy) on the held-out questions.
3. (--distill-steps N) The chain's student comparison at N steps: a 2-layer Qwen2-style student
   SFT'd on the kept samples plus the general data (distillation) vs R1-Zero GRPO on it, N
   optimizer steps each, both graded greedy on the held-out questions.

The base model is the R1 chain's own (`launch/local/chain.py chain=r1`, stages task, tokenize,
pretrain; `--pretrain-steps`), or `--base-work`'s. Held-out: `--heldout` distinct questions on the
held-out side of the task's split; checked before any training (the script stops otherwise): no
held-out sum is the sum of a training prompt, a mixed-language chain or a cold-start chain, and no
held-out question's text occurs in the pretraining text; after sampling, no rejection sample's
prompt is a held-out sum. Every stage is cached in --work (a rerun with the same settings reuses
it); the two GRPO runs and the two SFT runs run side by side (two processes: this machine's other
jobs share its 2 cores).

Prints ONE JSON line (and writes it to --result when given) with every figure, the overlap counts,
stage wall times and the load average at start and end. Subprocesses run with the reproducible CPU
environment (stack_common/reproducible.py).

Measured 2026-12-07 on the shared 2-core machine, load average 36-107 during the runs (6 helpers;
figures and commands in benchmarks/results/r1_language_and_rejection.json). Size: base 600 steps
(7.4% of its 6,000 documents in the tag format), mixed-language SFT 100 steps on 2,000 chains
(mix 0.5), GRPO 40 steps of 8 questions x 8 samples (rl=r1_reasoning_tiny_cpu, lr 3e-4), held-out
100 questions (35 sums, none in any training file or rejection sample) x 2 samples at T=1;
rejection sampling 1,024 training questions x 8 samples (--rejection-prompts 1024; default 256); SFT
100 steps of 16. Wall time: the defaults from scratch 21 minutes (load 8 -> 52); the rejection,
SFT and evaluation stages at 1,024 questions another 18 minutes (load 36 -> 86).

Later (2026-12-08, results/r1_language_consistency_lang.json): from the same mixed-language policy,
GRPO moves every chain toward one language whatever the question's, so consistency stays ~0.5.
`--paired` (each step asks both languages equally) with the language reward credited on each
sentence's opening token (`--language-grpo rl.advantage_estimator=outcome_steps
rl.step_reward=language_spans "+rl.reward_options={language_spans:{weight:2.0}}"`) and
`--grpo rl.kl_coefficient=0.1`, 200 steps, `--samples 8` (800 held-out answers): consistency
0.501 -> 0.952 (+0.451), accuracy 0.236 vs 0.2525 for the accuracy-only arm (-1.6 points; one seed;
at the default 2 samples the same checkpoints read -8.5, the accuracy-only arm's checks swinging
0.18-0.34: use --samples 8 for the accuracy condition).

1. Language consistency (bar: +0.3 consistency, at most -2 accuracy points): NOT MET. The
   mixed-language SFT policy scores 0.466 consistency, 0.265 accuracy. After 40 GRPO steps with the
   language reward: 0.490 / 0.225; without it: 0.479 / 0.205 (+0.024 vs +0.013 consistency; -4.0 vs
   -6.0 accuracy points). Language weight 3: 0.499 / 0.255. 120 steps (checks every 40): with the
   reward 0.490, 0.497, 0.501 (accuracy 0.225, 0.195, 0.200: +0.035, -6.5 points); without it
   0.479, 0.501, 0.489 (accuracy 0.205, 0.185, 0.160: +0.022, -10.5 points). The training-rollout
   consistency stays at 0.45-0.56 per 10-step window throughout. GRPO lowers held-out accuracy in
   both arms while the training-rollout accuracy stays at 0.34-0.52 (0.35-0.46 without the reward)
   per 10-step window. A larger step collapses: lr 1e-3 (60 steps) takes held-out accuracy 0.265 ->
   0.04 / 0.05 (with / without the reward) and halves the response length without moving
   consistency (0.49 / 0.52); lr 5e-4 (stopped near step 40) 0.265 -> 0.16 without the reward. A
   likely reason, not measured: only the 4-5 tokens that open a sentence decide a chain's language,
   a small share of the gradient of a ~72-token response beside the accuracy advantage.
2. Rejection sampling: NOT MET. From the 40-step language-RL checkpoint, 8,192 samples (training
   reward 0.451): 332 kept (4,495 incorrect, 3,285 mixed-language, 65 duplicates, 15 over the cap
   of 2 per question). Held-out greedy accuracy after SFT from the base model: kept 0.13,
   unfiltered (all 8,192) 0.18. The same samples judged again by the checker alone (language
   filter off; 1,476 kept after deduplication and the cap): 0.26, +8 points over unfiltered (one
   greedy answer per question: a standard error of about 4 points per arm). With 256 questions
   (91 kept of 2,048): kept 0.10, unfiltered 0.20. Keeping correct answers helps; the language
   filter, on a policy that mixes languages in most chains, leaves few (77% fewer than the
   checker alone), concentrated on the questions the policy already answers (252 of 1,024
   questions have a kept sample), and at equal steps they teach less than every sample does.
3. Distillation vs student GRPO (--distill-steps 60; the chain's 40 gave 0.078 vs 0.062): the
   2-layer Qwen2-style student (500 pretraining steps, held-out greedy 0.00) SFT'd 60 steps on the
   332 kept samples plus the general data: 0.13; R1-Zero GRPO on it, 60 optimizer steps: 0.10.
   Distillation ahead by 3 points, within one standard error (about 3.4 points per arm): a tie.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The base model is built the way the R1-Zero benchmark builds it (this script's folder is on sys.path).
from r1_zero_learning import build_base  # noqa: E402

from megatron_recipes.data.r1_tasks import SumQuestion, draw_questions, write_jsonl  # noqa: E402
from stack_common.reproducible import run_logged_reproducibly  # noqa: E402

log = logging.getLogger("r1_language_and_rejection")

LANGUAGE_REWARDS = "rl.rewards=[think_accuracy,think_format,language_consistency]"


def reward_weights(arm: str, language_weight: float) -> str:
    """The language arm trains on the language reward; the accuracy-only arm logs it at weight 0."""
    return f"rl.reward_weights=[1.0,1.0,{language_weight if arm == 'language' else 0.0}]"


ARMS = ("language", "accuracy_only")
_TERMS = re.compile(r"\d+")


def _finished(run: Path) -> bool:
    return (run / "checkpoints" / "exit_status.json").exists()


def _run(module: str, arguments: list[str], log_path: Path) -> None:
    run_logged_reproducibly([sys.executable, "-m", module, *arguments], REPO, log_path)


def _side_by_side(jobs: list[tuple[str, list[str], Path]]) -> None:
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for future in [pool.submit(_run, *job) for job in jobs]:
            future.result()


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:10]


def _read_jsonl(path: Path) -> list[dict]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [json.loads(line) for file in files for line in file.read_text(encoding="utf-8").splitlines() if line]


def _sum_key(text: str) -> str:
    """The held-out unit of a question's text (its terms, sorted: SumQuestion.key)."""
    return "+".join(str(t) for t in sorted(int(t) for t in _TERMS.findall(text)))


def write_heldout(task: Path, count: int, path: Path) -> dict:
    """The held-out file and its overlap counts against every training text of the task."""
    sizes = json.loads((task / "manifest.json").read_text())["sizes"]
    held_out = draw_questions(random.Random(sizes["seed"] + 1), count, True, sizes["heldout_fraction"], distinct=True)
    write_jsonl(path, [q.record() for q in held_out])
    heldout_keys = {q.key for q in held_out}
    training_keys = {
        "prompts_train": {_sum_key(r["question"]) for r in _read_jsonl(task / "prompts_train.jsonl")},
        # A chain's user turn is the R1 prompt around the question: its numbers are the question's terms.
        "mixed_language_sft": {
            _sum_key(r["id"].split("-", 2)[2].replace("-", " ")) for r in _read_jsonl(task / "mixed_language_sft.jsonl")
        },
        "cold_start": {_sum_key(r["question"]) for r in _read_jsonl(task / "cold_start.jsonl")},
    }
    documents = [r["text"] for r in _read_jsonl(task / "pretrain_text.jsonl")]
    return {
        "heldout_questions": len(held_out),
        "heldout_sums": len(heldout_keys),
        **{f"heldout_sums_in_{name}": len(keys & heldout_keys) for name, keys in training_keys.items()},
        "heldout_questions_in_pretraining_text": sum(any(q.text in d for d in documents) for q in held_out),
    }


def _overlapping(overlap: dict) -> bool:
    return any(value for name, value in overlap.items() if "_in_" in name)


def write_paired_prompts(task: Path, path: Path) -> int:
    """The training questions in file order, each followed by the same sum asked in the other
    language (the same side of the held-out split: it is decided by the sum). Read unshuffled
    (prompts.shuffle=false), every GRPO step of an even number of questions asks both languages
    equally, so a push of the chains toward one language for all questions cancels within the step
    and what is left is the push toward the question's language."""
    rows = []
    for index, record in enumerate(_read_jsonl(task / "prompts_train.jsonl")):
        terms = tuple(int(t) for t in _TERMS.findall(record["question"]))
        for language in (record["language"], "zh" if record["language"] == "en" else "en"):
            rows.append({**SumQuestion(terms, language).record(), "id": f"pair-{index}-{language}"})
    write_jsonl(path, rows)
    return len(rows)


def grpo_command(init: Path, task: Path, heldout: Path, output: Path, weights: str, arguments) -> list[str]:
    prompts = (
        [f"prompts.path={arguments.paired_prompts}", "prompts.split=all", "prompts.shuffle=false"]
        if arguments.paired_prompts
        else [f"prompts.path={task / 'prompts_train.jsonl'}"]
    )
    return [
        "+experiment=r1_reasoning_rl_tiny_cpu",
        f"checkpoint.init_from={init}",
        *prompts,
        f"eval_prompts.path={heldout}",
        LANGUAGE_REWARDS,
        weights,
        f"rl.eval_interval={arguments.eval_interval or arguments.grpo_steps}",
        "rl.eval_temperature=1.0",
        f"rl.eval_samples={arguments.samples}",
        f"rl.max_new_tokens={arguments.max_new_tokens}",
        f"trainer.train_steps={arguments.grpo_steps}",
        f"trainer.output_dir={output}",
        "trainer.log_interval=1",
        "trainer.tensorboard=false",
        *arguments.grpo,
    ]


def sft_command(data: list[Path], tokenizer: Path, init: Path, output: Path, steps: int) -> list[str]:
    return [
        "+experiment=r1_sft_tiny_cpu",
        f"sft_data.paths=[{','.join(str(p) for p in data)}]",
        f"sft_data.tokenizer={tokenizer}",
        f"checkpoint.init_from={init}",
        f"trainer.train_steps={steps}",
        f"trainer.output_dir={output}",
        "trainer.tensorboard=false",
    ]


def evaluate(checkpoints: Path, heldout: Path, output: Path, max_new_tokens: int) -> dict:
    if not (output / "results.json").exists():
        _run(
            "megatron_recipes.evaluate",
            [
                "+experiment=r1_evaluate_tiny_cpu",
                f"dataset.path={heldout}",
                f"generator.checkpoint={checkpoints}",
                f"sampling.max_new_tokens={max_new_tokens}",
                f"output_dir={output}",
            ],
            output.parent / f"{output.name}.log",
        )
    summary = json.loads((output / "results.json").read_text())["summary"]
    return {"accuracy": summary["accuracy"], "problems": summary["problems"]}


def _validation(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    checks = [r for r in rows if "validation_accuracy" in r]
    steps = [r for r in rows if "reward_think_accuracy" in r]
    first, last = checks[0], checks[-1]

    def pair(name: str) -> list[float]:
        return [round(first[name], 4), round(last[name], 4)]

    return {
        "validation_steps": [first["step"], last["step"]],
        "questions_graded": first.get("validation_problems"),
        "accuracy_before_after": pair("validation_accuracy"),
        "consistency_before_after": pair("validation_reward_language_consistency"),
        "format_before_after": pair("validation_reward_think_format"),
        "accuracy_change_points": round(100 * (last["validation_accuracy"] - first["validation_accuracy"]), 1),
        "consistency_change": round(
            last["validation_reward_language_consistency"] - first["validation_reward_language_consistency"], 4
        ),
        "training_steps": len(steps),
        "training_consistency_per_step": [round(r["reward_language_consistency"], 3) for r in steps],
        "training_accuracy_per_step": [round(r["reward_think_accuracy"], 3) for r in steps],
        "response_length_first_last": [round(steps[0]["response_length"], 1), round(steps[-1]["response_length"], 1)],
    }


def distill_versus_student_rl(work: Path, base: Path, heldout: Path, rejection: Path, arguments, timed) -> dict:
    """3. The chain's student comparison (r1_chain_runner: distill vs student_rl) at --distill-steps:
    a 2-layer Qwen2-style student pretrained on the base text, then SFT on the teacher's kept
    samples plus the general data (distillation) or R1-Zero GRPO with one optimizer step per step
    (the whole rollout one batch), the same number of steps; both graded greedy on the held-out file."""
    task, tokenizer = base / "task", base / "tokenizer"
    student = work / f"student_base-{_key(base.name, arguments.student_pretrain_steps)}"
    if not _finished(student):
        command = [
            "+experiment=r1_student_base_tiny_cpu",
            f"corpus.work_dir={base}",
            f"data.tokenizer={tokenizer}",
            f"trainer.train_steps={arguments.student_pretrain_steps}",
            f"trainer.output_dir={student}",
            "trainer.tensorboard=false",
        ]
        timed("student_pretrain", _run, "megatron_recipes.pretrain", command, work / f"{student.name}.log")
    key = _key(student.name, rejection.name, arguments.distill_steps, arguments.heldout, arguments.max_new_tokens)
    distill, student_rl = work / f"distill-{key}", work / f"student_rl-{key}"
    questions_per_step = 8  # rl=r1_zero_tiny_cpu's, times its group of 8: one optimizer step per GRPO step
    jobs = []
    if not _finished(distill):
        command = sft_command(
            [rejection / "kept", task / "general_sft.jsonl"],
            tokenizer,
            student / "checkpoints",
            distill,
            arguments.distill_steps,
        )
        jobs.append(
            ("megatron_recipes.sft", ["+experiment=r1_distill_tiny_cpu", *command[1:]], work / f"{distill.name}.log")
        )
    if not _finished(student_rl):
        command = [
            "+experiment=r1_student_rl_tiny_cpu",
            f"checkpoint.init_from={student / 'checkpoints'}",
            f"prompts.path={task / 'prompts_train.jsonl'}",
            f"eval_prompts.path={heldout}",
            f"rl.questions_per_step={questions_per_step}",
            f"trainer.global_batch_size={questions_per_step * 8}",
            f"rl.eval_interval={arguments.distill_steps}",
            f"rl.max_new_tokens={arguments.max_new_tokens}",
            f"trainer.train_steps={arguments.distill_steps}",
            f"trainer.output_dir={student_rl}",
            "trainer.tensorboard=false",
        ]
        jobs.append(("megatron_recipes.grpo", command, work / f"{student_rl.name}.log"))
    if jobs:
        timed("distill_and_student_rl", _side_by_side, jobs)
    distilled = timed(
        "evaluate_distill",
        evaluate,
        distill / "checkpoints",
        heldout,
        work / f"evaluate-{distill.name}",
        arguments.max_new_tokens,
    )
    rows = [json.loads(line) for line in (student_rl / "metrics.jsonl").read_text().splitlines()]
    checks = [r for r in rows if "validation_accuracy" in r]
    return {
        "steps": arguments.distill_steps,
        "student_pretrain_steps": arguments.student_pretrain_steps,
        "student_rl_optimizer_updates": int(sum(r.get("updates", 0) for r in rows)),
        "heldout_greedy_accuracy": {
            "student_base": checks[0]["validation_accuracy"],
            "distill": distilled["accuracy"],
            "student_rl": checks[-1]["validation_accuracy"],
        },
    }


def _report(result: dict, arguments, seconds: dict, started: float, load_start) -> None:
    """Completes the result with the stage times and load averages, prints it as ONE JSON line
    and writes it to --result when given."""
    result["seconds"] = {**seconds, "total": round(time.time() - started, 1)}
    result["load_average"] = {
        "start": [round(x, 2) for x in load_start],
        "end": [round(x, 2) for x in os.getloadavg()],
    }
    if arguments.result:
        arguments.result.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, ensure_ascii=False))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[r1_language_and_rejection] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "benchmarks" / "r1_language_and_rejection")
    parser.add_argument("--base-work", type=Path, help="a finished chain=r1 work dir to take the base model from")
    parser.add_argument("--tag-share", type=float, default=0.1)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--mixed-sft-steps", type=int, default=100)
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument(
        "--eval-interval", type=int, default=0, help="held-out checks every N GRPO steps (0: start, end)"
    )
    parser.add_argument("--language-weight", type=float, default=1.0, help="the language reward's weight")
    parser.add_argument("--language-only", action="store_true", help="stop after part 1")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--samples", type=int, default=2, help="held-out samples per question (temperature 1)")
    parser.add_argument("--rejection-prompts", type=int, default=256)
    parser.add_argument("--sft-steps", type=int, default=100, help="SFT steps on the kept / unfiltered samples")
    parser.add_argument(
        "--distill-steps", type=int, default=0, help="3. distillation vs student GRPO at this many steps each (0: skip)"
    )
    parser.add_argument("--student-pretrain-steps", type=int, default=500)
    parser.add_argument("--grpo", nargs="*", default=[], help="extra Hydra overrides of both GRPO runs")
    parser.add_argument(
        "--language-grpo",
        nargs="*",
        default=[],
        help="extra Hydra overrides of the language arm only (e.g. its per-span credit: rl.advantage_estimator="
        "outcome_steps rl.step_reward=language_spans); the accuracy-only arm is reused",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="both GRPO arms read the training questions each followed by its translation, unshuffled"
        " (every step asks both languages equally)",
    )
    parser.add_argument("--result", type=Path, help="also write the JSON here")
    arguments = parser.parse_args()
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    load_start, started = os.getloadavg(), time.time()
    seconds: dict[str, float] = {}

    def timed(name: str, function, *args):
        begin = time.time()
        value = function(*args)
        seconds[name] = round(time.time() - begin, 1)
        return value

    base = (
        arguments.base_work.resolve()
        if arguments.base_work
        else work / f"base-tag{arguments.tag_share}-steps{arguments.pretrain_steps}"
    )
    if not arguments.base_work:
        log.info("base model under %s", base)
        timed("base", build_base, base, arguments.tag_share, arguments.pretrain_steps)
    task, tokenizer, base_checkpoints = base / "task", base / "tokenizer", base / "pretrain" / "checkpoints"
    manifest = json.loads((task / "manifest.json").read_text())
    heldout = work / f"heldout-{arguments.heldout}.jsonl"
    overlap = write_heldout(task, arguments.heldout, heldout)
    if _overlapping(overlap):
        raise SystemExit(f"error: held-out questions overlap the training data: {overlap}")

    arguments.paired_prompts = None
    if arguments.paired:
        arguments.paired_prompts = work / "prompts_train_paired.jsonl"
        write_paired_prompts(task, arguments.paired_prompts)
        paired_keys = {_sum_key(r["question"]) for r in _read_jsonl(arguments.paired_prompts)}
        overlap["heldout_sums_in_paired_prompts"] = len(
            paired_keys & {_sum_key(r["question"]) for r in _read_jsonl(heldout)}
        )
        if overlap["heldout_sums_in_paired_prompts"]:
            raise SystemExit(f"error: held-out questions overlap the paired training questions: {overlap}")

    # 1. The mixed-language policy, then GRPO with and without the language reward.
    mixed = work / f"mixed_sft-{_key(base.name, arguments.mixed_sft_steps)}"
    if not _finished(mixed):
        log.info("SFT on mixed-language chains under %s", mixed)
        command = sft_command(
            [task / "mixed_language_sft.jsonl"], tokenizer, base_checkpoints, mixed, arguments.mixed_sft_steps
        )
        timed("mixed_sft", _run, "megatron_recipes.sft", command, work / f"{mixed.name}.log")
    settings = [
        mixed.name,
        arguments.grpo_steps,
        arguments.heldout,
        arguments.samples,
        arguments.max_new_tokens,
        arguments.grpo,
        # Only when set, so runs cached before the option existed keep their key.
        *([arguments.eval_interval] if arguments.eval_interval else []),
        *(["paired"] if arguments.paired else []),
    ]
    # The language weight keys only the arm it changes (1.0 keeps the key runs had before the option).
    weighted = [arguments.language_weight] if arguments.language_weight != 1.0 else []
    weighted += [arguments.language_grpo] if arguments.language_grpo else []
    runs = {name: work / f"grpo-{name}-{_key(settings + (weighted if name == 'language' else []))}" for name in ARMS}
    jobs = [
        (
            "megatron_recipes.grpo",
            grpo_command(
                mixed / "checkpoints", task, heldout, run, reward_weights(name, arguments.language_weight), arguments
            )
            + (arguments.language_grpo if name == "language" else []),
            work / f"{run.name}.log",
        )
        for name, run in runs.items()
        if not _finished(run)
    ]
    if jobs:
        log.info("GRPO under %s", ", ".join(str(r) for r in runs.values()))
        timed("grpo_both", _side_by_side, jobs)
    language = {name: _validation(run) for name, run in runs.items()}
    if arguments.language_only:
        result = {
            "benchmark": "r1_language_and_rejection",
            "part": "language_consistency",
            "command": shlex.join([sys.executable, *sys.argv]),
            "base": {"work_dir": str(base), "pretrain_steps": arguments.pretrain_steps},
            "mixed_sft_steps": arguments.mixed_sft_steps,
            "grpo_steps": arguments.grpo_steps,
            "grpo_overrides": arguments.grpo,
            "language_arm_overrides": arguments.language_grpo,
            "paired_prompts": arguments.paired,
            "language_reward_weight": arguments.language_weight,
            "heldout_T1_samples_per_question": arguments.samples,
            "overlap": overlap,
            "language_consistency": language,
            "runs": {k: str(v) for k, v in runs.items()},
        }
        _report(result, arguments, seconds, started, load_start)
        return

    # 2. Rejection sampling from the language-RL checkpoint; SFT on kept vs every sample.
    rejection = work / f"rejection-{_key(runs['language'].name, arguments.rejection_prompts)}"
    if not (rejection / "summary.json").exists():
        log.info("rejection sampling under %s", rejection)
        timed(
            "rejection_sample",
            _run,
            "megatron_recipes.rejection_sample",
            [
                "+experiment=r1_rejection_tiny_cpu",
                f"generator.checkpoint={runs['language'] / 'checkpoints'}",
                f"prompts.path={task / 'prompts_train.jsonl'}",
                f"max_prompts={arguments.rejection_prompts}",
                f"sampling.max_new_tokens={arguments.max_new_tokens}",
                f"output_dir={rejection}",
            ],
            work / f"{rejection.name}.log",
        )
    rejection_summary = json.loads((rejection / "summary.json").read_text())
    samples, kept = _read_jsonl(rejection / "samples"), _read_jsonl(rejection / "kept")
    heldout_keys = {_sum_key(r["question"]) for r in _read_jsonl(heldout)}
    training_questions = {r["id"]: r["question"] for r in _read_jsonl(task / "prompts_train.jsonl")}
    sampled_keys = {_sum_key(training_questions[r["provenance"]["prompt_id"]]) for r in samples}
    overlap["heldout_sums_in_rejection_samples"] = len(sampled_keys & heldout_keys)
    if overlap["heldout_sums_in_rejection_samples"]:
        raise SystemExit(f"error: rejection samples overlap the held-out questions: {overlap}")
    # A third arm: the same samples judged again (generator=precomputed) by the checker alone, the
    # language filter off: what keeping only correct answers does, apart from the language filter.
    checker_only = rejection.parent / f"{rejection.name}-checker_only"
    if not (checker_only / "summary.json").exists():
        generations = work / f"{rejection.name}-generations.jsonl"
        write_jsonl(
            generations,
            [{"id": r["provenance"]["prompt_id"], "text": r["messages"][1]["content"]} for r in samples],
        )
        timed(
            "rejection_checker_only",
            _run,
            "megatron_recipes.rejection_sample",
            [
                "+experiment=r1_rejection_tiny_cpu",
                "generator=precomputed",
                f"generator.path={generations}",
                "filters.min_language_consistency=0",
                f"prompts.path={task / 'prompts_train.jsonl'}",
                f"max_prompts={arguments.rejection_prompts}",
                f"output_dir={checker_only}",
            ],
            work / f"{checker_only.name}.log",
        )
    checker_only_summary = json.loads((checker_only / "summary.json").read_text())
    sft_runs = {
        "kept": (rejection / "kept", work / f"sft-kept-{_key(rejection.name, arguments.sft_steps)}"),
        "unfiltered": (rejection / "samples", work / f"sft-unfiltered-{_key(rejection.name, arguments.sft_steps)}"),
        "checker_only": (
            checker_only / "kept",
            work / f"sft-checker_only-{_key(rejection.name, arguments.sft_steps)}",
        ),
    }
    jobs = [
        (
            "megatron_recipes.sft",
            sft_command([data], tokenizer, base_checkpoints, run, arguments.sft_steps),
            work / f"{run.name}.log",
        )
        for data, run in sft_runs.values()
        if not _finished(run)
    ]
    if jobs:
        log.info("SFT on kept / unfiltered / checker-only samples")
        timed("sft_arms", _side_by_side, jobs)
    heldout_accuracy = {
        name: timed(
            f"evaluate_{name}",
            evaluate,
            run / "checkpoints",
            heldout,
            work / f"evaluate-{run.name}",
            arguments.max_new_tokens,
        )
        for name, (_, run) in sft_runs.items()
    }

    distillation = (
        distill_versus_student_rl(work, base, heldout, rejection, arguments, timed) if arguments.distill_steps else None
    )

    result = {
        "benchmark": "r1_language_and_rejection",
        "command": shlex.join([sys.executable, *sys.argv]),
        "base": {
            "work_dir": str(base),
            "pretrain_steps": arguments.pretrain_steps,
            "tagged_share_of_pretraining_documents": round(manifest["pretrain_tagged_share_of_documents"], 4),
            "mixed_language_sft_chains": manifest["counts"]["mixed_language_sft"],
            "mix": manifest["sizes"]["mix"],
        },
        "overlap": overlap,
        "language_consistency": {
            "mixed_sft_steps": arguments.mixed_sft_steps,
            "grpo_steps": arguments.grpo_steps,
            "grpo_overrides": arguments.grpo,
            "heldout_T1_samples_per_question": arguments.samples,
            "language_reward_weight": arguments.language_weight,
            "with_language_reward": language["language"],
            "accuracy_only": language["accuracy_only"],
        },
        "rejection_sampling": {
            "source_checkpoint": str(runs["language"] / "checkpoints"),
            "summary": {k: rejection_summary.get(k) for k in ("prompts", "samples", "kept", "dropped", "mean_reward")},
            "checker_only_summary": {
                k: checker_only_summary.get(k) for k in ("prompts", "samples", "kept", "dropped", "mean_reward")
            },
            "samples_read": len(samples),
            "kept_read": len(kept),
            "kept_accuracy_reward_mean": round(
                sum(r["provenance"]["reward"] or 0 for r in kept) / max(1, len(kept)), 4
            ),
            "unfiltered_accuracy_reward_mean": round(
                sum(r["provenance"]["reward"] or 0 for r in samples) / max(1, len(samples)), 4
            ),
            "sft_steps": arguments.sft_steps,
            "heldout_greedy_accuracy": heldout_accuracy,
        },
        "distillation_vs_student_rl": distillation,
    }
    _report(result, arguments, seconds, started, load_start)


if __name__ == "__main__":
    main()
