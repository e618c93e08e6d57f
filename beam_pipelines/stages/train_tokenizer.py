"""The body of `python -m beam_pipelines.train_tokenizer` (see that module for what it does and how to run
it): reads the source's texts, trains the tokenizer, writes it and its summary."""

from __future__ import annotations

import json
import logging
import os
import time

from apache_beam.io.filesystems import FileSystems
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from beam_pipelines.config import TrainTokenizerConfig
from beam_pipelines.io.parquet import write_json
from beam_pipelines.io.text_sources import iter_source_texts, source_pattern
from stack_common.errors import ConfigError

log = logging.getLogger("train_tokenizer")


def build_byte_level_bpe(config: TrainTokenizerConfig):
    """An untrained tokenizer and its trainer."""
    tokenizer = Tokenizer(models.BPE())
    splitters = [pre_tokenizers.Digits(individual_digits=True)] if config.individual_digits else []
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [*splitters, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=[config.eod_token, *config.extra_special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tokenizer, trainer


def run_train_tokenizer(config: TrainTokenizerConfig) -> dict:
    """Train, write tokenizer.json + tokenizer_config.json + train_summary.json; return the summary."""
    started = time.time()
    if not FileSystems.match([source_pattern(config.source)])[0].metadata_list:
        raise ConfigError(f"source.input={config.source.input!r}: no files match {source_pattern(config.source)}")
    tokenizer, trainer = build_byte_level_bpe(config)
    read = {"documents": 0, "characters": 0}

    def texts():
        for text in iter_source_texts(config.source, config.max_characters):
            read["documents"] += 1
            read["characters"] += len(text)
            yield text

    log.info(
        "[train_tokenizer] %s (%s) -> vocab %d", config.source.name, source_pattern(config.source), config.vocab_size
    )
    # Parallel training threads are the point of training in-process; keep them on here.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    tokenizer.train_from_iterator(texts(), trainer=trainer)
    if read["documents"] == 0:
        raise ConfigError(f"source {config.source.name} has no text to train on")
    output_dir = config.output_dir.rstrip("/")
    with FileSystems.create(f"{output_dir}/tokenizer.json") as handle:
        handle.write(tokenizer.to_str().encode("utf-8"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": config.eod_token,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    with FileSystems.create(f"{output_dir}/tokenizer_config.json") as handle:
        handle.write(json.dumps(tokenizer_config, indent=2).encode("utf-8"))
    summary = {
        "pipeline": "train_tokenizer",
        "source": {"name": config.source.name, "input": source_pattern(config.source)},
        "documents_read": read["documents"],
        "characters_read": read["characters"],
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "requested_vocab_size": config.vocab_size,
        "eod_token": config.eod_token,
        "eod_id": tokenizer.token_to_id(config.eod_token),
        "output": f"{output_dir}/tokenizer.json",
        "elapsed_seconds": round(time.time() - started, 3),
    }
    write_json(f"{output_dir}/train_summary.json", summary)
    log.info(
        "[train_tokenizer] %d documents, %d characters -> %s (vocab %d, EOD %r = %s, %.1f s)",
        summary["documents_read"],
        summary["characters_read"],
        summary["output"],
        summary["vocab_size"],
        config.eod_token,
        summary["eod_id"],
        summary["elapsed_seconds"],
    )
    return summary
