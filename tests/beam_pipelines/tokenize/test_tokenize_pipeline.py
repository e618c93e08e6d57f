"""tokenize end to end on real text, read back with megatron-core: IndexedDataset counts match the
summary, every document decodes to its text and ends with the one EOD, GPTDataset samples break
at EOD, and a two-source blend draws samples in the configured proportions."""

from __future__ import annotations

import glob
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset

from beam_pipelines.config import register_configs
from beam_pipelines.io.parquet import iter_documents
from beam_pipelines.stages.tokenize import clear_source_outputs
from beam_pipelines.stages.train_tokenizer import run_train_tokenizer
from beam_pipelines.tokenize import main
from beam_pipelines.transforms.tokenize import load_tokenizer
from stack_common.cli import compose_config
from tests.beam_pipelines.tokenize.tokenize_inputs import EOD_TEXT, tokenize
from tests.support import run_module

DEEPSEEK_EOD_ID = 1


class DatasetTokenizer:
    """What megatron's GPT datasets read from a tokenizer: the vocabulary size and the EOD id
    (the training side wraps the real tokenizer; the data path needs only these)."""

    def __init__(self, vocab_size: int, eod: int):
        self.vocab_size = vocab_size
        self.eod = eod
        # Part of the datasets' cache key.
        self.unique_identifiers = {"class": type(self).__name__, "vocab_size": vocab_size, "eod": eod}


def read_sequences(prefix: str) -> list[np.ndarray]:
    dataset = IndexedDataset(prefix)
    # Copies: the arrays are views of an mmap that closes when `dataset` is collected.
    return [np.array(dataset[i]) for i in range(len(dataset))]


def assert_dataset_matches_texts(prefix: str, summary: dict, texts: list[str], tokenizer, eod_id: int):
    dataset = IndexedDataset(prefix)
    described = summary["dataset"]
    assert len(dataset) == described["documents"] == summary["totals"]["kept"] == len(texts)
    assert (
        int(dataset.sequence_lengths.sum()) == described["tokens"] == summary["steps"]["09_tokenize"]["other"]["tokens"]
    )
    assert sum(shard["tokens"] for shard in summary["shards"]) == described["tokens"]
    assert sum(shard["documents"] for shard in summary["shards"]) == described["documents"]
    assert list(dataset.document_indices) == list(range(len(dataset) + 1)), "one sequence per document"
    decoded = []
    for i in range(len(dataset)):
        sequence = dataset[i]
        assert sequence[-1] == eod_id, "every document ends with EOD"
        assert eod_id not in sequence[:-1], "and EOD appears nowhere else"
        decoded.append(tokenizer.decode(sequence[:-1].tolist(), skip_special_tokens=False))
    assert Counter(decoded) == Counter(texts), "decode(encode(text)) == text for every document"


def test_corpus_documents_read_back_with_megatron(math_corpus, sample_pool):
    config, summary = math_corpus
    prefix = f"{config.corpus.work_dir}/tokenized/math_corpus"
    assert summary["dataset"]["prefix"] == prefix and summary["balanced"] and summary["dataset_matches_counters"]
    # Parquet input: the footers' row count is checked against what the pipeline read.
    assert summary["input_rows"] == summary["totals"]["in"] == len(list(iter_documents(str(sample_pool))))
    assert summary["dataset"]["dtype"] == "int32" and summary["tokenizer"]["eod_id"] == DEEPSEEK_EOD_ID
    texts = [document.text for document in iter_documents(str(sample_pool))]
    assert_dataset_matches_texts(prefix, summary, texts, load_tokenizer(""), DEEPSEEK_EOD_ID)
    # max_documents_per_shard=10: several shards were written and merged, then removed.
    assert len(summary["shards"]) >= -(-len(texts) // 10)
    assert not Path(prefix, "shards").exists()
    assert json.loads(Path(prefix, "summary.json").read_text()) == summary


def test_jsonl_code_source_every_record_accounted_for(code_corpus, code_source):
    config, summary = code_corpus
    prefix = f"{config.corpus.work_dir}/tokenized/github_code"
    step = summary["steps"]["09_tokenize"]
    assert step["in"] == code_source.expected_in
    # Gzipped JSONL with blank and undecodable lines: counted without Beam by the reader's rule.
    assert summary["input_rows"] == code_source.expected_in
    assert step["dropped"] == code_source.expected_dropped
    assert step["dead_lettered"] == code_source.expected_dead
    assert summary["balanced"]
    removed = sum(pq.ParquetFile(p).metadata.num_rows for p in glob.glob(f"{prefix}/removed/09_tokenize/*.parquet"))
    assert removed == sum(code_source.expected_dropped.values())
    dead_lines = [
        json.loads(line)
        for p in glob.glob(f"{prefix}/dead_letter/09_tokenize/*.jsonl")
        for line in open(p)
        if line.strip()
    ]
    assert Counter(d["kind"] for d in dead_lines) == Counter(code_source.expected_dead)
    assert_dataset_matches_texts(prefix, summary, code_source.texts, load_tokenizer(""), DEEPSEEK_EOD_ID)
    assert any(EOD_TEXT in text for text in code_source.texts)


def test_a_source_with_nothing_to_keep_fails_loudly_after_writing_its_summary(tmp_path):
    lines = ['{"text": ""}', '{"text": "  "}', "not json", '{"body": "wrong field"}']
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RuntimeError, match="kept no document"):
        tokenize(
            tmp_path,
            "source.name=bad",
            "source.format=jsonl",
            f"source.input={tmp_path}/bad.jsonl",
            "beam=direct_single",
        )
    summary = json.loads((tmp_path / "tokenized" / "bad" / "summary.json").read_text())
    assert summary["dataset"] is None and summary["balanced"]
    assert summary["totals"] == {"in": 4, "kept": 0, "dropped": 2, "dead_lettered": 2}
    assert summary["input_rows"] == 4
    assert not (tmp_path / "tokenized" / "bad.bin").exists()


def gpt_config(blend, sequence_length=64, **overrides):
    settings = dict(
        random_seed=1234,
        sequence_length=sequence_length,
        blend=blend,
        split="100,0,0",
        tokenizer=DatasetTokenizer(129280, DEEPSEEK_EOD_ID),
        reset_position_ids=True,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )
    settings.update(overrides)
    return GPTDatasetConfig(**settings)


def build_train(config, samples):
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [samples, 0, 0], lambda: True, config).build()
    return train


def is_slice_of(piece: tuple, document: tuple) -> bool:
    return any(document[i : i + len(piece)] == piece for i in range(len(document) - len(piece) + 1))


def test_gpt_dataset_samples_break_exactly_at_document_ends(math_corpus):
    config, summary = math_corpus
    prefix = summary["dataset"]["prefix"]
    documents = [tuple(s.tolist()) for s in read_sequences(prefix)]
    whole = set(documents)
    train = build_train(gpt_config(([prefix], None)), 200)
    assert len(train) >= 200
    boundaries = 0
    for index in range(200):
        sample = train[index]
        window = sample["tokens"].tolist() + [int(sample["labels"][-1])]
        ends = [i for i, token in enumerate(window) if token == DEEPSEEK_EOD_ID]
        pieces = [tuple(p.tolist()) for p in np.split(np.array(window), [e + 1 for e in ends])]
        if not ends:  # inside one long document
            assert any(is_slice_of(pieces[0], d) for d in documents)
        else:
            # Pieces between two EODs are whole documents; the first ends one, the last starts one.
            assert all(piece in whole for piece in pieces[1:-1])
            assert any(d[len(d) - len(pieces[0]) :] == pieces[0] for d in documents)
            assert not pieces[-1] or any(d[: len(pieces[-1])] == pieces[-1] for d in documents)
        # megatron restarts positions after each EOD: our EODs are its document boundaries.
        positions = sample["position_ids"].tolist()
        for e in ends:
            if e + 1 < len(positions):
                assert positions[e + 1] == 0
        boundaries += len(ends)
    assert boundaries > 0


def test_blend_of_two_sources_draws_configured_proportions(math_corpus, code_corpus):
    """megatron's blending is deterministic and greedy: after n samples each source is within
    one sample of weight * n. Stated tolerance: 1% of the samples drawn."""
    weights = {"math_corpus": 0.7, "github_code": 0.3}
    prefixes = [math_corpus[1]["dataset"]["prefix"], code_corpus[1]["dataset"]["prefix"]]
    samples = 1000
    blend = build_train(gpt_config((prefixes, [weights["math_corpus"], weights["github_code"]])), samples)
    assert len(blend) == samples
    drawn = Counter(int(blend[i]["dataset_id"]) for i in range(samples))
    for dataset_id, name in enumerate(weights):
        assert abs(drawn[dataset_id] / samples - weights[name]) <= 0.01, (name, drawn)
    # The samples really come from the source they are attributed to.
    code_tokens = set(np.concatenate(read_sequences(prefixes[1])).tolist())
    math_tokens = set(np.concatenate(read_sequences(prefixes[0])).tolist())
    for i in range(0, samples, 50):
        sample = blend[i]
        tokens = set(sample["tokens"].tolist())
        assert tokens <= (math_tokens if int(sample["dataset_id"]) == 0 else code_tokens)


def test_rerun_clears_only_this_source(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.bin").write_bytes(b"x")
        (tmp_path / f"{name}.idx").write_bytes(b"x")
        (tmp_path / name / "cache" / "GPTDataset_indices").mkdir(parents=True)
        (tmp_path / name / "summary.json").write_text("{}")
    clear_source_outputs(str(tmp_path / "a"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b.bin", "b.idx"]
    assert (tmp_path / "b" / "cache" / "GPTDataset_indices").exists()


@pytest.mark.integration
def test_trained_tokenizer_through_the_command_line(sample_pool, tmp_path):
    """train_tokenizer (byte-level BPE, small vocabulary) then `python -m beam_pipelines.tokenize`
    with it: a uint16 dataset whose EOD is the trained <|endoftext|> (id 0)."""
    trained = run_train_tokenizer(
        compose_config(
            "train_tokenizer",
            [f"corpus.work_dir={tmp_path}", f"source.input={sample_pool}", "vocab_size=600"],
            register_configs,
        )
    )
    assert trained["eod_id"] == 0 and trained["vocab_size"] == 600
    result = run_module(
        "beam_pipelines.tokenize",
        f"corpus.work_dir={tmp_path}",
        f"source.input={sample_pool}",
        f"tokenizer.path={tmp_path}/tokenizer",
        "source.name=small_vocab",
        "beam=direct_single",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    prefix = f"{tmp_path}/tokenized/small_vocab"
    summary = json.loads(Path(prefix, "summary.json").read_text())
    assert summary["balanced"] and summary["dataset_matches_counters"] and summary["source"]["name"] == "small_vocab"
    assert summary["dataset"]["dtype"] == "uint16" and summary["tokenizer"]["eod_token"] == "<|endoftext|>"
    assert read_sequences(prefix)[0].dtype == np.uint16
    texts = [document.text for document in iter_documents(str(sample_pool))]
    assert_dataset_matches_texts(prefix, summary, texts, load_tokenizer(f"{tmp_path}/tokenizer"), 0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["source=arxiv"], "source.input is required"),
        (["tokenizer.path=/nonexistent/tokenizer"], "tokenizer.path='/nonexistent/tokenizer' does not exist"),
    ],
)
def test_command_line_refuses_bad_settings_in_one_line(tmp_path, overrides, message):
    result = run_module("beam_pipelines.tokenize", f"corpus.work_dir={tmp_path}", *overrides, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr[-1000:]
    assert not (tmp_path / "tokenized").exists()


def test_problems_found_when_the_run_starts_exit_2_in_one_line(tmp_path, capsys):
    """Inputs are checked by the run itself (the composition is fine): still one line, exit 2,
    nothing written."""
    with pytest.raises(SystemExit) as exit_info:
        main(
            [f"corpus.work_dir={tmp_path}", f"source.input={tmp_path}/no_stage_here", f"hydra.run.dir={tmp_path}/hydra"]
        )
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: source.input=") and "no files match" in lines[0]
    assert not (tmp_path / "tokenized").exists()
