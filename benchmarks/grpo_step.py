"""GRPO step time on the CPU: our recipe (megatron-core + the KV-cache generator) vs TRL's GRPOTrainer.

Same architecture and sizes (our tiny LLaMA preset; for TRL a `transformers` LlamaForCausalLM of
the same sizes: hidden 64, 4 layers, 4 heads, SwiGLU 176, RMSNorm 1e-6, RoPE 10000, untied
embeddings, the same padded vocabulary), the same byte-level tokenizer, the same prompts
(reasoning-gym one-digit sums in the DeepSeekMath chat format), G = 8 samples for 8 questions per
step, at most 16 new tokens at temperature 1, the same reward (math_accuracy), KL 0.04 (k3),
epsilon 0.2, the paper's loss aggregation, and two optimizer updates of 32 outputs per rollout
(TRL: generation_batch_size 64, per-device batch 32). Both sides start from random weights and
have a reference model.

Equal work: a random model earns no reward, so every group has zero variance; TRL trains on such
groups anyway (zero advantages, the KL term), and so does our side here
(`rl.skip_zero_variance_groups=false`): both make two optimizer updates over all 64 outputs per
step. The JSON line prints each side's updates, trained outputs and sampled tokens per step.

How it is measured: each side runs in its own process (our CPU runtime layer is process-wide)
that waits for a command before each GRPO step (TRL: a callback holds the Trainer loop between
steps), and the two processes take turns, step by step. Every figure is CPU time
(time.process_time of the worker: all its threads); each side keeps its least time over the
steps after the first (warm-up). Per step:
- step: the whole GRPO step (ours: GrpoTrainer.step and the metrics row; TRL: the Trainer's two
  optimizer steps with their generation, rewards, log-prob passes and logging);
- rollout: generation alone (ours: MegatronGenerator.generate_ids; TRL: model.generate), with
  the sampled tokens it returned (TRL: up to and including the first EOS of each row), so
  rollout tokens per CPU second pair each count with its own timing;
- ours also breaks its step down (parts_cpu_seconds_least): generation, rewards and the padded
  batch, the log-prob passes (pi_ref over all 64 outputs, pi_old over the 32 of the second
  update: the first update's pi_old is its own forward pass), the two updates, and the rest
  (metrics row, logging).
Both sides compute the same math: TRL (num_iterations 1, two optimizer steps per generation
batch) also computes pi_old by a forward pass, over all 64 outputs, and pi_ref (beta 0.04).
Ours runs those passes and the updates' forward passes with the G samples of a question sharing
one pass over its prompt (rl.shared_prefix_forward; --megatron-forward turns it off: megatron's
GPTModel forward over every row's whole sequence, as before).
Prints ONE JSON line; ratios > 1 mean ours is faster.

    python benchmarks/grpo_step.py                   # 8 timed steps each, interleaved
    python benchmarks/grpo_step.py --steps 12 --max-new-tokens 32
    python benchmarks/grpo_step.py --old-logp-from-sampler   # ours: pi_old from the sampler (TRL: a forward)
    python benchmarks/grpo_step.py --megatron-forward        # ours: megatron's forward in every pass

Figures (OMP_NUM_THREADS=1 nice python benchmarks/grpo_step.py --steps 6, shared 2-core VM;
benchmarks/results/grpo_step*.json): before the shared-prefix passes (megatron's forward, pi_old
over all rows) step 0.383 s vs TRL 0.512 s = 1.34x, rollout 1.85x (load 1.5); after them: step
0.195 s vs 0.390 s = 2.00x, rollout 21,612 vs 11,245 tokens/CPU-s = 1.92x (load 2.1); repeats
1.87x / 1.60x (load 0.7) and 2.15x / 1.78x (load 17). Then the generator's per-token work was cut
(same samples bit for bit), measured on a VM loaded by other sessions: before (eb102e3, load
28 -> 41) step 0.231 s vs 0.456 s = 1.97x, rollout 16,920 vs 8,572 = 1.97x; after (7df49b4, load
80 -> 45) step 0.224 s vs 0.453 s = 2.02x, rollout 22,007 vs 9,175 = 2.40x; a repeat (load 50 -> 21):
2.02x and 2.41x (step 0.200 s vs 0.404 s, rollout 24,118 vs 10,001); before and after back to
back (load 14 -> 27): before 1.85x and 1.79x, after 1.81x and 2.06x (rollout 19,185 vs 9,308;
our updates 0.146 s against 0.110-0.125 s in the other runs). At such loads every figure moves
by 10-20% between runs (TRL's rollout rate: 8,572-11,795). Three more before/after pairs at
load 3-10: rollout 2.35x -> 2.19x, 1.92x -> 2.19x, 1.78x -> 2.11x; step 2.12x -> 1.91x, 1.84x ->
1.98x, 1.87x -> 1.75x. Over all runs our rollout rate went from 16,920-21,948 (median 17,053)
to 19,185-24,118 (median 21,398) tokens/CPU-s; the rollout ratio is 2.06-2.41x in all six runs
after the change (1.78-2.35x before), so that target is met; the step ratio is 1.75-2.02x after
(1.84-2.12x before): not met, two thirds of our step are the two updates' forward/backward and
optimizer steps.
Then the update path was cut without changing a bit of what it computes (the loss takes the
shared-prefix pass's logits at the trained positions, no [b, s, V] scatter and gather; the
rotary swap from slices; foreach AdamW on the CPU; collectives over one rank skipped): one
update's forward + loss + backward 44.0 -> 40.9 ms (same process, interleaved, load 10-13), our
two updates 119 -> 107 ms a step. Five before/after pairs of this benchmark, alternating (load
8-23; the last two pairs also with the kv unbind): step ratio 1.77 / 1.96 / 1.83 / 2.01 / 1.81
before (median 1.83), 2.04 / 2.14 / 1.82 / 2.16 / 2.06 after (median 2.06); our updates 0.092-0.123 s
(median 0.095) against 0.105-0.135 s (median 0.109); rollout 1.91-2.27x before, 1.98-2.53x after
(benchmarks/results/grpo_step.json, update_path_cuts_before_after). At these loads runs move by
10-20%: the step target (2x) is met in four of five runs after the change, not robustly (no run
reached 2.2x).

Where the rollout's time goes (the benchmark's call alone: 64 rows, 8 distinct prompts of 32-33
tokens, 16 new tokens at T = 1, top-p 1; process time, least of 10 calls, load ~30; before ->
after the change): one call 45 ms for ~1,000 tokens; decode forward 32.5 ms over 16 steps
(2.0 ms per step, ~32 us per row-token), the prefill of the 8 prompts 3.1 ms, sampling 3.3 ms
(0.19 ms per step), bookkeeping and stop checks 4.7 ms, eval()/train() over every module 0.8 ms
(now skipped: the cached decoder applies no dropout), the rows' uniform streams 0.5 ms, the
prefill's cache row copies 0.4 ms, decoding the texts 0.4 ms. Torch calls from Python per decode
step: forward 177 -> 112 (4 layers: rotary 8 -> 3 calls, key and value cache writes 2 -> 1,
the softmax scale folded into the query tables, no sequence axis), outside it ~75 -> ~44
(sampler ~20 -> ~15, the loop's state in position-major columns); one host sync per step (the
count of running rows). No attention over padding (exact positions, prompts 32-33 tokens). An
interleaved A/B of the decode forward alone (same process, load ~50): 2.68 -> 2.52 ms per step,
so at these sizes the ops' own work (9 RMSNorms, 17 small matmuls, 8 batched attention products
per step), not the Python calls, is most of a step.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import trl as trl_package
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beam_pipelines.config import TrainTokenizerConfig  # noqa: E402
from beam_pipelines.stages.train_tokenizer import build_byte_level_bpe  # noqa: E402
from megatron_recipes.config import register_configs  # noqa: E402
from megatron_recipes.data.config import ARITHMETIC_TASK, ChatTemplateConfig, PromptSourceConfig  # noqa: E402
from megatron_recipes.data.rl_prompts import PromptStream  # noqa: E402
from megatron_recipes.models.llama import padded_vocab_size  # noqa: E402
from megatron_recipes.recipes.grpo import build_reference_model, plan_grpo  # noqa: E402
from megatron_recipes.rewards import get_reward  # noqa: E402
from megatron_recipes.rl import trainer as rl_trainer  # noqa: E402
from megatron_recipes.rl.trainer import GrpoTrainer  # noqa: E402
from megatron_recipes.training.metrics import ProgressLogger  # noqa: E402
from megatron_recipes.training.session import setup_training  # noqa: E402
from stack_common.cli import compose_config  # noqa: E402

SIZES = {"hidden_size": 64, "num_layers": 4, "num_attention_heads": 4, "ffn_hidden_size": 176}
QUESTIONS, GROUP, OUTPUTS_PER_UPDATE = 8, 8, 32

log = logging.getLogger("grpo_step")


def prepare(work: Path, questions: int) -> dict:
    """The shared tokenizer (trained on the prompts) and the prompt list."""

    # The questions of grpo_tiny_cpu's `prompts: arithmetic` preset (our side draws the same).
    stream = PromptStream(PromptSourceConfig(tasks=[ARITHMETIC_TASK]), ChatTemplateConfig())
    records = stream.take(0, questions)
    tokenizer, trainer = build_byte_level_bpe(TrainTokenizerConfig(vocab_size=400, min_frequency=2))
    texts = [r.prompt + " The answer is $\\boxed{" + r.answer + "}$." for r in stream.take(0, 2000)]
    tokenizer.train_from_iterator(texts, trainer=trainer)
    (work / "tokenizer").mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(work / "tokenizer" / "tokenizer.json"))
    prompts = [{"prompt": r.prompt, "answer": r.answer} for r in records]
    (work / "prompts.json").write_text(json.dumps(prompts))
    return {"vocab": tokenizer.get_vocab_size()}


class CommandChannel:
    """The worker's side of the protocol: a JSON line per finished step on stdout, then wait
    for the next command on stdin ("step" or "stop")."""

    def __init__(self):
        self.out = sys.stdout
        sys.stdout = sys.stderr  # libraries' prints must not mix with the protocol

    def send(self, message: dict) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def next_command(self) -> str:
        return sys.stdin.readline().strip() or "stop"


def our_worker(
    work: Path, max_new_tokens: int, steps: int, old_logp_from_sampler: bool, megatron_forward: bool
) -> None:
    torch.set_num_threads(1)
    channel = CommandChannel()
    config = compose_config(
        "grpo",
        [
            "+experiment=grpo_tiny_cpu",
            f"tokenizer={work / 'tokenizer'}",
            f"trainer.train_steps={steps + 1}",
            f"trainer.output_dir={work / 'ours'}",
            "checkpoint.dir=null",
            "trainer.tensorboard=false",
            "rl.eval_interval=0",
            f"rl.max_new_tokens={max_new_tokens}",
            f"trainer.global_batch_size={OUTPUTS_PER_UPDATE}",
            f"trainer.micro_batch_size={OUTPUTS_PER_UPDATE}",
            "optimizer.lr=1e-5",
            # Equal work with TRL, which trains on zero-variance groups (see the module docstring).
            "rl.skip_zero_variance_groups=false",
            f"rl.old_logp_from_sampler={str(old_logp_from_sampler).lower()}",
            f"rl.shared_prefix_forward={str(not megatron_forward).lower()}",
        ],
        register_configs,
    )
    plan = plan_grpo(config)
    session = setup_training(
        config.model, config.parallelism, config.optimizer, config.trainer, config.checkpoint, plan.vocab_size
    )
    trainer = GrpoTrainer(config, session, plan.tokenizer, build_reference_model(config, session), plan.prompts)
    logger = ProgressLogger(config.trainer.output_dir, steps + 1, 1, True, False)
    rollout = {"cpu": 0.0, "tokens": 0}
    generate_ids = trainer.generator.generate_ids

    def timed_generate_ids(*args, **kwargs):
        started = time.process_time()
        samples = generate_ids(*args, **kwargs)
        rollout["cpu"] += time.process_time() - started
        rollout["tokens"] += sum(len(sample.token_ids) for sample in samples)
        return samples

    trainer.generator.generate_ids = timed_generate_ids
    # Where our step's time goes: CPU seconds of its parts (the rest is metrics and logging).
    parts = {"collect": 0.0, "log_prob_passes": 0.0, "updates": 0.0}

    def timed(name, function):
        def run(*args, **kwargs):
            started = time.process_time()
            result = function(*args, **kwargs)
            parts[name] += time.process_time() - started
            return result

        return run

    trainer.collect = timed("collect", trainer.collect)
    trainer.fill_log_probs = timed("log_prob_passes", trainer.fill_log_probs)
    rl_trainer.grpo_updates = timed("updates", rl_trainer.grpo_updates)
    channel.send({"ready": True, "decoder": trainer.generator.decoder.name})
    while channel.next_command() == "step":
        rollout.update(cpu=0.0, tokens=0)
        parts.update(dict.fromkeys(parts, 0.0))
        started = time.process_time()
        values = trainer.loop_step().values  # the step run_loop takes, with its metrics row
        session.state.iteration += 1
        logger.record_step(session.state.iteration, values)
        seconds = time.process_time() - started
        channel.send(
            {
                "step_cpu": seconds,
                "rollout_cpu": rollout["cpu"],
                "sampled_tokens": rollout["tokens"],
                "sequences": QUESTIONS * GROUP,
                "updates": int(values["updates"]),
                "trained_outputs": int(values["trained_outputs"]),
                "reward_mean": values["reward_mean"],
                "parts_cpu": {
                    "generation": rollout["cpu"],
                    "rewards_and_batch": parts["collect"] - rollout["cpu"],
                    "log_prob_passes": parts["log_prob_passes"],
                    "updates": parts["updates"],
                    "metrics_and_rest": seconds - parts["collect"] - parts["log_prob_passes"] - parts["updates"],
                },
            }
        )
    logger.close()


def trl_worker(work: Path, max_new_tokens: int, steps: int, vocab: int) -> None:
    torch.set_num_threads(1)
    channel = CommandChannel()
    torch.manual_seed(1234)
    prompts = json.loads((work / "prompts.json").read_text())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(work / "tokenizer" / "tokenizer.json"), eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    tokenizer.padding_side = "left"
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=padded_vocab_size(vocab, 128, 1),
            hidden_size=SIZES["hidden_size"],
            intermediate_size=SIZES["ffn_hidden_size"],
            num_hidden_layers=SIZES["num_layers"],
            num_attention_heads=SIZES["num_attention_heads"],
            num_key_value_heads=SIZES["num_attention_heads"],
            max_position_embeddings=1024,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            attention_bias=False,
            mlp_bias=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        )
    )
    # TRL builds its reference model from the policy's path: save the random model locally.
    model_dir = work / "trl_model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    def accuracy(completions, answer, **_):
        return [r if r is not None else 0.0 for r in get_reward("math_accuracy")(completions, answer)]

    rollout = {"cpu": 0.0, "tokens": 0, "sequences": 0}
    generate = LlamaForCausalLM.generate
    eos = tokenizer.eos_token_id

    def timed_generate(self, *args, **kwargs):
        started = time.process_time()
        output = generate(self, *args, **kwargs)
        rollout["cpu"] += time.process_time() - started
        prompt_length = kwargs["input_ids"].shape[1]
        for row in output[:, prompt_length:].tolist():
            rollout["tokens"] += row.index(eos) + 1 if eos in row else len(row)
            rollout["sequences"] += 1
        return output

    LlamaForCausalLM.generate = timed_generate

    class StepByStep(TrainerCallback):
        """Reports each GRPO step (two optimizer steps) and waits for the next command."""

        def __init__(self):
            self.started = time.process_time()
            self.rewards: list[float] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.rewards.append(logs["reward"])

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % 2:
                return
            channel.send(
                {
                    "step_cpu": time.process_time() - self.started,
                    "rollout_cpu": rollout["cpu"],
                    "sampled_tokens": rollout["tokens"],
                    "sequences": rollout["sequences"],
                    "updates": 2,
                    "trained_outputs": rollout["sequences"],
                    "reward_mean": self.rewards[-1] if self.rewards else math.nan,
                }
            )
            if channel.next_command() != "step":
                control.should_training_stop = True
            rollout.update(cpu=0.0, tokens=0, sequences=0)
            self.started = time.process_time()

    config = GRPOConfig(
        output_dir=str(work / "trl"),
        max_steps=2 * (steps + 2),
        learning_rate=1e-5,
        per_device_train_batch_size=OUTPUTS_PER_UPDATE,
        generation_batch_size=QUESTIONS * GROUP,
        num_generations=GROUP,
        max_completion_length=max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        beta=0.04,
        epsilon=0.2,
        loss_type="grpo",
        scale_rewards="group",
        num_iterations=1,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=1234,
        dataloader_num_workers=0,
        disable_dropout=True,
    )
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=accuracy,
        args=config,
        train_dataset=Dataset.from_list(prompts),
        processing_class=tokenizer,
        callbacks=[StepByStep()],
    )
    channel.send({"ready": True})
    if channel.next_command() == "step":
        trainer.callback_handler.callbacks[-1].started = time.process_time()
        trainer.train()


class Worker:
    def __init__(self, side: str, work: Path, arguments, vocab: int):
        command = [
            sys.executable,
            __file__,
            "--side",
            side,
            "--work",
            str(work),
            "--steps",
            str(arguments.steps),
            "--max-new-tokens",
            str(arguments.max_new_tokens),
            *(["--old-logp-from-sampler"] if arguments.old_logp_from_sampler else []),
            *(["--megatron-forward"] if arguments.megatron_forward else []),
            "--vocab",
            str(vocab),
        ]
        self.side = side
        self.log = open(work / f"{side}.log", "w")
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.ready = self.receive()

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.log.flush()
            tail = (Path(self.log.name).read_text())[-3000:]
            raise RuntimeError(f"the {self.side} worker stopped (status {self.process.returncode}): {tail}")
        return json.loads(line)

    def step(self) -> dict:
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        return self.receive()

    def stop(self) -> None:
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        self.process.wait(timeout=600)
        self.log.close()


def _environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def summary(rows: list[dict]) -> dict:
    """Least and median CPU figures over the timed steps (the first step is the warm-up)."""
    timed = rows[1:]
    rates = [row["sampled_tokens"] / row["rollout_cpu"] for row in timed]
    return {
        "step_cpu_seconds_least": round(min(row["step_cpu"] for row in timed), 4),
        "step_cpu_seconds_median": round(statistics.median(row["step_cpu"] for row in timed), 4),
        "rollout_cpu_seconds_least": round(min(row["rollout_cpu"] for row in timed), 4),
        "rollout_tokens_per_cpu_second_best": round(max(rates)),
        "rollout_tokens_per_cpu_second_median": round(statistics.median(rates)),
        "sampled_tokens_per_step": round(statistics.mean(row["sampled_tokens"] for row in timed), 1),
        "sequences_per_step": sorted({row["sequences"] for row in timed}),
        "updates_per_step": sorted({row["updates"] for row in timed}),
        "trained_outputs_per_step": sorted({row["trained_outputs"] for row in timed}),
        "reward_mean": round(statistics.mean(row["reward_mean"] for row in timed), 4),
        **(
            {
                "parts_cpu_seconds_least": {
                    name: round(min(row["parts_cpu"][name] for row in timed), 4) for name in timed[0]["parts_cpu"]
                }
            }
            if "parts_cpu" in timed[0]
            else {}
        ),
        "steps_timed": len(timed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed GRPO steps per side (after one warm-up step)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--side", choices=["both", "ours", "trl"], default="both")
    parser.add_argument("--work", default=None)
    parser.add_argument("--vocab", type=int, default=0)
    parser.add_argument(
        "--old-logp-from-sampler",
        action="store_true",
        help="our side takes pi_old from the sampler's log-probs (rl.old_logp_from_sampler): one forward pass fewer",
    )
    parser.add_argument(
        "--megatron-forward",
        action="store_true",
        help="our side runs megatron's forward in the log-prob passes and updates (rl.shared_prefix_forward=false)",
    )
    arguments = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[grpo_step] %(message)s")
    if arguments.side == "ours":
        our_worker(
            Path(arguments.work),
            arguments.max_new_tokens,
            arguments.steps,
            arguments.old_logp_from_sampler,
            arguments.megatron_forward,
        )
        return
    if arguments.side == "trl":
        trl_worker(Path(arguments.work), arguments.max_new_tokens, arguments.steps, arguments.vocab)
        return

    with tempfile.TemporaryDirectory(prefix="grpo_step_") as directory:
        work = Path(directory)
        info = prepare(work, QUESTIONS * (arguments.steps + 3))
        workers = [Worker("ours", work, arguments, info["vocab"]), Worker("trl", work, arguments, info["vocab"])]
        rows: dict[str, list[dict]] = {worker.side: [] for worker in workers}
        try:
            for step in range(arguments.steps + 1):
                # Alternate who goes first, so that neither side always follows the other.
                for worker in workers if step % 2 == 0 else workers[::-1]:
                    rows[worker.side].append(worker.step())
                log.info("step %d: %s", step, {side: round(r[-1]["step_cpu"], 3) for side, r in rows.items()})
        finally:
            for worker in workers:
                worker.stop()
    ours, peer = summary(rows["ours"]), summary(rows["trl"])
    print(
        json.dumps(
            {
                "benchmark": "grpo_step",
                "device": "cpu",
                "measure": "CPU seconds of each worker process (process_time), sides interleaved step by step, "
                "least over the timed steps",
                "load_average": [round(value, 2) for value in os.getloadavg()],
                "threads": 1,
                "model": {**SIZES, "vocab": info["vocab"]},
                "questions_per_step": QUESTIONS,
                "group_size": GROUP,
                "max_new_tokens": arguments.max_new_tokens,
                "our_decoder": workers[0].ready.get("decoder"),
                "our_old_logp": "sampler"
                if arguments.old_logp_from_sampler
                else "first update: its own forward; second update: a forward pass",
                "our_forward": "megatron GPTModel" if arguments.megatron_forward else "shared prompt prefix",
                "ours": ours,
                f"trl_{trl_package.__version__}": peer,
                "equal_work": ours["updates_per_step"] == peer["updates_per_step"]
                and ours["trained_outputs_per_step"] == peer["trained_outputs_per_step"]
                and ours["sequences_per_step"] == peer["sequences_per_step"],
                "step_time_ratio_trl_over_ours": round(
                    peer["step_cpu_seconds_least"] / ours["step_cpu_seconds_least"], 3
                ),
                "rollout_tokens_per_second_ratio_ours_over_trl": round(
                    ours["rollout_tokens_per_cpu_second_best"] / peer["rollout_tokens_per_cpu_second_best"], 3
                ),
                "targets": {"step_time_ratio": 2.0, "rollout_tokens_per_second_ratio": 2.0},
            }
        )
    )


if __name__ == "__main__":
    main()
