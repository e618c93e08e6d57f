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

from beam_pipelines.config import TrainTokenizerConfig, register_configs
from stack_common.cli import hydra_entry_point


@hydra_entry_point("train_tokenizer", register_configs)
def main(config: TrainTokenizerConfig) -> None:
    from beam_pipelines.stages import train_tokenizer  # noqa: PLC0415  Beam loads after the config checks

    train_tokenizer.run_train_tokenizer(config)


if __name__ == "__main__":
    main()
