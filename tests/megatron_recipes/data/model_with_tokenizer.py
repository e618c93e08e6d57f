"""A tiny Hugging Face LLaMA checkpoint that ships its own tokenizer, and text sources tokenized for
real (beam_pipelines.tokenize) with that tokenizer or with the default DeepSeek one.

The tokenizer is a byte-level BPE trained here on standard-library docstrings (300 ids, the
model's vocabulary; end of document `<|endoftext|>` named by its tokenizer_config.json), so the
checkpoint's tokenizer differs from the 129,280-id default just as DeepSeekMath 7B's (102,400) does.
"""

from __future__ import annotations

import collections
import inspect
import json
import os.path
import shutil
import textwrap
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from beam_pipelines.config import register_configs
from beam_pipelines.stages.tokenize import run_tokenize
from stack_common.cli import compose_config
from tests.megatron_recipes.convert.tiny_models import GQA_UNTIED, write_tiny_llama

END_OF_TEXT = "<|endoftext|>"


def real_texts(count: int = 60) -> list[str]:
    """Docstrings of standard-library functions: real English prose."""
    texts = []
    for module in (os.path, textwrap, json, collections, inspect, shutil):
        for _, member in inspect.getmembers(module, callable):
            doc = inspect.getdoc(member)
            if doc and len(doc) > 80 and doc not in texts:
                texts.append(doc)
    return texts[:count]


def write_checkpoint_with_tokenizer(directory: Path, sizes: dict = GQA_UNTIED) -> Path:
    """A tiny LLaMA (default: GQA_UNTIED, vocabulary 300) and a tokenizer.json of that many ids
    beside its weights."""
    write_tiny_llama(directory, sizes, seed=3)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=sizes["vocab_size"],
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(real_texts(200), trainer)
    assert tokenizer.get_vocab_size() <= sizes["vocab_size"]
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": END_OF_TEXT}))
    return directory


def write_text_source(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as output:
        for index, text in enumerate(real_texts()):
            output.write(json.dumps({"id": f"doc-{index}", "text": text}) + "\n")
    return path


def tokenize_source(work_dir: Path, name: str, jsonl: Path, tokenizer_path: str = "") -> dict:
    """`python -m beam_pipelines.tokenize` (in process, one worker) of `jsonl` into
    `<work_dir>/tokenized/<name>`; returns its summary."""
    overrides = [
        f"corpus.work_dir={work_dir}",
        "beam=direct_single",
        f"source.name={name}",
        "source.format=jsonl",
        f"source.input={jsonl}",
    ]
    if tokenizer_path:
        overrides.append(f"tokenizer.path={tokenizer_path}")
    return run_tokenize(compose_config("tokenize", overrides, register_configs))


def copy_source(work_dir: Path, from_name: str, to_name: str) -> None:
    """Another source name for the same tokenized dataset (files and summary)."""
    tokenized = work_dir / "tokenized"
    for suffix in (".bin", ".idx"):
        shutil.copyfile(tokenized / f"{from_name}{suffix}", tokenized / f"{to_name}{suffix}")
    shutil.copytree(tokenized / from_name, tokenized / to_name, ignore=shutil.ignore_patterns("cache"))
