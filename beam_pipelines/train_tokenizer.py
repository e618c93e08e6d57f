"""train_tokenizer: a byte-level BPE trained with Hugging Face `tokenizers`, for small experiments.

Reads the texts of one source (same `source` presets as tokenize: our Document Parquet, JSONL or
Parquet with a text field), at most `max_characters` of them, and trains a byte-level BPE:
numbers split into single digits (as DeepSeekMath's tokenizer does), GPT-2-style pre-splitting,
every byte representable (decode(encode(text)) == text for any text), and `eod_token` as special
token id 0. Writes to `output_dir`:
    tokenizer.json          load with tokenizers.Tokenizer.from_file, or pass the directory as
                            tokenize's tokenizer.path
    tokenizer_config.json   names eod_token as eos_token, so tokenize finds the EOD by itself
    train_summary.json      what was read and how long it took

Run locally:
    python -m beam_pipelines.train_tokenizer vocab_size=32000
    python -m beam_pipelines.tokenize tokenizer.path=outputs/corpus/sample/tokenizer
It is a single-process job (not Beam): for a cluster-scale tokenizer, train on a sample.
Cost: reading is linear in `max_characters`; the trainer's memory grows with the number of
distinct pre-tokens in the sample (a 32k vocabulary on 50 MB takes ~7 s on 2 cores).
"""

from __future__ import annotations

import json
import logging
import os
import time

from beam_pipelines.config import TrainTokenizerConfig, register_configs
from stack_common.cli import hydra_entry_point
from stack_common.errors import ConfigError

log = logging.getLogger("train_tokenizer")


def build_byte_level_bpe(config: TrainTokenizerConfig):
    """An untrained tokenizer and its trainer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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
    from apache_beam.io.filesystems import FileSystems

    from beam_pipelines.io.parquet import write_json
    from beam_pipelines.io.text_sources import iter_source_texts, source_pattern

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


@hydra_entry_point("train_tokenizer", register_configs)
def main(config: TrainTokenizerConfig) -> None:
    run_train_tokenizer(config)


if __name__ == "__main__":
    main()
