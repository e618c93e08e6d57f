"""Real inputs for the tokenization tests, built once per session:
- a document pool made by the real prepare pipeline from the embedded sample WARC (pydoc pages
  of sympy/mpmath with math, and standard-library pages);
- a gzipped JSONL "code" source of real standard-library Python files (tokenize_inputs.py);
- both tokenized with the default DeepSeek tokenizer through `run_tokenize`."""

from __future__ import annotations

from pathlib import Path

import pytest

from beam_pipelines.config import register_configs
from beam_pipelines.stages.prepare import run_prepare
from stack_common.cli import compose_config
from tests.beam_pipelines.tokenize.tokenize_inputs import CodeSource, tokenize, write_code_jsonl  # noqa: F401


@pytest.fixture(scope="session")
def sample_pool(tmp_path_factory) -> Path:
    """The real prepare pipeline on the embedded sample: a pool of Document Parquet."""
    work = tmp_path_factory.mktemp("prepare")
    config = compose_config(
        "prepare",
        [
            f"corpus.work_dir={work}",
            "beam=direct_single",
            "corpus.sample_max_math_pages=30",
            "corpus.sample_max_other_pages=10",
        ],
        register_configs,
    )
    summary = run_prepare(config)
    assert summary["totals"]["kept"] >= 20
    return Path(config.output_dir)


@pytest.fixture(scope="session")
def code_source(tmp_path_factory) -> CodeSource:
    return write_code_jsonl(tmp_path_factory.mktemp("code") / "stdlib-code.jsonl.gz")


@pytest.fixture(scope="session")
def tokenized_work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenized-work")


@pytest.fixture(scope="session")
def math_corpus(sample_pool, tokenized_work_dir):
    """The pool tokenized in one process (the multi-processing runner adds ~10 s of worker
    start-up here), with small shards so the merge has several to join."""
    return tokenize(
        tokenized_work_dir,
        f"source.input={sample_pool}",
        "beam=direct_single",
        "max_documents_per_shard=10",
        "batch_documents=7",
    )


@pytest.fixture(scope="session")
def code_corpus(code_source, tokenized_work_dir):
    """The JSONL code source through the same entry point (one process)."""
    return tokenize(
        tokenized_work_dir,
        "source=github_code",
        "source.format=jsonl",
        f"source.input={code_source.path}",
        "source.id_field=path",
        "beam=direct_single",
    )
