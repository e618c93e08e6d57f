"""The rejection-sampling driver: prompts -> k samples each (the shared generator: megatron-core
KV-cache sampling from a checkpoint, or precomputed generations) -> rewards -> verdicts -> SFT
JSONL shards with provenance, resumable, data-parallel.

Work split: prompt i of the run (the `prompts` stream, first `max_prompts`) belongs to
data-parallel rank i mod D; each rank walks its prompts in chunks of `prompts_per_chunk`. Ranks of
one tensor-parallel group sample the same tokens (generation/megatron.py), so only the first of
them scores and writes. Chunk c of rank r writes, each file atomically (a `.partial` renamed):

    samples/rank-<r>-chunk-<c>.jsonl   every sample as an SFT record, with its verdict
    kept/rank-<r>-chunk-<c>.jsonl      the kept samples: SFT data (`sft_data.paths=[<output_dir>/kept]`)
    stats/rank-<r>-chunk-<c>.json      the chunk's counts, written last: the chunk's completion marker

A rerun of the same command skips the chunks whose stats exist (their seed is a function of the
chunk, so a redone chunk samples the same tokens). When every rank is done, the first rank adds up
all stats into `summary.json` (the run's completion marker): prompts, samples, kept, dropped by
reason (they add up: samples = kept + sum of dropped), the accepted-per-prompt histogram, the mean
reward, the checkpoint and the settings.

An SFT record: {"messages": [user turn, assistant turn], "kind": "rejection_sampled", "id":
"<prompt id>-s<k>", "verdict": ..., "provenance": {"checkpoint", "prompt_id", "sample_index",
"reward", "rewards", "seed"}}; the user turn is the prompt's user content exactly as sampled, so
SFT (default chat template) trains on the prompt the teacher answered.

Cost: generation dominates (prompts x k x response length); checking is batched per chunk; the
language rule is cached per span; memory holds one chunk.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from megatron_recipes.generation.interface import PrecomputedGenerations, SamplingParams
from megatron_recipes.rejection.filters import KEPT, Tally, judge_prompt_samples
from megatron_recipes.rewards import get_reward, reward_inputs
from stack_common.errors import ConfigError

log = logging.getLogger("rejection_sample")


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


class RejectionSampler:
    """See the module docstring. `generator`: the shared interface's generate(); `scorer(texts,
    references, questions) -> list[float | None]` (None: no acceptance reward)."""

    def __init__(self, config, prompts, generator, scorer, data_parallel_rank=0, data_parallel_size=1, writes=True):
        self.config = config
        self.prompts = prompts
        self.generator = generator
        self.scorer = scorer
        self.rank = data_parallel_rank
        self.ranks = data_parallel_size
        self.writes = writes
        self.output = Path(config.output_dir)
        self.checkpoint = config.generator.checkpoint or config.generator.path or ""

    def total_prompts(self) -> int:
        limit = self.config.max_prompts
        return min(len(self.prompts), limit) if limit else len(self.prompts)

    def my_chunks(self) -> list[list[int]]:
        mine = list(range(self.rank, self.total_prompts(), self.ranks))
        size = self.config.prompts_per_chunk
        return [mine[start : start + size] for start in range(0, len(mine), size)]

    def chunk_name(self, chunk: int) -> str:
        return f"rank-{self.rank:05d}-chunk-{chunk:06d}"

    def run(self) -> dict:
        """Sample every chunk of this rank not done yet; returns this rank's tally of this call."""
        for directory in ("samples", "kept", "stats"):
            (self.output / directory).mkdir(parents=True, exist_ok=True)
        tally = Tally()
        chunks = self.my_chunks()
        started = time.perf_counter()
        for chunk, indices in enumerate(chunks):
            name = self.chunk_name(chunk)
            if (self.output / "stats" / f"{name}.json").exists():
                continue
            chunk_tally = self.sample_chunk(chunk, indices)
            tally.merge(chunk_tally)
            log.info(
                "chunk %d/%d of rank %d: %d prompts, %d samples, %d kept (%.1f s)",
                chunk + 1,
                len(chunks),
                self.rank,
                chunk_tally["prompts"],
                chunk_tally["samples"],
                chunk_tally["kept"],
                time.perf_counter() - started,
            )
        return tally.as_dict()

    def sample_chunk(self, chunk: int, indices: list[int]) -> dict:
        config = self.config
        records = [self.prompts.record(index) for index in indices]
        seed = config.sampling.seed + 1_000_003 * self.rank + 7919 * chunk
        params = SamplingParams(
            config.sampling.temperature,
            config.sampling.top_p,
            config.sampling.max_new_tokens,
            tuple(config.sampling.stop),
            config.sampling.n,
            seed,
        )
        try:
            generations = self.generator.generate(
                [r.prompt for r in records], params, request_ids=[r.id for r in records]
            )
        except (KeyError, ValueError) as error:
            # A generations file that lacks a prompt's samples, or has too few: a bad input.
            if isinstance(self.generator, PrecomputedGenerations):
                raise ConfigError(str(error).strip("'\"")) from None
            raise
        texts = [[g.text.strip() for g in samples] for samples in generations]
        flat_texts = [text for samples in texts for text in samples]
        flat_references = [r.answer for r, samples in zip(records, texts) for _ in samples]
        flat_questions = [r.question for r, samples in zip(records, texts) for _ in samples]
        scored = self.scorer(flat_texts, flat_references, flat_questions)
        tally = Tally()
        sample_rows, kept_rows = [], []
        position = 0
        for record, samples in zip(records, texts):
            rewards = scored[position : position + len(samples)] if scored is not None else [None] * len(samples)
            position += len(samples)
            verdicts = judge_prompt_samples(samples, rewards, record.question, config.acceptance, config.filters)
            tally.add_prompt(verdicts, rewards if scored is not None else [])
            user = config.prompts.question_template.replace("{question}", record.question)
            for index, (text, reward, verdict) in enumerate(zip(samples, rewards, verdicts)):
                row = {
                    "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": text}],
                    "kind": "rejection_sampled",
                    "id": f"{record.id}-s{index}",
                    "verdict": verdict,
                    "provenance": {
                        "checkpoint": self.checkpoint,
                        "prompt_id": record.id,
                        "sample_index": index,
                        "reward": reward,
                        "acceptance_reward": config.acceptance.reward,
                        "seed": seed,
                    },
                }
                sample_rows.append(row)
                if verdict == KEPT:
                    kept_rows.append(row)
        stats = tally.as_dict()
        if self.writes:
            name = self.chunk_name(chunk)
            _write_atomically(self.output / "samples" / f"{name}.jsonl", _jsonl(sample_rows))
            _write_atomically(self.output / "kept" / f"{name}.jsonl", _jsonl(kept_rows))
            _write_atomically(self.output / "stats" / f"{name}.json", json.dumps(stats) + "\n")
        return stats


def write_summary(output_dir: str | Path, settings: dict, seconds: float) -> dict:
    """Add up every chunk's stats into summary.json (the first rank, after all ranks finished)."""
    output = Path(output_dir)
    tally = Tally()
    files = sorted((output / "stats").glob("*.json"))
    for path in files:
        tally.merge(json.loads(path.read_text()))
    totals = tally.as_dict()
    summary = {
        **{key: totals[key] for key in ("prompts", "samples", "kept", "dropped", "accepted_per_prompt")},
        "chunks": len(files),
        "mean_reward": totals["reward_sum"] / totals["graded"] if totals["graded"] else None,
        "kept_fraction": totals["kept"] / totals["samples"] if totals["samples"] else 0.0,
        "prompts_with_a_kept_sample": totals["prompts"] - totals["accepted_per_prompt"].get("0", 0),
        "kept_dir": str(output / "kept"),
        "samples_dir": str(output / "samples"),
        "seconds": round(seconds, 1),
        "settings": settings,
    }
    _write_atomically(output / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def make_scorer(config, checker):
    """(texts, references, questions) -> rewards by config.acceptance (None without a reward)."""
    acceptance = config.acceptance
    if acceptance.reward is None:
        return lambda texts, references, questions: None
    function = get_reward(acceptance.reward)

    def score(texts, references, questions):
        options = dict(acceptance.options)
        if acceptance.reward.endswith("_accuracy"):
            options["checker"] = checker
        if "questions" in reward_inputs(acceptance.reward):
            options["questions"] = questions
        return function(texts, references, **options)

    return score


__all__ = ["RejectionSampler", "make_scorer", "write_summary"]
