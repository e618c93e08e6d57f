"""The tokenizer follows the model: a run that starts from a Hugging Face checkpoint tokenizes and
trains with that checkpoint's tokenizer, each tokenized source records the tokenizer's identity,
and pretraining refuses data made by another tokenizer with one line (exit 2)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from beam_pipelines.transforms.tokenize import embedded_tokenizer_file
from megatron_recipes.config import register_configs
from megatron_recipes.convert.hf_to_megatron import import_hf_checkpoint
from megatron_recipes.data.mixture import plan_pretraining_data
from megatron_recipes.training.checkpoint_files import read_checkpoint_info
from stack_common.cli import compose_config
from stack_common.errors import ConfigError
from tests.megatron_recipes.data.model_with_tokenizer import (
    END_OF_TEXT,
    copy_source,
    tokenize_source,
    write_checkpoint_with_tokenizer,
    write_text_source,
)
from tests.support import run_module


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tiny HF checkpoint with its tokenizer; a work directory whose `math_corpus` was tokenized
    with it, and one whose `math_corpus` was tokenized with the default DeepSeek tokenizer."""
    root = tmp_path_factory.mktemp("model-tokenizer")
    checkpoint = write_checkpoint_with_tokenizer(root / "hf")
    text = write_text_source(root / "texts.jsonl")
    own, other = root / "own", root / "other"
    return {
        "checkpoint": checkpoint,
        "own": own,
        "other": other,
        "own_summary": tokenize_source(own, "math_corpus", text, str(checkpoint)),
        "other_summary": tokenize_source(other, "math_corpus", text),
    }


def pretrain_config(work_dir: Path, *overrides: str):
    return compose_config(
        "pretrain", ["trainer=cpu", f"corpus.work_dir={work_dir}", "data.seq_length=32", *overrides], register_configs
    )


def test_each_tokenized_source_records_its_tokenizer_identity(setting):
    own = setting["own_summary"]["tokenizer"]
    assert own["file"] == str(setting["checkpoint"] / "tokenizer.json")
    assert own["sha256"] == sha256_of(setting["checkpoint"] / "tokenizer.json")
    assert (own["vocab_size"], own["eod_token"]) == (300, END_OF_TEXT)
    default = setting["other_summary"]["tokenizer"]
    assert default["sha256"] == sha256_of(embedded_tokenizer_file()) != own["sha256"]
    # The record is in the summary file beside the dataset, where training reads it.
    written = json.loads((setting["own"] / "tokenized" / "math_corpus" / "summary.json").read_text())
    assert written["tokenizer"]["sha256"] == own["sha256"]


def test_a_run_from_an_hf_checkpoint_trains_with_its_tokenizer(setting):
    config = pretrain_config(setting["own"], f"model.init_from_hf={setting['checkpoint']}")
    plan = plan_pretraining_data(config)
    assert plan.tokenizer.path == str(setting["checkpoint"] / "tokenizer.json")
    assert plan.tokenizer.sha256 == setting["own_summary"]["tokenizer"]["sha256"]
    assert (plan.vocab_size, plan.tokenizer.eod) == (300, setting["own_summary"]["tokenizer"]["eod_id"])
    # An explicit data.tokenizer still wins, and is checked against the data the same way.
    explicit = pretrain_config(setting["own"], "model=tiny", f"data.tokenizer={setting['checkpoint']}")
    assert plan_pretraining_data(explicit).tokenizer.sha256 == plan.tokenizer.sha256


def test_data_made_by_another_tokenizer_is_refused_in_one_line(setting):
    result = run_module(
        "megatron_recipes.pretrain",
        "trainer=cpu",
        f"corpus.work_dir={setting['other']}",
        f"model.init_from_hf={setting['checkpoint']}",
        "data.seq_length=32",
        "trainer.train_steps=30",
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: data source math_corpus:") and "was tokenized with" in last
    assert setting["other_summary"]["tokenizer"]["sha256"][:12] in last
    assert setting["own_summary"]["tokenizer"]["sha256"][:12] in last


def test_an_imported_checkpoint_carries_its_tokenizer_to_the_runs_that_start_from_it(setting, tmp_path):
    megatron_dir = tmp_path / "megatron"
    import_hf_checkpoint(setting["checkpoint"], megatron_dir)
    recorded = read_checkpoint_info(megatron_dir)["train_state"]["extra"]["tokenizer"]
    assert sha256_of(recorded) == sha256_of(setting["checkpoint"] / "tokenizer.json")
    assert Path(recorded).is_relative_to(megatron_dir)  # a copy: the checkpoint stands on its own
    config = pretrain_config(
        setting["own"], "model=tiny", "model.vocab_size=300", f"checkpoint.init_from={megatron_dir}"
    )
    plan = plan_pretraining_data(config)
    assert plan.tokenizer.path == recorded and plan.tokenizer.sha256 == setting["own_summary"]["tokenizer"]["sha256"]


def test_a_checkpoint_without_a_tokenizer_is_refused_in_one_line(setting, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in setting["checkpoint"].iterdir():
        if not path.name.startswith("tokenizer"):
            (bare / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match="has no tokenizer.json"):
        plan_pretraining_data(pretrain_config(setting["own"], f"model.init_from_hf={bare}"))


def test_a_second_source_name_for_the_same_data_passes_the_check(setting):
    copy_source(setting["own"], "math_corpus", "arxiv")
    config = pretrain_config(
        setting["own"],
        f"model.init_from_hf={setting['checkpoint']}",
        f"+data.sources.arxiv=[{setting['own']}/tokenized/arxiv]",
        "+data.weights.arxiv=0.5",
    )
    plan = plan_pretraining_data(config)
    assert set(plan.mixture.sources) == {"math_corpus", "arxiv"}
