"""GRPO step time on the CPU: our recipe (megatron-core + the KV-cache generator) vs TRL's GRPOTrainer.

Same architecture and sizes (our tiny LLaMA preset; for TRL a `transformers` LlamaForCausalLM of
the same sizes: hidden 64, 4 layers, 4 heads, SwiGLU 176, RMSNorm 1e-6, RoPE 10000, untied
embeddings, the same padded vocabulary), the same byte-level tokenizer, the same prompts
(reasoning-gym one-digit sums in the DeepSeekMath chat format), G = 8 samples for 8 questions per
step, at most 16 new tokens at temperature 1, the same reward (math_accuracy), KL 0.04 (k3),
epsilon 0.2, the paper's loss aggregation, and two optimizer updates of 32 outputs per rollout
(TRL: generation_batch_size 64, per-device batch 32). Both start from random weights and have a
reference model. Each side runs in its own process (our CPU runtime layer is process-wide),
one after the other in this run, with OMP_NUM_THREADS=1; prints ONE JSON line:

    python benchmarks/grpo_step.py                   # 10 GRPO steps each, the first not timed
    python benchmarks/grpo_step.py --steps 20 --max-new-tokens 32

Figures per side: median seconds per GRPO step (rollout + reward + 2 updates; ours from the
entry point's metrics.jsonl, TRL's from the wall time between every second optimizer step) and
rollout tokens per second (sampled tokens / generation wall time; TRL's generate() is timed by
its own profiling hooks). Ratios > 1 mean ours is faster. The machine is shared: only the ratios
of one run mean something.
"""

from __future__ import annotations

import argparse
import json
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
from trl.extras import profiling

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beam_pipelines.config import TrainTokenizerConfig  # noqa: E402
from beam_pipelines.stages.train_tokenizer import build_byte_level_bpe  # noqa: E402
from megatron_recipes.data.config import ARITHMETIC_TASK, ChatTemplateConfig, PromptSourceConfig  # noqa: E402
from megatron_recipes.data.rl_prompts import PromptStream  # noqa: E402
from megatron_recipes.models.llama import padded_vocab_size  # noqa: E402
from megatron_recipes.rewards import get_reward  # noqa: E402

SIZES = {"hidden_size": 64, "num_layers": 4, "num_attention_heads": 4, "ffn_hidden_size": 176}


def prepare(work: Path, questions: int) -> dict:
    """The shared tokenizer (trained on the prompts) and the prompt list."""
    # The questions of grpo_tiny_cpu's `prompts: arithmetic` preset (its run below draws the same).
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


def run_ours(work: Path, steps: int, max_new_tokens: int) -> dict:
    output = work / "ours"
    command = [
        sys.executable,
        "-m",
        "megatron_recipes.grpo",
        "+experiment=grpo_tiny_cpu",
        f"tokenizer={work / 'tokenizer'}",
        f"trainer.train_steps={steps}",
        f"trainer.output_dir={output}",
        "checkpoint.dir=null",
        "trainer.tensorboard=false",
        "rl.eval_interval=0",
        f"rl.max_new_tokens={max_new_tokens}",
        "trainer.global_batch_size=32",
        "trainer.micro_batch_size=32",
        "optimizer.lr=1e-5",
    ]
    result = subprocess.run(command, cwd=REPO, env=_environment(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"our GRPO run failed: {result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    timed = [row for row in rows if row["step"] > 1]
    return {
        "seconds_per_step": statistics.median(row["step_seconds"] for row in timed),
        "rollout_tokens_per_second": statistics.median(row["rollout_tokens_per_second"] for row in timed),
        "rollout_seconds_per_step": statistics.median(row["rollout_seconds"] for row in timed),
        "mean_response_tokens": statistics.mean(row["response_length"] for row in timed),
        "steps_timed": len(timed),
    }


def trl_side(work: Path, steps: int, max_new_tokens: int, vocab: int) -> dict:
    """Runs inside its own process (`--side trl`)."""
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

    generation_times: list[float] = []
    original_log = profiling.ProfilingContext._log_metrics

    def record(self, duration):
        if self.name.endswith("transformers.generate"):
            generation_times.append(duration)
        return original_log(self, duration)

    profiling.ProfilingContext._log_metrics = record
    step_ends: list[float] = []
    lengths: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    config = GRPOConfig(
        output_dir=str(work / "trl"),
        max_steps=2 * steps,
        learning_rate=1e-5,
        per_device_train_batch_size=32,
        generation_batch_size=64,
        num_generations=8,
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
    dataset = Dataset.from_list(prompts)
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=accuracy,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    started = time.perf_counter()
    trainer.train()
    ends = [started, *step_ends]
    # A GRPO step = one generation + two optimizer steps; the first is not timed (warm-up).
    per_step = [ends[i + 2] - ends[i] for i in range(0, len(ends) - 2, 2)][1:]
    generated = [length * 64 for length in lengths[::2]][1:]
    times = generation_times[1:]
    return {
        "seconds_per_step": statistics.median(per_step),
        "rollout_tokens_per_second": statistics.median(g / t for g, t in zip(generated, times)),
        "rollout_seconds_per_step": statistics.median(times),
        "mean_response_tokens": statistics.mean(lengths[2:]),
        "steps_timed": len(per_step),
    }


def _environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--side", choices=["both", "trl"], default="both")
    parser.add_argument("--work", default=None)
    parser.add_argument("--vocab", type=int, default=0)
    arguments = parser.parse_args()
    if arguments.side == "trl":
        print(json.dumps(trl_side(Path(arguments.work), arguments.steps, arguments.max_new_tokens, arguments.vocab)))
        return
    with tempfile.TemporaryDirectory(prefix="grpo_step_") as directory:
        work = Path(directory)
        info = prepare(work, 8 * arguments.steps)
        ours = run_ours(work, arguments.steps, arguments.max_new_tokens)
        trl = subprocess.run(
            [
                sys.executable,
                __file__,
                "--side",
                "trl",
                "--work",
                str(work),
                "--steps",
                str(arguments.steps),
                "--max-new-tokens",
                str(arguments.max_new_tokens),
                "--vocab",
                str(info["vocab"]),
            ],
            cwd=REPO,
            env=_environment(),
            capture_output=True,
            text=True,
        )
        if trl.returncode != 0:
            raise RuntimeError(f"TRL run failed: {trl.stderr[-3000:]}")
        peer = json.loads(trl.stdout.strip().splitlines()[-1])

    print(
        json.dumps(
            {
                "benchmark": "grpo_step",
                "device": "cpu (shared 2-core machine; ratios only)",
                "threads": 1,
                "model": {**SIZES, "vocab": info["vocab"]},
                "questions_per_step": 8,
                "group_size": 8,
                "max_new_tokens": arguments.max_new_tokens,
                "updates_per_step": 2,
                "ours": {key: round(value, 4) if isinstance(value, float) else value for key, value in ours.items()},
                f"trl_{trl_package.__version__}": {
                    key: round(value, 4) if isinstance(value, float) else value for key, value in peer.items()
                },
                "step_time_ratio_trl_over_ours": round(peer["seconds_per_step"] / ours["seconds_per_step"], 3),
                "rollout_tokens_per_second_ratio_ours_over_trl": round(
                    ours["rollout_tokens_per_second"] / peer["rollout_tokens_per_second"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
