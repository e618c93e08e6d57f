"""How much GRPO raises accuracy on held-out questions: the tiny CPU preset (grpo_tiny_cpu) on a
verifiable reasoning-gym task the presets were not tuned to, from an imperfect SFT model, over
several seed sets. Too slow for CI (about 10 minutes per seed set on one core); the CI test
(tests/megatron_recipes/posttraining) asserts a smaller gain on the same kind of split.

    python benchmarks/grpo_heldout_gain.py                               # 3 seed sets, the default task
    python benchmarks/grpo_heldout_gain.py --seed-sets 1 --grpo-steps 50
    python benchmarks/grpo_heldout_gain.py --task 'chain_sum:min_terms=3,max_terms=3,min_digits=1,max_digits=1'
    python benchmarks/grpo_heldout_gain.py --grpo rl.kl_coefficient=0 optimizer.lr=1e-3   # try settings
    python benchmarks/grpo_heldout_gain.py --first-seed-set 2 --seed-sets 1 --held-out-only --grpo ...
    python benchmarks/grpo_heldout_gain.py --answer-distribution <run>/checkpoints <work>/sft-2-*/heldout-h200-n4.jsonl

Per seed set s (every seed below is derived from s):
  1. SFT data: `--sft-examples` questions of the task's *train* split (rl_prompts.question_split),
     answered "The answer is $\\boxed{N}$."; a byte-level BPE tokenizer trained on them.
  2. SFT of the tiny model by the real entry point (sft_tiny_cpu, `--sft-steps` steps): imperfect on
     purpose, so that GRPO has something to gain.
  3. Held-out: `--heldout` questions of the task's *held_out* split; rl_prompts.drop_overlapping
     checks them against the SFT questions and every question GRPO trains on (dropped and counted;
     the split makes the count 0).
  4. The SFT checkpoint is evaluated on the held-out set by the evaluate entry point: greedy, and
     `--samples` samples per question at temperature 1.
  5. GRPO by the real entry point: +experiment=grpo_tiny_cpu with the task as its prompts (train
     split, another seed), `--grpo-steps` steps, plus any `--grpo` overrides.
  6. The GRPO checkpoint is evaluated the same way, and on `--heldout` of GRPO's own training
     prompts (the gain there is not a held-out gain: it is printed apart).
SFT checkpoints and their evaluations are reused from --work when they exist (the same key), so
trying GRPO settings costs only steps 5-6.

Re-measured 2026-12-07 20:21-21:30 at eb102e3 (defaults as below; shared 2-core machine, load
average 8 -> 100 over the session, which changes nothing but time). The SFT checkpoints are not
the ones measured earlier (below): the code changed in between (the merges up to eb102e3), so
the same seed sets give other SFT models (held-out greedy / T=1: 0.540 / 0.371, 0.245 / 0.2225,
0.310 / 0.2425, were 0.400 / 0.310, 0.310 / 0.266, 0.275 / 0.2725). The preset as it was (lr 3e-4
constant, KL 0.04, 8 questions x 8 samples, one pass over the rollout in two mini-batches):
held-out gain at T=1 +4.2, +10.6, +6.5 points, greedy +1.5, +19.5, +5.5.
Exact T=1 accuracy (teacher-forced probability of the right answer among every integer answer
-20..30 in the SFT format, which holds 98-99.7% of the mass; no sampling noise, where 200
questions x 4 samples leave about 2 points of noise on a gain): SFT 0.383, 0.218, 0.269 -> preset
0.434, 0.314, 0.315 (+5.1, +9.6, +4.6).

Why T=1 moves less than greedy: the SFT model's answer is spread over the neighbours of the
right sum (seed set 2: 1.45 nats of entropy over the answers, the top answer's probability
0.42 on average and under 0.7 on all 200 questions, the right answer's under 0.7 on all 200 and
under 0.1 on 28, e.g. 5 + 6 + 1: 11 0.44, 10 0.34, 12 0.18). Greedy flips to the right sum where
it is one of two near-ties; T=1 accuracy needs the model to learn the exact sum, which 6,400
sampled answers teach slowly (the preset: answer entropy 1.45 -> 1.23 nats on seed set 2).

Screened (GRPO only, SFT checkpoints cached; T=1 / greedy gain on 200 held-out questions; "exact"
is the exact T=1 gain above):
  seed set 2 (preset +6.5 / +5.5, exact +4.6):
    rl.updates_per_rollout=2 (two passes over each rollout, 4 optimizer steps per GRPO step):
      +9.9 / +12.0, exact +7.2; one step (88) with k3 KL 46.7 per token and grad norm 1,217
      (clipped to 1), from which it recovered;
    rl.updates_per_rollout=4: stopped at step 51 (8 optimizer steps per GRPO step, 4x the update
      work; training reward 0.26 -> 0.37 -> 0.26 over 10-step windows);
    rl.advantage_estimator=outcome_unscaled rl.loss_aggregation=token_mean (Dr. GRPO): +2.0 /
      -0.5, exact +2.3;
    rl.updates_per_rollout=2 rl.questions_per_step=16 rl.group_size=4: +10.6 / +11.0, exact +7.2.
  seed set 0 (preset +4.2 / +1.5, exact +5.1):
    rl.updates_per_rollout=2: +3.4 / -10.5, exact -0.1: the answers sharpen (entropy 1.23 -> 0.91
      nats) onto wrong sums (greedy 0.545 -> 0.435);
    rl.temperature=1.5: +8.5 / -3.5, but exact +5.3 (the preset's +5.1: the sampled gain's extra
      3.4 points are sampling noise);
    rl.updates_per_rollout=2 rl.questions_per_step=16 rl.group_size=4: +4.2 / -8.5, exact +3.3
      (greedy 0.545 -> 0.455 again);
  seed set 1 (preset +10.6 / +19.5, exact +9.6):
    rl.updates_per_rollout=2 rl.questions_per_step=16 rl.group_size=4: +10.1 / +13.0, exact +11.1.
  all three, the same with a 5x stronger anchor, rl.updates_per_rollout=2 rl.questions_per_step=16
  rl.group_size=4 rl.kl_coefficient=0.2: seed set 0 +11.0 / +5.5, exact +8.1 (greedy no longer
  falls: most likely answer 0.545 -> 0.600); seed set 2 +8.9 / +10.5, exact +5.6; seed set 1
  +10.2 / +19.0, exact +10.9. Pooled +10.0 at T=1 (exact +8.2) against the preset's +7.1 (+6.4).
So two passes over the rollout at KL 0.04 (with or without twice the questions) raise seed sets
1 and 2 (exact +7.2 and +11.1 against +4.6 and +9.6) but sharpen seed set 0 onto wrong sums
(greedy -8.5 to -10.5, exact -0.1 to +3.3 against +5.1); KL 0.2 keeps seed set 0 from that and
is better than the preset on every seed set (exact +8.1, +10.9, +5.6 against +5.1, +9.6, +4.6),
but seed set 2 still misses 10 points at T=1 (+8.9). No setting tried meets 10 points at T=1 on
all three seed sets; the issue's goal is not met. The preset is left as it is: the best
candidate misses the goal too, doubles the update work (two passes) and changes what the CI
learning test and the preset test assert (8 x 8 samples, two mini-batches), which this session
had no time left to rerun; it is the next thing to confirm (more seed sets, the CI learning
tests) before making it the preset. Sampled gains of 200 questions x 4 samples differ from the
exact ones by up to 3.4 points here; judge settings by `--answer-distribution`.

Screened 2026-12-08 00:12-00:58 at 7780061 (rl.kl_clamp, --exact; the repeats with
--grpo-seed-offset, added after it; benchmarks/results/grpo_heldout_gain_kl_screens.json; shared
2-core machine, load average 3.5 -> 19, one run at a time). The SFT models are the ones above
(the same held-out figures to the last digit: greedy / T=1 / exact 0.54 /
0.37125 / 0.3833 on seed set 0, 0.31 / 0.2425 / 0.2693 on seed set 2, 0.245 / 0.2225 on seed set
1). All with rl.updates_per_rollout=2 rl.questions_per_step=16 rl.group_size=4 ("2x16x4"), T=1 /
greedy gain, exact T=1 gain, on 200 held-out questions; "repeat" = --grpo-seed-offset 1 (other
GRPO samples and prompts, same SFT model and held-out set):
  rl.kl_clamp=10 (k3 clamped at 10 per token in the loss; the kl metric stays unclamped):
    KL 0.2, seed set 2: +8.1 / +9.5, exact +4.3 (no KL spike at KL 0.2: max 0.11 per token, the
      clamp cut 0.02% of tokens; the unclamped run above gave +8.9 / +10.5, exact +5.6);
    KL 0.1: seed set 2 +11.8 / +15.5, exact +8.8 (repeat +10.1 / +15.5, exact +9.6); seed set 0
      +5.9 / +3.0, exact +5.2; seed set 1 +12.2 / +14.5, exact +11.4;
    KL 0.15: seed set 0 +9.2 / +6.5, exact +8.1 (repeat +8.1 / +4.0, exact +6.1); seed set 1
      +13.5 / +19.5, exact +12.7; seed set 2 +11.5 / +12.0, exact +8.8. Pooled +11.4 at T=1,
      exact +9.9 (the preset: +7.1, exact +6.4); seed set 0 misses 10 points at T=1 in both of
      its runs.
  KL 0.1 without the clamp, seed set 2: +6.2 / +3.5, exact +3.1 (repeat +7.8 / +4.0, exact +3.4):
    the clamp, which cut only 0.04% of the trained tokens (on 20 of 100 steps), is worth about 6
    exact points here in both pairs. Those tokens are ones the policy pushed far below the
    reference, where k3 ~ pi_ref/pi makes one token's gradient outweigh the batch's; gradient
    clipping (1.0; the median step's norm is 1.1-1.2, so clipping is active on most steps anyway)
    then spends the step on it. Seed set 0 at KL 0.1 without the clamp: +4.9 / +0.0, exact +2.6
    (with it +5.9 / +3.0, exact +5.2): better with the clamp in all three pairs measured. Seed set
    1 not measured without it; the clamp stays off by default (the paper's loss) and out of the
    preset, whose own runs (KL 0.04, one pass) were not measured with it.
  optimizer.lr=6e-4 (KL 0.2, clamp 10), seed set 2: -6.5 / -12.0, exact -8.5 (training reward
    0.36 -> 0.23: collapse).
  rl.updates_per_rollout=3 (KL 0.2, clamp 10), seed set 2: +1.1 / -1.0, exact -1.0.
The anchor trades seed set 0 against seed set 2: a weaker KL lets seed set 2 learn (exact +4.3 at
0.2, +8.8 at 0.15 and 0.1) while seed set 0's held-out answers drift (exact +8.1 at 0.2 and 0.15,
+5.2 at 0.1). No setting meets 10 points at T=1 on all three seed sets in one run each; the preset
is left as it is. A single run's gain moves by several points with the GRPO seed or a tiny change
of trajectory (compare the KL 0.2 runs with and without a clamp that cut 0.02% of tokens: exact
+5.6 and +4.3), so a setting needs repeats per seed set before it becomes the preset.

Earlier measurements (kept for the record; other SFT models, see above):

Measured 2026-12-07, after the evaluation and reward-model merges (defaults: chain_sum 3 one-digit
terms, SFT 500 steps, GRPO 100 steps of grpo_tiny_cpu, 200 held-out questions x 4 samples per seed
set, no overlap found; shared 2-core machine, load average 10-20, which changes nothing but time):
held-out gain at T=1 +12.9, +10.0, +3.9 points (pooled +8.9; SFT 0.310, 0.266, 0.273), greedy
+8.5, +14.0, +14.0. Seed sets 0 and 1 meet the issue's goal (>= 10 points at T=1), seed set 2 does
not. (Before those merges the same command gave +6.2, +5.1, +3.0.)

What limits it, from GRPO's per-step metrics (metrics.jsonl, means over 10-step windows): not the
signal (zero-variance groups 10-33% of groups, 43-58 of 64 outputs trained per step), not the KL
anchor (k3 KL 0.03-0.10 per token x coefficient 0.04, small beside advantages of order 1), not
length normalisation (every response is 9.2-9.5 tokens, so 1/|o| is a near-constant factor that
Adam removes): the step size. The ratio is clipped on 0.1-0.9% of tokens and the entropy of the
trained tokens falls only from 0.16 to 0.13-0.15 nats in 100 steps; on seed set 2 the training
reward stays at 0.30 from first to last window while the greedy answer improves, so the T=1
distribution is hardly sharpened. A larger step is unstable for this model: lr 1e-3 with 40
warm-up updates (20 steps) collapses on seed set 0 (training reward 0.31 -> 0.13, KL spikes to 2.5
with grad norm 17, zero-variance groups 18% -> 68% as whole groups go wrong; held-out T=1 -17.9,
greedy -29.5).

Tried on seed set 2, the one that misses (GRPO only; held-out T=1 / greedy gain, baseline +3.9 /
+14.0; the training reward is the mean of the first and last 10 steps):
  optimizer.lr=4.5e-4 optimizer.warmup_steps=20: -3.3 / +2.0 (training reward 0.28 -> 0.26);
  rl.temperature=1.5 (rollouts and loss at 1.5, so that the T=1 policy ends sharper than the one
    trained): +4.3 / +12.0 (reward at 1.5: 0.27 -> 0.29, entropy 0.23 -> 0.20);
  rl.questions_per_step=16 rl.group_size=4 (the same 64 outputs, twice the questions): +4.6 /
    +15.5 (reward 0.26 -> 0.33, where the baseline's stays at 0.30; zero-variance groups 26-39%);
  rl.kl_coefficient=0: +4.0 / +19.0 (reward 0.28 -> 0.34);
  rl.kl_coefficient=0 rl.questions_per_step=16 rl.group_size=4: +5.1 / +17.0 (reward 0.29 -> 0.34;
    on GRPO's own prompts +8.0 / +10.5); on all three seed sets +14.6, +7.6,
    +5.1 at T=1 (pooled +9.1, against the preset's +8.9), greedy +14.5, +13.0, +17.0.
Every setting moves the greedy answer (+12 to +19 except the larger lr) far more than the T=1
distribution: on this seed set's SFT model greedy and T=1 accuracy start equal (0.275, 0.273), and
100 steps of 64 outputs leave the trained tokens' entropy near where it was (0.16 -> 0.15). The preset is left
as it is (lr 3e-4 constant, KL 0.04, 8 questions x 8 samples, T=1): on the seed set it misses no
setting tried moves the T=1 gain by more than 1.2 points (within the noise of 200 questions x 4
samples, a few points), the best of them on all three seed sets only equals the preset's pooled
gain while missing 10 points on two seed sets, and larger steps lose accuracy or collapse.

Tried before those merges, seed set 0 (T=1 gain, baseline +6.2 then): rl.kl_coefficient=0 +4.0;
optimizer.lr=1e-3 -14.1 (collapse; with kl 0: -11.4); rl.group_size=16 rl.questions_per_step=4
+3.2; SFT 250 steps instead of 500 +2.5 (from 0.118). On basic_arithmetic three terms (default
+3.6): lr 1.5e-4 +3.0, lr 5e-4 -4.8, rl.temperature=0.7 +1.3, optimizer.adam_beta2=0.999 +2.4,
rl.updates_per_rollout=2 +1.6, trainer.global_batch_size=64 +2.5.

Prints ONE JSON line: per seed set the held-out accuracies before/after (greedy, sampled) and the
gains in points, the pooled gain (mean over seed sets, same number of questions each), the
overlap counts and the full command. Subprocesses run with the reproducible CPU environment
(stack_common/reproducible.py), so a seed set gives the same numbers on any machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beam_pipelines.config import TrainTokenizerConfig  # noqa: E402
from beam_pipelines.stages.train_tokenizer import build_byte_level_bpe  # noqa: E402
from megatron_recipes.data.chat import conversation_from_record, render_conversation  # noqa: E402
from megatron_recipes.data.config import ChatTemplateConfig, PromptSourceConfig  # noqa: E402
from megatron_recipes.data.rl_prompts import PromptStream, drop_overlapping, sft_records  # noqa: E402
from stack_common.reproducible import run_logged_reproducibly  # noqa: E402

log = logging.getLogger("grpo_heldout_gain")

# Not the presets' arithmetic (two-number sums and differences): three one-digit terms joined by
# + or -, in reasoning-gym's own wording, 4,000 distinct questions.
DEFAULT_TASK = "chain_sum:min_terms=3,max_terms=3,min_digits=1,max_digits=1"
SOLUTION_TEMPLATE = "The answer is $\\boxed{{answer}}$."
GRPO_QUESTIONS_PER_STEP = 8  # grpo_tiny_cpu's rl.questions_per_step (checked against its log)


def _run(module: str, arguments: list[str], log_path: Path) -> None:
    run_logged_reproducibly([sys.executable, "-m", module, *arguments], REPO, log_path)


def _write_gsm8k(path: Path, records) -> None:
    path.write_text("".join(json.dumps({"question": r.question, "answer": f"#### {r.answer}"}) + "\n" for r in records))


def _questions_per_step(overrides: list[str]) -> int:
    """GRPO's questions per step under the --grpo overrides: every question it trains on is checked."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "rl.questions_per_step":
            return int(value)
    return GRPO_QUESTIONS_PER_STEP


def _source(task: str, seed: int, split: str, limit: int | None = None) -> PromptSourceConfig:
    return PromptSourceConfig(tasks=[task], seed=seed, split=split, limit=limit)


def _evaluate(checkpoints: Path, questions: Path, output: Path, samples: int) -> dict:
    """Greedy and temperature-1 accuracy of a checkpoint on a GSM8K-format file (cached in `output`)."""
    figures = {}
    for name, sampling in (("greedy", []), ("sampled", ["sampling.temperature=1.0", f"sampling.n={samples}"])):
        directory = output / name
        if not (directory / "results.json").exists():
            _run(
                "megatron_recipes.evaluate",
                [
                    "dataset=gsm8k",
                    f"dataset.path={questions}",
                    "prompt_style=zero_shot",
                    "generator=megatron",
                    f"generator.checkpoint={checkpoints}",
                    "sampling.max_new_tokens=24",
                    "sampling.seed=7",
                    *sampling,
                    f"output_dir={directory}",
                ],
                output.parent / f"evaluate-{output.name}-{name}.log",
            )
        summary = json.loads((directory / "results.json").read_text())["summary"]
        figures[name] = summary["accuracy"]
        figures["questions"] = summary["problems"]
    return figures


def answer_distribution(checkpoint: Path, questions: Path, answers: range = range(-20, 31)) -> dict:
    """Exact T=1 accuracy of a checkpoint on a GSM8K-format file, without sampling: the probability
    of " The answer is $\\boxed{N}$." (the SFT format) for every integer N in `answers`,
    teacher-forced, normalised over them; the right answer's share, averaged over questions. Also
    the mass the format holds, the entropy over the answers and the greedy (most likely) answer's
    accuracy. Cost: len(answers) forward passes of a short sequence per question."""
    import torch  # noqa: PLC0415 (heavy: only this mode needs torch and megatron)

    from megatron_recipes.evaluation.prompts import ZERO_SHOT_INSTRUCTION  # noqa: PLC0415
    from megatron_recipes.generation.megatron import build_megatron_generator  # noqa: PLC0415

    generator = build_megatron_generator(checkpoint=str(checkpoint), device="cpu")
    candidates = list(answers)
    totals = {"right": 0.0, "format_mass": 0.0, "entropy": 0.0, "greedy": 0.0}
    records = [json.loads(line) for line in questions.read_text().splitlines()]
    for record in records:
        right = int(record["answer"].split("####")[1])
        prompt = f"User: {record['question']}\n{ZERO_SHOT_INSTRUCTION}\n\nAssistant:"
        prompt_length = len(generator.tokenizer.encode(prompt))
        rows = [generator.tokenizer.encode(prompt + f" The answer is $\\boxed{{{n}}}$.") for n in candidates]
        length = max(map(len, rows))
        tokens = torch.zeros(len(rows), length, dtype=torch.long)
        labels = torch.zeros_like(tokens)
        selected = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
            labels[i, : len(row) - 1] = torch.tensor(row[1:])
            selected[i, prompt_length - 1 : len(row) - 1] = True  # the response's tokens
        log_probs = generator.decoder.sequence_log_probs(tokens, labels, selected, 1.0, generator.vocab_size)
        mass = log_probs.sum(dim=1).double().exp()
        shares = mass / mass.sum()
        totals["right"] += float(shares[candidates.index(right)]) if right in candidates else 0.0
        totals["format_mass"] += float(mass.sum())
        totals["entropy"] += float(-(shares * shares.clamp_min(1e-300).log()).sum())
        totals["greedy"] += float(candidates[int(shares.argmax())] == right)
    names = {"right": "exact_t1_accuracy", "format_mass": "format_mass", "entropy": "answer_entropy_nats"}
    names["greedy"] = "most_likely_answer_accuracy"
    return {names[key]: round(value / len(records), 4) for key, value in totals.items()} | {"questions": len(records)}


def _cached_answer_distribution(checkpoint: Path, questions: Path, output: Path) -> dict:
    if not output.exists():
        output.write_text(json.dumps(answer_distribution(checkpoint, questions)))
    return json.loads(output.read_text())


def run_seed_set(arguments, seed_set: int) -> dict:
    task, seed = arguments.task, 1000 * (seed_set + 1)
    key = hashlib.sha1(f"{task}|{seed}|{arguments.sft_examples}|{arguments.sft_steps}".encode()).hexdigest()[:10]
    sft_dir = arguments.work / f"sft-{seed_set}-{key}"
    sft_dir.mkdir(parents=True, exist_ok=True)
    template = ChatTemplateConfig()

    # 1-2. SFT data from the train split, tokenizer, SFT (reused when finished).
    sft_stream = PromptStream(_source(task, seed, "train"), template)
    records = sft_records(sft_stream, arguments.sft_examples, SOLUTION_TEMPLATE)
    sft_questions = [r.question for r in sft_stream.take(0, arguments.sft_examples)]
    status = sft_dir / "sft" / "checkpoints" / "exit_status.json"
    if not status.exists() or json.loads(status.read_text()).get("iteration") != arguments.sft_steps:
        (sft_dir / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        texts = [
            "".join(piece.text for piece in render_conversation(conversation_from_record(r, "")[0], template))
            for r in records
        ]
        tokenizer, trainer = build_byte_level_bpe(TrainTokenizerConfig(vocab_size=400, min_frequency=2))
        tokenizer.train_from_iterator(texts, trainer=trainer)
        (sft_dir / "tokenizer").mkdir(exist_ok=True)
        tokenizer.save(str(sft_dir / "tokenizer" / "tokenizer.json"))
        _run(
            "megatron_recipes.sft",
            [
                "+experiment=sft_tiny_cpu",
                f"sft_data.paths=[{sft_dir / 'sft.jsonl'}]",
                f"sft_data.tokenizer={sft_dir / 'tokenizer'}",
                "sft_data.seq_length=160",
                "model.vocab_size=512",
                f"trainer.train_steps={arguments.sft_steps}",
                "trainer.global_batch_size=16",
                "trainer.micro_batch_size=16",
                "optimizer.lr=3e-3",
                f"trainer.seed={seed}",
                f"sft_data.seed={seed}",
                f"trainer.output_dir={sft_dir / 'sft'}",
                f"checkpoint.save_interval={arguments.sft_steps}",
                "trainer.tensorboard=false",
            ],
            sft_dir / "sft.log",
        )

    # 3. Held-out questions, checked against every training set.
    # --grpo-seed-offset repeats GRPO with other sampling and other training prompts (same SFT model,
    # same held-out questions): how much one run's gain owes to its trajectory.
    grpo_seed = seed + 1 + 100 * arguments.grpo_seed_offset
    grpo_stream = PromptStream(_source(task, grpo_seed, "train"), template)
    per_step = _questions_per_step(arguments.grpo)
    grpo_questions = [r.question for r in grpo_stream.take(0, arguments.grpo_steps * per_step)]
    held_out = PromptStream(_source(task, seed, "held_out", arguments.heldout), template).take(0, arguments.heldout)
    held_out, overlaps = drop_overlapping(held_out, {"sft": sft_questions, "grpo_prompts": grpo_questions})
    sizes = f"h{arguments.heldout}-n{arguments.samples}"  # evaluations are cached per set size
    _write_gsm8k(sft_dir / f"heldout-{sizes}.jsonl", held_out)
    trained = grpo_stream.take(0, arguments.heldout)  # GRPO's first prompts: its own training questions
    _write_gsm8k(sft_dir / f"grpo_prompts-{sizes}.jsonl", trained)

    # 4. The SFT model (cached).
    before = _evaluate(
        sft_dir / "sft" / "checkpoints",
        sft_dir / f"heldout-{sizes}.jsonl",
        sft_dir / f"eval-sft-{sizes}",
        arguments.samples,
    )
    before_trained = (
        None  # screens (--held-out-only) evaluate nothing on GRPO's own prompts
        if arguments.held_out_only and not arguments.sft_only
        else _evaluate(
            sft_dir / "sft" / "checkpoints",
            sft_dir / f"grpo_prompts-{sizes}.jsonl",
            sft_dir / f"eval-sft-trained-{sizes}",
            arguments.samples,
        )
    )

    if arguments.sft_only:
        return {
            "seed_set": seed_set,
            "held_out_questions": before["questions"],
            "sft": before,
            "sft_on_grpo_prompts": before_trained,
        }

    # 5-6. GRPO with the settings under test, then the same evaluations.
    settings = hashlib.sha1(f"{grpo_seed}|{arguments.grpo_steps}|{arguments.grpo}".encode()).hexdigest()[:10]
    grpo_dir = sft_dir / f"grpo-{settings}"
    grpo_dir.mkdir(exist_ok=True)
    started = time.time()
    status = grpo_dir / "grpo" / "checkpoints" / "exit_status.json"
    if not status.exists():
        _run(
            "megatron_recipes.grpo",
            [
                "+experiment=grpo_tiny_cpu",
                f"checkpoint.init_from={sft_dir / 'sft' / 'checkpoints'}",
                f"prompts.tasks=['{task}']",
                f"prompts.seed={grpo_seed}",
                f"rl.seed={grpo_seed}",
                f"trainer.seed={grpo_seed}",
                f"trainer.train_steps={arguments.grpo_steps}",
                f"trainer.output_dir={grpo_dir / 'grpo'}",
                f"checkpoint.save_interval={arguments.grpo_steps}",
                "rl.eval_interval=0",
                "trainer.tensorboard=false",
                *arguments.grpo,
            ],
            grpo_dir / "grpo.log",
        )
    grpo_seconds = time.time() - started
    after = _evaluate(
        grpo_dir / "grpo" / "checkpoints",
        sft_dir / f"heldout-{sizes}.jsonl",
        grpo_dir / f"eval-{sizes}",
        arguments.samples,
    )
    after_trained = (
        None
        if arguments.held_out_only
        else _evaluate(
            grpo_dir / "grpo" / "checkpoints",
            sft_dir / f"grpo_prompts-{sizes}.jsonl",
            grpo_dir / f"eval-trained-{sizes}",
            arguments.samples,
        )
    )
    if arguments.exact:
        exact_before = _cached_answer_distribution(
            sft_dir / "sft" / "checkpoints", sft_dir / f"heldout-{sizes}.jsonl", sft_dir / f"exact-{sizes}.json"
        )
        exact_after = _cached_answer_distribution(
            grpo_dir / "grpo" / "checkpoints", sft_dir / f"heldout-{sizes}.jsonl", grpo_dir / f"exact-{sizes}.json"
        )
    rows = [json.loads(line) for line in (grpo_dir / "grpo" / "metrics.jsonl").read_text().splitlines()]
    result = {
        "seed_set": seed_set,
        "held_out_questions": before["questions"],
        "overlaps_dropped": overlaps,
        "before": {"greedy": before["greedy"], "sampled": before["sampled"]},
        "after": {"greedy": after["greedy"], "sampled": after["sampled"]},
        "gain_points": {
            "sampled": round(100 * (after["sampled"] - before["sampled"]), 1),
            "greedy": round(100 * (after["greedy"] - before["greedy"]), 1),
        },
        "grpo_training_prompts_gain_points": None
        if after_trained is None
        else {
            "sampled": round(100 * (after_trained["sampled"] - before_trained["sampled"]), 1),
            "greedy": round(100 * (after_trained["greedy"] - before_trained["greedy"]), 1),
        },
        "grpo_reward_first_last": [rows[0].get("reward_mean"), rows[-1].get("reward_mean")],
        "grpo_zero_variance_groups_mean": sum(r.get("zero_variance_groups", 0) for r in rows) / len(rows),
        # Whether gradient clipping (optimizer.clip_grad, 1.0) set the step size, and KL spikes.
        "grpo_grad_norm_median": sorted(r.get("grad_norm", 0.0) for r in rows)[len(rows) // 2],
        "grpo_kl_max": max(r.get("kl", 0.0) for r in rows),
        "grpo_entropy_first_last": [rows[0].get("entropy"), rows[-1].get("entropy")],
        "grpo_seconds": round(grpo_seconds, 1),
    }
    if arguments.exact:
        result["exact_t1_accuracy"] = {"before": exact_before, "after": exact_after}
        result["exact_t1_gain_points"] = round(
            100 * (exact_after["exact_t1_accuracy"] - exact_before["exact_t1_accuracy"]), 1
        )
    log.info("seed set %d: %s", seed_set, json.dumps(result))
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[grpo_heldout_gain] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--seed-sets", type=int, default=3)
    parser.add_argument("--first-seed-set", type=int, default=0)
    parser.add_argument("--sft-examples", type=int, default=3000)
    parser.add_argument("--sft-steps", type=int, default=500)
    parser.add_argument("--grpo-steps", type=int, default=100)
    parser.add_argument("--grpo-seed-offset", type=int, default=0, help="another GRPO seed (repeats)")
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "benchmarks" / "grpo_heldout_gain")
    parser.add_argument("--grpo", nargs="*", default=[], help="extra Hydra overrides of the GRPO runs")
    parser.add_argument("--sft-only", action="store_true", help="stop after evaluating the SFT models")
    parser.add_argument(
        "--held-out-only", action="store_true", help="skip evaluating GRPO models on their own prompts (screens)"
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="also give each seed set's exact T=1 accuracy before and after (answer_distribution)",
    )
    parser.add_argument(
        "--answer-distribution",
        nargs=2,
        type=Path,
        metavar=("CHECKPOINTS", "QUESTIONS"),
        help="print a checkpoint's exact T=1 accuracy on a GSM8K-format file (answer_distribution) and stop",
    )
    arguments = parser.parse_args()
    if arguments.answer_distribution:
        print(json.dumps(answer_distribution(*arguments.answer_distribution)))
        return
    arguments.work = arguments.work.resolve()
    arguments.work.mkdir(parents=True, exist_ok=True)
    seed_sets = range(arguments.first_seed_set, arguments.first_seed_set + arguments.seed_sets)
    results = [run_seed_set(arguments, seed_set) for seed_set in seed_sets]
    if arguments.sft_only:
        print(json.dumps({"benchmark": "grpo_heldout_gain", "task": arguments.task, "sft_only": results}))
        return
    pooled = {
        kind: round(sum(r["gain_points"][kind] for r in results) / len(results), 1) for kind in ("sampled", "greedy")
    }
    print(
        json.dumps(
            {
                "benchmark": "grpo_heldout_gain",
                "task": arguments.task,
                "command": shlex.join([sys.executable, *sys.argv]),
                "sft_steps": arguments.sft_steps,
                "grpo_steps": arguments.grpo_steps,
                "grpo_overrides": arguments.grpo,
                "held_out_questions_per_seed_set": arguments.heldout,
                "samples_per_question": arguments.samples,
                "seed_sets": results,
                "pooled_gain_points": pooled,
                "min_sampled_gain_points": min(r["gain_points"]["sampled"] for r in results),
                **(
                    {"min_exact_t1_gain_points": min(r["exact_t1_gain_points"] for r in results)}
                    if arguments.exact
                    else {}
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
