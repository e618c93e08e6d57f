"""The body of `python -m megatron_recipes.label_steps` (see that module for what it writes and
how to run it): sample each shard's solutions with the policy, label them (outcome, or
Math-Shepherd completions), write the shards and the summary."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_recipes.config import LabelStepsConfig
from megatron_recipes.data.rl_prompts import PromptStream
from megatron_recipes.generation.interface import SamplingParams
from megatron_recipes.generation.megatron import build_megatron_generator
from megatron_recipes.reward_models.labeling import math_shepherd_labels, outcome_labels, sample_solutions
from megatron_recipes.rewards import AnswerChecker, DeadlineWorkerPool, get_reward
from megatron_recipes.rl.step_rewards import split_steps
from megatron_recipes.runtime.distributed import shutdown_runtime
from stack_common.logs import process_rank

log = logging.getLogger("label_steps")

SUMMARY_FILE = "summary.json"
DEAD_LETTER_FILE = "dead_letter.jsonl"


def shard_path(output_dir: Path, shard: int) -> Path:
    return output_dir / f"shard_{shard:05d}.jsonl"


def label_shard(config: LabelStepsConfig, records, policy, completer, tokenizer, reward_function, shard: int) -> dict:
    """Sample and label one shard's questions; returns its records, dead letters and counts."""
    sampling = config.sampling
    params = SamplingParams(
        sampling.temperature,
        sampling.top_p,
        sampling.max_new_tokens,
        list(sampling.stop),
        1,
        seed=config.seed + 1_000_003 * shard,
    )
    started = time.perf_counter()
    solutions = sample_solutions(policy, records, config.samples_per_question, params, tokenizer)
    outcomes = outcome_labels(solutions, reward_function)
    hard = soft = None
    continuations = 0
    completion_seconds = 0.0
    if config.label.method == "math_shepherd":
        completion_params = replace(
            params,
            temperature=config.label.completion_temperature,
            top_p=1.0,
            max_new_tokens=config.label.completion_max_new_tokens,
            seed=config.seed + 7_000_003 * shard + 1,
        )
        completion_started = time.perf_counter()
        hard, soft, continuations = math_shepherd_labels(
            completer,
            solutions,
            outcomes,
            config.label.completions,
            completion_params,
            config.label.step_separator,
            reward_function,
            tokenizer,
        )
        completion_seconds = time.perf_counter() - completion_started
    written, dead = [], []
    for index, (solution, outcome) in enumerate(zip(solutions, outcomes)):
        record = {
            "id": solution.question_id,
            "question": solution.question,
            "prompt": solution.prompt,
            "reference": solution.reference,
            "response": solution.response,
            "sample": solution.sample,
            "finish_reason": solution.finish_reason,
        }
        if outcome is None:
            dead.append({**record, "reason": "unparseable_reference"})
            continue
        record["correct"] = outcome
        if hard is not None:
            record["hard_step_labels"] = hard[index]
            record["soft_step_labels"] = soft[index]
            record["step_labels"] = hard[index] if config.label.step_label == "hard" else soft[index]
        written.append(record)
    return {
        "records": written,
        "dead": dead,
        "continuations": continuations,
        "completion_seconds": completion_seconds,
        "seconds": time.perf_counter() - started,
    }


def write_atomically(path: Path, lines: list[dict]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    os.replace(temporary, path)


def summarize(output_dir: Path, separator: str, timing: dict) -> dict:
    """Counts over every shard present (so a resumed run reports the whole output)."""
    solutions = correct = steps = 0
    hard_positive = soft_sum = 0.0
    shards = sorted(output_dir.glob("shard_*.jsonl"))
    for shard in shards:
        for line in shard.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            solutions += 1
            correct += record["correct"]
            if "hard_step_labels" in record:
                steps += len(record["hard_step_labels"])
                hard_positive += sum(record["hard_step_labels"])
                soft_sum += sum(record["soft_step_labels"])
    dead = output_dir / DEAD_LETTER_FILE
    return {
        "shards": len(shards),
        "solutions": solutions,
        "outcome_accuracy": correct / solutions if solutions else 0.0,
        "steps_labelled": steps,
        "hard_positive_fraction": hard_positive / steps if steps else None,
        "soft_label_mean": soft_sum / steps if steps else None,
        "dead_letters": len(dead.read_text().splitlines()) if dead.exists() else 0,
        "step_separator": separator,
        **timing,
    }


def label_steps(config: LabelStepsConfig) -> dict:
    """Run the labelling (every rank), write shards and the summary; returns the summary."""
    output_dir = Path(config.output_dir)
    prompts = PromptStream(config.prompts, config.chat_template)
    questions = len(prompts)
    shards = -(-questions // config.questions_per_shard)
    options = dict(
        tokenizer=config.tokenizer,
        device=config.device,
        tensor_model_parallel_size=config.tensor_model_parallel_size,
        max_batch_size=config.max_batch_size,
        precision=config.precision,
        seed=config.seed,
    )
    policy = build_megatron_generator(config.policy, **options)
    completer = policy
    if config.label.method == "math_shepherd" and config.completer and config.completer != config.policy:
        completer = build_megatron_generator(config.completer, **options)
    tokenizer = policy.tokenizer
    rank = parallel_state.get_data_parallel_rank()
    ranks = parallel_state.get_data_parallel_world_size()
    writes = parallel_state.get_tensor_model_parallel_rank() == 0
    if process_rank() == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_initialized():
        dist.barrier()
    done = skipped = 0
    continuations = 0
    completion_seconds = generation_seconds = 0.0
    try:
        with DeadlineWorkerPool(config.answer_check.num_workers, config.answer_check.timeout_s) as pool:
            checker = AnswerChecker(config.answer_check.options(), pool=pool)
            function = get_reward(config.label.reward)

            def reward_function(texts, references):
                return function(texts, references, checker=checker)

            for shard in range(rank, shards, ranks):
                path = shard_path(output_dir, shard)
                if path.exists():
                    skipped += 1
                    continue
                first = shard * config.questions_per_shard
                records = prompts.take(first, min(config.questions_per_shard, questions - first))
                result = label_shard(config, records, policy, completer, tokenizer, reward_function, shard)
                continuations += result["continuations"]
                completion_seconds += result["completion_seconds"]
                generation_seconds += result["seconds"]
                if writes:
                    if result["dead"]:
                        with (output_dir / DEAD_LETTER_FILE).open("a", encoding="utf-8") as handle:
                            for line in result["dead"]:
                                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                    write_atomically(path, result["records"])
                done += 1
                if process_rank() == 0:
                    rate = result["continuations"] / result["completion_seconds"] if result["completion_seconds"] else 0
                    log.info(
                        "shard %d/%d: %d solutions, %d steps labelled, %d completions (%.0f/s), %.1f s",
                        shard + 1,
                        shards,
                        len(result["records"]),
                        sum(len(split_steps(r["response"], config.label.step_separator)) for r in result["records"])
                        if config.label.method == "math_shepherd"
                        else 0,
                        result["continuations"],
                        rate,
                        result["seconds"],
                    )
        # Counts of every data-parallel rank (each tensor-parallel group counted once).
        totals = [float(done), float(skipped), float(continuations), completion_seconds, generation_seconds]
        if dist.is_initialized() and ranks > 1:
            tensor = torch.tensor(totals, dtype=torch.float64)
            dist.all_reduce(tensor, group=parallel_state.get_data_parallel_group())
            totals = tensor.tolist()
        timing = {
            "shards_labelled_now": int(totals[0]),
            "shards_skipped": int(totals[1]),
            "completions_now": int(totals[2]),
            # Every data-parallel rank generates at once: the sum of their rates.
            "completions_per_second": totals[2] / totals[3] * ranks if totals[3] else None,
            "seconds": totals[4] / ranks,
        }
        summary = summarize(output_dir, config.label.step_separator, timing)
        if process_rank() == 0:
            (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
            log.info("label_steps: %s", json.dumps(summary))
        return summary
    finally:
        shutdown_runtime()
