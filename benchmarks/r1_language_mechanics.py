"""Does the language-consistency reward carry a learning signal on the R1 CPU task? Reads samples
of a policy (a rejection-sampling run's samples/ directory: k samples per question, the same
generator and prompt as GRPO's rollouts) and runs them through GRPO's own scoring and advantage
code (rl/rollout.py: compute_rewards, rollout_batch), then prints what a GRPO step would train on:

    python benchmarks/r1_language_mechanics.py --samples REJECTION/samples \\
        --prompts TASK/prompts_train.jsonl --tokenizer BASE/tokenizer [--show 3]

1. Per sample: the language reward, the language of each script span of its chain (the reward's
   own labelling), accuracy and format; whether the task's question-language label agrees with
   the reward's target (question_language) over the whole prompt file.
2. Per group: the spread of the language reward within a group (a reward that does not vary within
   a group gives no advantage), and the correlation of the advantage with it.
3. Per token: the advantage at the tokens that open a span of words (the tokens that decide the
   language of the sentence they start) and their share of the response's tokens.

Prints one JSON line (and the --show first groups' samples, readable, on stderr).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from megatron_recipes.generation.tokenizer import load_text_tokenizer  # noqa: E402
from megatron_recipes.rewards.language import (  # noqa: E402
    chain_of_thought,
    chain_spans,
    language_units,
    question_language,
    span_language,
)
from megatron_recipes.rl.rollout import RolloutSample, compute_rewards, rollout_batch  # noqa: E402
from megatron_recipes.rl.step_rewards import Step, step_end_tokens  # noqa: E402

REWARDS = ["think_accuracy", "think_format", "language_consistency"]


def _read(path: Path) -> list[dict]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines() if line]


def _correlation(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2 or statistics.pstdev(xs) == 0 or statistics.pstdev(ys) == 0:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    cov = statistics.fmean([(x - mx) * (y - my) for x, y in zip(xs, ys)])
    return cov / (statistics.pstdev(xs) * statistics.pstdev(ys))


def opener_positions(tokenizer, sample: RolloutSample) -> list[int]:
    """Positions (in the response) of the tokens that open a span of words of the chain: the token
    holding each span's first character (the language_spans step reward's steps)."""
    starts = [Step(start + 1, 0.0) for start, _, _, _ in chain_spans(sample.text)]
    return step_end_tokens(starts, sample.response_ids, tokenizer.decode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--weights", type=float, nargs=3, default=[1.0, 1.0, 1.0])
    parser.add_argument("--show", type=int, default=2, help="groups printed in full on stderr")
    parser.add_argument("--max-groups", type=int, default=64)
    arguments = parser.parse_args()

    tokenizer = load_text_tokenizer(str(arguments.tokenizer))
    prompts = {r["id"]: r for r in _read(arguments.prompts)}
    labels = [(r["language"], question_language(r["question"])) for r in prompts.values()]
    label_agreement = sum(a == b for a, b in labels) / len(labels)

    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for row in _read(arguments.samples):
        by_prompt[row["provenance"]["prompt_id"]].append(row)
    samples: list[RolloutSample] = []
    for group, (prompt_id, rows) in enumerate(list(by_prompt.items())[: arguments.max_groups]):
        record = prompts[prompt_id]
        for row in rows:
            text = row["messages"][1]["content"]
            samples.append(
                RolloutSample(
                    group,
                    prompt_id,
                    record["answer"],
                    tokenizer.encode(row["messages"][0]["content"]),
                    response_ids=tokenizer.encode(text),
                    trained=[True] * len(tokenizer.encode(text)),
                    text=text,
                    question=record["question"],
                )
            )
    compute_rewards(samples, REWARDS, arguments.weights)
    batch = rollout_batch(samples, tokenizer.eod, "outcome", 1e-4)

    groups: dict[int, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        groups[sample.group].append(index)
    consistency = [s.rewards["language_consistency"] for s in samples]
    accuracy = [s.rewards["think_accuracy"] or 0.0 for s in samples]
    advantage = [
        float(batch.advantages[i][batch.mask[i] > 0][0]) if batch.mask[i].sum() else 0.0 for i in range(len(samples))
    ]
    within_std = [statistics.pstdev([consistency[i] for i in members]) for members in groups.values()]
    opener_share, opener_abs, other_abs = [], [], []
    for row, sample in enumerate(samples):
        positions = opener_positions(tokenizer, sample)
        first = len(sample.prompt_ids) - 1
        opener_share.append(len(positions) / max(1, len(sample.response_ids)))
        values = batch.advantages[row, first : first + len(sample.response_ids)].abs()
        opener_abs += [float(values[p]) for p in positions]
        other_abs += [float(v) for p, v in enumerate(values) if p not in positions]

    for group in list(groups)[: arguments.show]:
        for index in groups[group]:
            sample = samples[index]
            spans = [
                (span.text, span.units, span_language(span.text))
                for span in language_units(chain_of_thought(sample.text))
            ]
            pieces = [tokenizer.decode([t]) for t in sample.response_ids]
            print(
                json.dumps(
                    {
                        "question": sample.question,
                        "target": question_language(sample.question),
                        "rewards": sample.rewards,
                        "advantage": round(advantage[index], 3),
                        "spans": spans,
                        "openers": [pieces[p] for p in opener_positions(tokenizer, sample)],
                        "tokens": len(pieces),
                    },
                    ensure_ascii=False,
                ),
                file=sys.stderr,
            )
    print(
        json.dumps(
            {
                "samples": len(samples),
                "groups": len(groups),
                "question_label_agreement_with_reward_target": round(label_agreement, 4),
                "consistency_mean": round(statistics.fmean(consistency), 4),
                "consistency_values_distinct": len({round(c, 3) for c in consistency}),
                "consistency_within_group_std_mean": round(statistics.fmean(within_std), 4),
                "groups_with_constant_consistency": sum(s == 0 for s in within_std),
                "accuracy_mean": round(statistics.fmean(accuracy), 4),
                "corr_advantage_consistency": _correlation(advantage, consistency),
                "corr_advantage_accuracy": _correlation(advantage, accuracy),
                "opener_tokens_share_of_response": round(statistics.fmean(opener_share), 4),
                "mean_abs_advantage_opener_tokens": round(statistics.fmean(opener_abs), 4) if opener_abs else None,
                "mean_abs_advantage_other_tokens": round(statistics.fmean(other_abs), 4) if other_abs else None,
                "mean_response_tokens": round(statistics.fmean(len(s.response_ids) for s in samples), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
