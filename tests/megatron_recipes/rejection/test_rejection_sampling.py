"""Rejection sampling (megatron_recipes/rejection/): each rule drops what it names and nothing else;
the real entry point, on generations made elsewhere (generator=precomputed), keeps only samples the
checker accepts (re-checked here), writes sharded SFT data with provenance and a summary whose
counts add up, resumes after its last finished chunk, and splits prompts over data-parallel ranks
(torchrun) with the same result. Sampling from a checkpoint (generator=megatron) runs in the R1
integration tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from megatron_recipes.config import register_configs
from megatron_recipes.recipes.rejection_sample import run_rejection_sampling
from megatron_recipes.rejection.config import AcceptanceConfig, FilterConfig
from megatron_recipes.rejection.filters import DROP_REASONS, KEPT, judge_prompt_samples
from megatron_recipes.rewards import get_reward
from megatron_recipes.rewards.language import chain_of_thought, consistency_score
from stack_common.cli import compose_config
from stack_common.errors import ConfigError
from tests.support import REPO_ROOT, run_module, subprocess_env

LONG_PARAGRAPH_CHARS = 200


def designed_samples(terms: tuple[int, ...], language: str) -> list[tuple[str, str]]:
    """(sample, the verdict it must get) for one question, in sample order, with max_per_prompt=2
    and max_paragraph_chars=LONG_PARAGRAPH_CHARS."""
    total = sum(terms)
    expression = " + ".join(map(str, terms))
    if language == "en":
        clean = f"<think> We add the numbers. {expression} = {total}. </think> <answer> {total} </answer>"
        other = (
            f"<think> Adding them one by one gives {total}, and that checks out. </think> <answer> {total} </answer>"
        )
        third = f"<think> The sum is {total}. </think> <answer> {total} </answer>"
        mixed = f"<think> We add the numbers. 我们把这些数加起来，结果是 {total}。 </think> <answer> {total} </answer>"
        long = "<think> " + " ".join(["We add the numbers carefully."] * 12) + f" </think> <answer> {total} </answer>"
        code = f"<think> We run a program.\n```python\nprint({expression})\n```\n</think> <answer> {total} </answer>"
        wrong = f"<think> We add the numbers. {expression} = {total + 1}. </think> <answer> {total + 1} </answer>"
    else:
        clean = f"<think> 我们把这些数相加。{expression} = {total}。 </think> <answer> {total} </answer>"
        other = f"<think> 一个一个加起来得到 {total}，检查无误。 </think> <answer> {total} </answer>"
        third = f"<think> 和是 {total}。 </think> <answer> {total} </answer>"
        mixed = f"<think> 我们把这些数相加。 We add them and the result is {total}. </think> <answer> {total} </answer>"
        long = "<think> " + "".join(["我们仔细地把这些数相加。"] * 20) + f" </think> <answer> {total} </answer>"
        code = f"<think> 运行程序。\n```python\nprint({expression})\n```\n</think> <answer> {total} </answer>"
        wrong = f"<think> 我们把这些数相加。{expression} = {total + 1}。 </think> <answer> {total + 1} </answer>"
    unclosed = f"<think> {expression} = {total}"  # never closed its reasoning: no answer part
    return [
        (clean, KEPT),
        (wrong, "incorrect"),
        (mixed, "mixed_language"),
        (long, "long_paragraph"),
        (code, "code_block"),
        (clean.replace("> ", ">  ", 1), "duplicate"),  # the same text up to whitespace
        (unclosed, "incorrect"),
        (other, KEPT),
        (third, "over_cap"),
    ]


QUESTIONS = [((3, 4), "en"), ((2, 5), "zh"), ((1, 8, 6), "en"), ((9, 9), "zh"), ((0, 7), "en")]


def question_text(terms, language) -> str:
    expression = " + ".join(map(str, terms))
    return f"Calculate {expression}." if language == "en" else f"计算 {expression}。"


def test_each_rule_drops_what_it_names_and_can_be_switched_off():
    filters = FilterConfig(max_paragraph_chars=LONG_PARAGRAPH_CHARS, max_per_prompt=2)
    acceptance = AcceptanceConfig()
    reward = get_reward("think_accuracy")
    for terms, language in QUESTIONS[:2]:
        samples = designed_samples(terms, language)
        texts = [text for text, _ in samples]
        rewards = reward(texts, [str(sum(terms))] * len(texts))
        verdicts = judge_prompt_samples(texts, rewards, question_text(terms, language), acceptance, filters)
        assert verdicts == [verdict for _, verdict in samples], language
        # Each rule off: the sample it dropped moves on to the next rule (or is kept).
        relaxed = FilterConfig(
            min_language_consistency=0.0,
            max_paragraph_chars=None,
            drop_code_blocks=False,
            deduplicate=False,
            max_per_prompt=None,
        )
        relaxed_verdicts = judge_prompt_samples(texts, rewards, question_text(terms, language), acceptance, relaxed)
        assert relaxed_verdicts == [KEPT if verdict != "incorrect" else verdict for _, verdict in samples]
        # Without an acceptance reward (the unfiltered baseline) wrong answers pass the checker's rule.
        unchecked = judge_prompt_samples(
            texts, [None] * len(texts), question_text(terms, language), AcceptanceConfig(reward=None), relaxed
        )
        assert unchecked == [KEPT] * len(texts)
    # A chain without words mixes no languages (the compact R1-Zero chains keep).
    compact = ["<think> 3 + 4 = 7 </think> <answer> 7 </answer>"]
    assert judge_prompt_samples(compact, [1.0], "计算 3 + 4。", acceptance, filters) == [KEPT]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A question file and, for each question, its designed samples as generations made elsewhere."""
    work = tmp_path_factory.mktemp("rejection")
    with (
        (work / "prompts.jsonl").open("w", encoding="utf-8") as prompts,
        (work / "generations.jsonl").open("w", encoding="utf-8") as generations,
    ):
        for terms, language in QUESTIONS:
            identifier = f"sum-{language}-{'-'.join(map(str, terms))}"
            question = {"id": identifier, "question": question_text(terms, language), "answer": str(sum(terms))}
            prompts.write(json.dumps(question, ensure_ascii=False) + "\n")
            samples = [text for text, _ in designed_samples(terms, language)]
            generations.write(json.dumps({"id": identifier, "generations": samples}, ensure_ascii=False) + "\n")
    return work


def rejection_overrides(work: Path, output: Path, *extra: str) -> list[str]:
    return [
        "+experiment=r1_rejection_tiny_cpu",
        "generator=precomputed",
        f"generator.path={work / 'generations.jsonl'}",
        f"prompts.path={work / 'prompts.jsonl'}",
        f"output_dir={output}",
        "sampling.n=9",
        "prompts_per_chunk=2",
        f"filters.max_paragraph_chars={LONG_PARAGRAPH_CHARS}",
        "answer_check.num_workers=1",
        *extra,
    ]


def read_rows(directory: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sampled(inputs) -> Path:
    output = inputs / "out"
    result = run_module("megatron_recipes.rejection_sample", *rejection_overrides(inputs, output))
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def test_kept_samples_pass_the_checker_and_every_rule(inputs, sampled):
    kept = read_rows(sampled / "kept")
    assert kept, "nothing kept"
    texts = [row["messages"][1]["content"] for row in kept]
    references = [str(sum(terms)) for terms, _ in QUESTIONS]
    answer_by_prompt = {f"sum-{lang}-{'-'.join(map(str, t))}": ref for (t, lang), ref in zip(QUESTIONS, references)}
    # Re-checked with the checker, independently of the verdicts the sampler wrote.
    rechecked = get_reward("think_accuracy")(texts, [answer_by_prompt[row["provenance"]["prompt_id"]] for row in kept])
    assert rechecked == [1.0] * len(kept)
    per_prompt = Counter(row["provenance"]["prompt_id"] for row in kept)
    assert set(per_prompt) == set(answer_by_prompt) and max(per_prompt.values()) <= 2
    for row in kept:
        text, question = row["messages"][1]["content"], row["messages"][0]["content"]
        assert "```" not in text
        assert all(len(part) <= LONG_PARAGRAPH_CHARS for part in text.split("\n\n"))
        language = "zh" if "计算" in question else "en"
        assert consistency_score(chain_of_thought(text), language) >= 0.95
        provenance = row["provenance"]
        # Generations made elsewhere name their file where a checkpoint would stand.
        assert provenance["reward"] == 1.0 and provenance["checkpoint"] == str(inputs / "generations.jsonl")
        assert row["id"] == f"{provenance['prompt_id']}-s{provenance['sample_index']}"
        # The user turn is the question in the R1 prompt, as the teacher saw it.
        assert question.startswith("Think it through first") and question.endswith(("。", "."))
    # Deduplication is per prompt (two prompts may share an answer's text).
    normalized = [(row["provenance"]["prompt_id"], " ".join(row["messages"][1]["content"].split())) for row in kept]
    assert len(set(normalized)) == len(normalized)


def test_every_sample_has_its_designed_verdict_and_the_summary_adds_up(sampled):
    rows = read_rows(sampled / "samples")
    expected = {}
    for terms, language in QUESTIONS:
        identifier = f"sum-{language}-{'-'.join(map(str, terms))}"
        for index, (_, verdict) in enumerate(designed_samples(terms, language)):
            expected[f"{identifier}-s{index}"] = verdict
    assert {row["id"]: row["verdict"] for row in rows} == expected
    summary = json.loads((sampled / "summary.json").read_text())
    assert summary["prompts"] == len(QUESTIONS) and summary["samples"] == len(expected)
    assert summary["kept"] + sum(summary["dropped"].values()) == summary["samples"]
    assert set(summary["dropped"]) == set(DROP_REASONS)
    counts = Counter(expected.values())
    assert summary["kept"] == counts[KEPT] == len(read_rows(sampled / "kept"))
    assert summary["dropped"] == {reason: counts.get(reason, 0) for reason in DROP_REASONS}
    histogram = summary["accepted_per_prompt"]
    assert sum(histogram.values()) == summary["prompts"]
    assert sum(int(kept) * prompts for kept, prompts in histogram.items()) == summary["kept"]
    assert histogram == {"2": len(QUESTIONS)}
    # Three prompts per rank in chunks of two: two shards.
    assert summary["chunks"] == 3 and len(list((sampled / "kept").glob("*.jsonl"))) == 3
    assert 0 < summary["mean_reward"] < 1


def test_a_rerun_resumes_after_the_last_finished_chunk(inputs, sampled):
    shard = sorted((sampled / "kept").glob("*.jsonl"))[-1]
    before = {path.name: path.read_bytes() for path in (sampled / "kept").glob("*.jsonl")}
    untouched = {path.name: path.stat().st_mtime_ns for path in (sampled / "stats").glob("*.json")}
    # Lose the last chunk (as if the run had died before its stats were written), then rerun.
    (sampled / "stats" / f"{shard.stem}.json").unlink()
    shard.unlink()
    result = run_module("megatron_recipes.rejection_sample", *rejection_overrides(inputs, sampled))
    assert result.returncode == 0, result.stderr[-3000:]
    after = {path.name: path.read_bytes() for path in (sampled / "kept").glob("*.jsonl")}
    assert after == before
    for path in (sampled / "stats").glob("*.json"):
        if path.stem != shard.stem:
            assert path.stat().st_mtime_ns == untouched[path.name]


def test_missing_generations_are_a_one_line_config_error(inputs, tmp_path):
    # In this process: the entry point turns a ConfigError into `error: <message>` and status 2.
    config = compose_config(
        "rejection_sample", rejection_overrides(inputs, tmp_path / "out", "sampling.n=10"), register_configs
    )
    with pytest.raises(ConfigError, match="has 9 generations for 'sum-.*' but n=10 were asked for"):
        run_rejection_sampling(config)


@pytest.mark.integration
def test_two_data_parallel_ranks_split_the_prompts_with_the_same_result(inputs, sampled, tmp_path):
    with socket.socket() as probe:  # torchrun's rendezvous needs a concrete free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    output = tmp_path / "dp2"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port)]
        + ["-m", "megatron_recipes.rejection_sample", *rejection_overrides(inputs, output)],
        cwd=REPO_ROOT,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shards = sorted(path.name for path in (output / "kept").glob("*.jsonl"))
    assert {name.split("-chunk")[0] for name in shards} == {"rank-00000", "rank-00001"}
    two_ranks = sorted(row["id"] for row in read_rows(output / "kept"))
    assert two_ranks == sorted(row["id"] for row in read_rows(sampled / "kept"))
    summary = json.loads((output / "summary.json").read_text())
    assert summary["prompts"] == len(QUESTIONS) and summary["settings"]["data_parallel_size"] == 2
