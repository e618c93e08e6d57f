"""Fixtures of the post-training tests: a small real tokenizer, and (for the integration tests)
one SFT'd tiny checkpoint per test session, made by the real SFT entry point."""

from __future__ import annotations

import pytest

from tests.megatron_recipes.posttraining.arithmetic import CODE_TEXTS, chat_texts, train_small_tokenizer, write_arithmetic_sft


@pytest.fixture(scope="session")
def tokenizer_directory(tmp_path_factory):
    work = tmp_path_factory.mktemp("tokenizer")
    records = write_arithmetic_sft(work / "corpus.jsonl", 400)
    return train_small_tokenizer(work / "tokenizer", chat_texts(records) + CODE_TEXTS * 20)


@pytest.fixture(scope="session")
def small_tokenizer(tokenizer_directory):
    from megatron_recipes.generation.tokenizer import TextTokenizer

    return TextTokenizer(str(tokenizer_directory))
