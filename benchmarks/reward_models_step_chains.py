"""Reward models on the step-chain task (megatron_recipes/data/step_chains.py), end to end on the
CPU: the evidence figures of outcome and process reward models, Math-Shepherd labels,
best-of-16 reranking, GRPO with learned rewards and GRPO vs PPO.

Every stage is a real entry point run as a subprocess; a stage whose output exists is skipped,
so a rerun continues (delete a directory under --work to redo it):

  task, tokenizer  step_chains.write_task (SFT data with slips, training and held-out questions)
  sft              megatron_recipes.sft: the tiny policy, imperfect by construction
  labels_*         megatron_recipes.label_steps from the SFT policy: outcome labels on the training
                   questions (ORM data), Math-Shepherd labels (hard and soft) on a subset of them
                   (PRM data), and 16 solutions of every held-out question (evaluation); the
                   ground-truth step labels are added to each (step_chains annotate)
  orm, prm_truth, prm_shepherd   megatron_recipes.reward_model: an ORM (outcome labels;
                   --orm-pooling: orm/ for step_product, orm_last_token/ for last_token), a PRM on
                   the ground-truth step labels of the same solutions, a PRM on Math-Shepherd hard
                   labels (--shepherd-label) of the same solutions, all from the SFT checkpoint
  grpo_orm, grpo_prm, ppo_orm    megatron_recipes.grpo from the SFT checkpoint with the ORM
                   (outcome supervision), the Shepherd PRM (process supervision), both with
                   rl.kl_coefficient=--grpo-kl, and PPO (rl.advantage_estimator=gae) with the ORM;
                   held-out accuracy at temperature 1 every 10 steps; grpo_rule (the rule-based
                   accuracy alone) and grpo_orm_combined / grpo_prm_combined (the rule + the RM
                   with --combined-rm-weight) at --combined-kl
  heldout16_<run>  label_steps of each run's final policy on the held-out questions x 16, as
                   labels_heldout samples the SFT policy

Then, in this process, the held-out solutions are scored by each reward model: AUCs against
final correctness (ORM) and ground-truth step labels (PRMs), the same within each question only
(beside the AUC an oracle of question difficulty alone reaches), and the best-of-16 table
(random choice, self-consistency = majority vote, each RM's top solution, a PRM ranking by a
solution's lowest step score as Math-Shepherd does, and Math-Shepherd's self-consistency + RM:
votes weighted by the RM's scores). Held-out questions are checked to be disjoint from the SFT
and RL training questions. Prints ONE JSON line with every figure.

Figures (benchmarks/results/reward_models_step_chains.json, every stage rebuilt 2026-12-07 on 2
shared cores at load average 27-100 from other jobs; 180 held-out questions x 16 solutions of the
SFT policy at temperature 1, accuracy 0.538):
  Math-Shepherd labels vs ground truth (3576 solutions, 14899 steps): agreement 0.931 hard,
      0.924 soft, soft-label AUC 0.977.
  PRM on ground-truth labels: held-out step AUC 0.823 (bar 0.9: NOT met here; 0.910 in an
      earlier build with another SFT run of the same settings). PRM on Math-Shepherd hard labels:
      0.778 (bar 0.85: NOT met here; 0.892 before).
  ORM (--orm-pooling step_product, P(correct) = the product of step-end probabilities, trained on
      the outcome label only): AUC of final correctness 0.728 (bar 0.9: NOT met); within a question
      0.704, where the last-token ORM on the same data reaches 0.737 AUC but only 0.622 within a
      question; question difficulty alone gives 0.738. So neither ORM checks solutions much
      beyond knowing which questions are hard; step_product tells a question's right solutions
      from its wrong ones better (best-of-16 top 0.517 vs 0.406; weighted vote 0.817 vs 0.772).
  Best-of-16 (fraction right): random 0.538, self-consistency 0.733, ORM 0.517, PRM truth 0.550,
      PRM Shepherd 0.556 (none beats self-consistency; pass@16 0.989); self-consistency + RM:
      ORM 0.817, PRM truth 0.828, PRM Shepherd 0.828 (all beat both baselines).
  GRPO, 40 steps (held-out accuracy at temperature 1: the 80 x 4 check during training from
      0.6375, and every held-out question x 16 after (heldout_x16), against the SFT's 0.538):
      learned reward only, KL 0.5: ORM 0.7125 (+7.5) / 0.587 (+4.9); Shepherd PRM 0.6375 (0) /
      0.520 (-1.8): bar +10 NOT met. Combined, rule-based accuracy + 0.5 x the RM, KL 0.04:
      ORM 0.925 (+28.8) / 0.829 (+29.1), PRM 0.95 (+31.3) / 0.902 (+36.4): met as combined, but
      the rule alone (grpo_rule, same settings) gives 0.9375 (+30.0) / 0.859 (+32.1): the ORM adds
      nothing, the PRM +4.3 points on the x16 check. PPO with the ORM: 0.7875 (+15.0) / 0.656 (+11.7).
      Screens (pure ORM, KL 0.5): last-token ORM 0.75 / 0.579; group 16 x 4 questions 0.725 / 0.542;
      pure step-product ORM at KL 0.04 collapses, 0.3875 / 0.279 (results one too small, as the
      last-token ORM's policy did before); pure PRM on ground-truth labels 0.6875 / 0.593 (+5.5).

Iterative RL with the last-token ORM (earlier build; python -m megatron_recipes.iterative_rl, 4
rounds of 10 GRPO steps at KL 0.04, 10% replay): held-out 0.559 -> 0.286; the retrained ORM kept
being fooled (AUC 0.72-0.81 on the new policy's solutions). Not run with a PRM.

What was tried for the ORM and did not reach 0.9: 16000 solutions instead of 4000 (earlier build:
0.813, plateau from step 150); the outcome label at every step end as a verifier (0.785);
step-product pooling (above: better within a question, not overall). About a quarter of the
policy's wrong solutions hold no arithmetic slip but a wrong operand or a wrongly copied value
(checked against the question), which a step-local check cannot catch.

    python benchmarks/reward_models_step_chains.py --work /tmp/rm_bench
    python benchmarks/reward_models_step_chains.py --work /tmp/rm_bench --grpo-steps 60
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from megatron_recipes.data.step_chains import (  # noqa: E402
    TRUE_LABEL_FIELD,
    annotate_true_labels,
    check_disjoint,
    read_questions,
    write_task,
)
from megatron_recipes.generation.tokenizer import load_text_tokenizer  # noqa: E402
from megatron_recipes.reward_models.objectives import roc_auc  # noqa: E402
from megatron_recipes.reward_models.scoring import RewardModelScorer  # noqa: E402
from megatron_recipes.runtime.config import ParallelismConfig  # noqa: E402
from megatron_recipes.runtime.distributed import initialize_runtime, shutdown_runtime  # noqa: E402
from megatron_recipes.training.metrics import read_metrics  # noqa: E402
from tests.megatron_recipes.posttraining.arithmetic import chat_texts, train_small_tokenizer  # noqa: E402

_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def _environment() -> dict:
    # A stage starts its own process group: not the one this process made for scoring.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def run(module: str, *arguments: str, log: Path) -> None:
    started = time.perf_counter()
    with log.open("w") as handle:
        result = subprocess.run(
            [sys.executable, "-m", module, *arguments], cwd=REPO, env=_environment(), stdout=handle, stderr=handle
        )
    if result.returncode != 0:
        raise RuntimeError(f"{module} failed (exit {result.returncode}); see {log}")
    print(f"[bench] {module} {log.stem}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def finished(run_dir: Path) -> bool:
    status = run_dir / "checkpoints" / "exit_status.json"
    return status.exists() and json.loads(status.read_text()).get("reason") == "finished"


def read_records(directory: Path) -> list[dict]:
    return [
        json.loads(line)
        for shard in sorted(directory.glob("shard_*.jsonl"))
        for line in shard.read_text().splitlines()
        if line.strip()
    ]


def prepare(work: Path, args) -> tuple[Path, Path]:
    task = work / "task"
    if not (task / "tokenizer" / "tokenizer.json").exists():
        write_task(task, sft=args.sft_examples, train=args.train_questions, heldout=args.heldout_questions, seed=0)
        records = [json.loads(line) for line in (task / "sft.jsonl").read_text().splitlines()]
        train_small_tokenizer(task / "tokenizer", chat_texts(records))
    sft_questions = [json.loads(line)["messages"][0]["content"].split("\n")[0] for line in (task / "sft.jsonl").open()]
    check_disjoint(
        read_questions(task / "heldout_questions.jsonl"), sft_questions, read_questions(task / "train_questions.jsonl")
    )
    sft = work / "sft"
    if not finished(sft):
        run(
            "megatron_recipes.sft",
            "+experiment=sft_tiny_cpu",
            f"sft_data.paths=[{task / 'sft.jsonl'}]",
            f"sft_data.tokenizer={task / 'tokenizer'}",
            "sft_data.seq_length=256",
            "model.vocab_size=512",
            f"trainer.train_steps={args.sft_steps}",
            "trainer.global_batch_size=16",
            "trainer.micro_batch_size=16",
            "optimizer.lr=3e-3",
            f"trainer.output_dir={sft}",
            "checkpoint.save_interval=0",
            "trainer.log_interval=50",
            "trainer.tensorboard=false",
            log=work / "sft.log",
        )
    return task, sft / "checkpoints"


def label(
    work: Path, name: str, policy: Path, questions: Path, limit: int, samples: int, method: str, seed: int
) -> Path:
    output = work / name
    if not (output / "summary.json").exists():
        run(
            "megatron_recipes.label_steps",
            f"policy={policy}",
            "device=cpu",
            "prompts.source=gsm8k",
            f"prompts.path={questions}",
            f"prompts.limit={limit}",
            f"samples_per_question={samples}",
            "sampling.max_new_tokens=48",
            f"label.method={method}",
            "label.completions=8",
            "label.completion_max_new_tokens=48",
            "questions_per_shard=100",
            f"output_dir={output}",
            f"seed={seed}",
            log=work / f"{name}.log",
        )
    if not (output / "agreement.json").exists():
        (output / "agreement.json").write_text(json.dumps(annotate_true_labels(output)))
    return output


def train_reward_model(
    work: Path, name: str, init: Path, data: Path, kind: str, field: str, steps: int, *overrides: str
) -> Path:
    output = work / name
    if not finished(output):
        run(
            "megatron_recipes.reward_model",
            "+experiment=reward_model_tiny_cpu",
            f"checkpoint.init_from={init}",
            f"reward_model.kind={kind}",
            f"reward_model.train_paths=[{data}]",
            f"reward_model.step_label_field={field}",
            f"trainer.train_steps={steps}",
            f"trainer.output_dir={output}",
            "checkpoint.save_interval=0",
            "trainer.tensorboard=false",
            *overrides,
            log=work / f"{name}.log",
        )
    return output / "checkpoints"


def grpo(work: Path, name: str, task: Path, init: Path, steps: int, *overrides: str) -> dict:
    output = work / name
    if not finished(output):
        run(
            "megatron_recipes.grpo",
            "+experiment=grpo_tiny_cpu",
            f"checkpoint.init_from={init}",
            "prompts.source=gsm8k",
            f"prompts.path={task / 'train_questions.jsonl'}",
            "eval_prompts.source=gsm8k",
            f"eval_prompts.path={task / 'heldout_questions.jsonl'}",
            "eval_prompts.limit=100",
            "rl.max_new_tokens=48",
            "rl.eval_temperature=1.0",
            "rl.eval_samples=4",
            "rl.eval_interval=10",
            f"trainer.train_steps={steps}",
            f"trainer.output_dir={output}",
            "checkpoint.save_interval=0",
            "trainer.tensorboard=false",
            *overrides,
            log=work / f"{name}.log",
        )
    rows = read_metrics(output / "metrics.jsonl")
    # The final policy on every held-out question x 16 samples at temperature 1, sampled as the
    # SFT policy's were (labels_heldout: same questions, seed and settings): the 80 x 4 check
    # during training moves 5 points with its seed, this one much less.
    final = read_records(
        label(
            work, f"heldout16_{name}", output / "checkpoints", task / "heldout_questions.jsonl", 200, 16, "outcome", 13
        )
    )
    return {
        "heldout_x16_accuracy_after": round(sum(r["correct"] for r in final) / len(final), 4),
        "heldout_accuracy_before": rows[0]["validation_accuracy"],
        "heldout_accuracy_after": rows[steps]["validation_accuracy"],
        "gain_points": 100 * (rows[steps]["validation_accuracy"] - rows[0]["validation_accuracy"]),
        # Every held-out check (every 10 steps): reward hacking shows as a rise, then a fall.
        "heldout_accuracy_by_step": {
            step: row["validation_accuracy"] for step, row in sorted(rows.items()) if "validation_accuracy" in row
        },
        "peak_memory_gib": max(row.get("memory_gib", 0.0) for row in rows.values()),
        "seconds_per_step": sum(row["step_seconds"] for row in rows.values() if "step_seconds" in row) / steps,
    }


def score_heldout(
    work: Path, records: list[dict], checkpoints: dict[str, Path], tokenizer_path: Path
) -> dict[str, list[list[float]]]:
    """Each reward model's scores of the held-out solutions, kept in work/heldout_scores.json
    (a model whose scores are there is not scored again)."""
    cache = work / "heldout_scores.json"
    scores = json.loads(cache.read_text()) if cache.exists() else {}
    missing = {name: checkpoint for name, checkpoint in checkpoints.items() if name not in scores}
    if missing:
        tokenizer = load_text_tokenizer(str(tokenizer_path))
        initialize_runtime("cpu", ParallelismConfig(), seed=3)
        items = [(tokenizer.encode(r["prompt"]), tokenizer.encode(r["response"]), r["response"]) for r in records]
        for name, checkpoint in missing.items():
            scorer = RewardModelScorer.load(str(checkpoint), ParallelismConfig(), "cpu", "fp32", 32, tokenizer)
            scores[name] = scorer.score(items)
            cache.write_text(json.dumps(scores))
        shutdown_runtime()
    return scores


def auc(values: list[float], labels: list[float]) -> float:
    return round(roc_auc(values, labels), 4)


def within_question_auc(records: list[dict], values: list[float], labels: list[float]) -> float:
    """AUC over the (correct, wrong) pairs of solutions of the same question only: how well a
    score tells a question's right solutions from its wrong ones, whatever the question's
    difficulty (the plain AUC also rewards knowing which questions are hard; best-of-N does not)."""
    by_question: dict[str, list[int]] = collections.defaultdict(list)
    for index, record in enumerate(records):
        by_question[record["question"]].append(index)
    wins = pairs = 0.0
    for indices in by_question.values():
        right = [values[i] for i in indices if labels[i] >= 0.5]
        wrong = [values[i] for i in indices if labels[i] < 0.5]
        for good in right:
            for bad in wrong:
                pairs += 1
                wins += 1.0 if good > bad else 0.5 if good == bad else 0.0
    return round(wins / pairs, 4) if pairs else float("nan")


def question_prior_auc(records: list[dict]) -> float:
    """The AUC of an oracle that knows only each held-out question's accuracy (the fraction of its
    16 solutions that are right): the part of an AUC that difficulty alone explains."""
    by_question: dict[str, list[float]] = collections.defaultdict(list)
    for record in records:
        by_question[record["question"]].append(float(record["correct"]))
    prior = [sum(by_question[r["question"]]) / len(by_question[r["question"]]) for r in records]
    return auc(prior, [r["correct"] for r in records])


def best_of_n(records: list[dict], scores: dict[str, list[list[float]]], n: int, seed: int = 0) -> dict:
    by_question: dict[str, list[int]] = collections.defaultdict(list)
    for index, record in enumerate(records):
        by_question[record["question"]].append(index)
    rng = random.Random(seed)
    table = collections.Counter()
    questions = 0
    for indices in by_question.values():
        indices = indices[:n]
        if len(indices) < n:
            continue
        questions += 1
        correct = [records[i]["correct"] for i in indices]
        table["random"] += sum(correct) / n
        answers = [(_BOXED.search(records[i]["response"]) or [None, None])[1] for i in indices]
        votes = collections.Counter(a for a in answers if a is not None)
        if votes:
            top = max(votes.values())
            winners = [a for a, count in votes.items() if count == top]
            winner = rng.choice(sorted(winners))
            table["self_consistency"] += correct[answers.index(winner)]
        table["pass_at_n"] += max(correct)
        solution_scores = {
            "orm": [scores["orm"][i][0] for i in indices],
            **{name: [min(scores[name][i] or [0.0]) for i in indices] for name in ("prm_truth", "prm_shepherd")},
        }
        for name, values in solution_scores.items():
            table[name] += correct[max(range(n), key=values.__getitem__)]
            # Math-Shepherd's "self-consistency + RM": each answer's votes weighted by the RM's scores.
            weighted = collections.Counter()
            for answer, value in zip(answers, values):
                if answer is not None:
                    weighted[answer] += value
            if weighted:
                table[f"{name}_weighted_vote"] += correct[answers.index(max(weighted, key=weighted.__getitem__))]
    return {"questions": questions, **{name: round(value / questions, 4) for name, value in table.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--sft-examples", type=int, default=20000)
    parser.add_argument("--train-questions", type=int, default=1000)
    parser.add_argument("--heldout-questions", type=int, default=200)
    parser.add_argument("--sft-steps", type=int, default=800)
    parser.add_argument("--orm-questions", type=int, default=1000)
    parser.add_argument("--prm-questions", type=int, default=1000)
    parser.add_argument("--shepherd-label", choices=("soft", "hard"), default="hard")
    parser.add_argument("--reward-model-steps", type=int, default=400)
    parser.add_argument("--prm-steps", type=int, default=600)
    parser.add_argument("--grpo-steps", type=int, default=40)
    # The KL coefficient of the two GRPO runs with learned rewards (PPO keeps the preset's 0.04).
    parser.add_argument("--grpo-kl", type=float, default=0.5)
    # Where the ORM reads its score: step_product (P(correct) = the product of the step-end
    # probabilities, trained on the outcome label only) or last_token (the response's last token).
    parser.add_argument("--orm-pooling", choices=("step_product", "last_token"), default="step_product")
    # The learned reward's weight beside the rule-based accuracy (weight 1) in the combined GRPO
    # runs (grpo_orm_combined, grpo_prm_combined); the pure-RM runs use the learned reward alone.
    parser.add_argument("--combined-rm-weight", type=float, default=0.5)
    # The KL coefficient of the combined runs and of the rule-only baseline (grpo_rule): the rule
    # keeps the policy from exploiting the reward model, so the preset's 0.04 by default.
    parser.add_argument("--combined-kl", type=float, default=0.04)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    task, sft = prepare(work, args)
    train_questions, heldout_questions = task / "train_questions.jsonl", task / "heldout_questions.jsonl"
    outcome = label(work, "labels_train_outcome", sft, train_questions, args.orm_questions, 4, "outcome", 11)
    shepherd = label(work, "labels_train_shepherd", sft, train_questions, args.prm_questions, 4, "math_shepherd", 12)
    heldout = label(work, "labels_heldout", sft, heldout_questions, args.heldout_questions, 16, "outcome", 13)
    orm = train_reward_model(
        work,
        "orm" if args.orm_pooling == "step_product" else "orm_last_token",
        sft,
        outcome,
        "orm",
        "step_labels",
        args.reward_model_steps,
        f"reward_model.outcome_pooling={args.orm_pooling}",
    )
    # Both PRMs learn from the same solutions (every outcome-labelled one: the Math-Shepherd set
    # labels the same 1000 questions x 4 samples) for the same steps; only the labels differ.
    prm_truth = train_reward_model(work, "prm_truth", sft, outcome, "prm", TRUE_LABEL_FIELD, args.prm_steps)
    prm_shepherd = train_reward_model(
        work,
        "prm_shepherd",
        sft,
        shepherd,
        "prm",
        f"{args.shepherd_label}_step_labels",
        args.prm_steps,
    )
    records = read_records(heldout)
    scores = score_heldout(
        work, records, {"orm": orm, "prm_truth": prm_truth, "prm_shepherd": prm_shepherd}, task / "tokenizer"
    )
    kl = f"rl.kl_coefficient={args.grpo_kl}"
    true_steps = [label for r in records for label in r[TRUE_LABEL_FIELD]]
    outcomes = [r["correct"] for r in records]
    lowest_step = {name: [min(s) if s else 0.0 for s in scores[name]] for name in ("prm_truth", "prm_shepherd")}
    figures = {
        "sft_heldout_accuracy_temperature_1": round(sum(r["correct"] for r in records) / len(records), 4),
        "orm_heldout_auc_final_correctness": auc([s[0] for s in scores["orm"]], outcomes),
        "prm_truth_heldout_step_auc": auc([v for s in scores["prm_truth"] for v in s], true_steps),
        "prm_shepherd_heldout_step_auc": auc([v for s in scores["prm_shepherd"] for v in s], true_steps),
        # Final correctness told apart within each question (what best-of-N needs), beside the
        # AUC that knowing only each question's difficulty reaches.
        "within_question_auc_final_correctness": {
            "orm": within_question_auc(records, [s[0] for s in scores["orm"]], outcomes),
            "prm_truth_lowest_step": within_question_auc(records, lowest_step["prm_truth"], outcomes),
            "prm_shepherd_lowest_step": within_question_auc(records, lowest_step["prm_shepherd"], outcomes),
        },
        "question_difficulty_oracle_auc": question_prior_auc(records),
        "shepherd_label_agreement": json.loads((shepherd / "agreement.json").read_text()),
        "best_of_16": best_of_n(records, scores, 16),
        "grpo_orm": grpo(
            work, "grpo_orm", task, sft, args.grpo_steps, f"rl.reward_model={orm}", "rl.reward_weights=[0.0]", kl
        ),
        "grpo_prm": grpo(
            work,
            "grpo_prm",
            task,
            sft,
            args.grpo_steps,
            "rl.advantage_estimator=process",
            f"rl.reward_model={prm_shepherd}",
            "rl.reward_weights=[0.0]",
            kl,
        ),
        # Combined rewards (the issue allows them; reported apart from the pure-RM runs above):
        # the rule-based accuracy (weight 1) plus the learned reward (--combined-rm-weight), and
        # the rule alone at the same settings as their baseline.
        "grpo_rule": grpo(work, "grpo_rule", task, sft, args.grpo_steps, f"rl.kl_coefficient={args.combined_kl}"),
        "grpo_orm_combined": grpo(
            work,
            "grpo_orm_combined",
            task,
            sft,
            args.grpo_steps,
            f"rl.reward_model={orm}",
            f"rl.reward_model_weight={args.combined_rm_weight}",
            f"rl.kl_coefficient={args.combined_kl}",
        ),
        "grpo_prm_combined": grpo(
            work,
            "grpo_prm_combined",
            task,
            sft,
            args.grpo_steps,
            "rl.advantage_estimator=process",
            f"rl.reward_model={prm_shepherd}",
            f"rl.reward_model_weight={args.combined_rm_weight}",
            f"rl.kl_coefficient={args.combined_kl}",
        ),
        "ppo_orm": grpo(
            work,
            "ppo_orm",
            task,
            sft,
            args.grpo_steps,
            "rl.advantage_estimator=gae",
            f"rl.reward_model={orm}",
            "rl.reward_weights=[0.0]",
            f"rl.critic_init_from={orm}",
            "rl.critic_lr=1e-3",
        ),
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
