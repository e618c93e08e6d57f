"""The pretraining data mixture and its tokenizer, resolved before any process group exists (the
Slurm pre-check, launch/slurm/recipe_config.py, runs this part too, so it loads no torch):

    mixture = resolve_mixture(config.data)            # files, token counts, weights
    tokenizer = load_tokenizer(config.data.tokenizer)  # vocab size and end-of-document id

Inside a source, datasets share its weight in proportion to their tokens, so a source split
into shards samples like one dataset (data/pretraining.py turns the mixture into megatron's
blended datasets).

Cost: reading .idx headers is O(documents) per dataset (memory-mapped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from megatron_recipes.data.config import DataConfig
from megatron_recipes.generation.tokenizer import default_tokenizer_file
from stack_common.errors import ConfigError

_INDEX_HEADER = b"MMIDIDX\x00\x00"
# End-of-document tokens of common tokenizers, in the order they are looked for.
END_OF_DOCUMENT_TOKENS = ("<｜end▁of▁sentence｜>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")


@dataclass(frozen=True)
class DatasetShare:
    prefix: str
    tokens: int
    documents: int
    weight: float  # share of all training samples


@dataclass
class Mixture:
    """Resolved sources: every dataset prefix with its token count and blend weight."""

    sources: dict[str, list[DatasetShare]] = field(default_factory=dict)

    def blend(self) -> tuple[list[str], list[float]]:
        shares = [share for shares in self.sources.values() for share in shares if share.weight > 0]
        return [share.prefix for share in shares], [share.weight for share in shares]

    def source_weights(self) -> dict[str, float]:
        return {name: sum(share.weight for share in shares) for name, shares in self.sources.items()}

    def describe(self) -> str:
        parts = []
        for name, shares in self.sources.items():
            tokens = sum(share.tokens for share in shares)
            parts.append(
                f"{name} {100 * sum(s.weight for s in shares):.1f}% ({len(shares)} datasets, {tokens:,} tokens)"
            )
        return "; ".join(parts)


def read_index_counts(prefix: str) -> tuple[int, int]:
    """(tokens, documents) of a megatron indexed dataset, from its .idx file alone."""
    path = prefix + ".idx"
    with open(path, "rb") as handle:
        header = handle.read(len(_INDEX_HEADER))
        if header != _INDEX_HEADER:
            raise ConfigError(f"{path} is not a megatron indexed-dataset index (bad header)")
        handle.read(8 + 1)  # version, dtype code
        sequence_count = int(np.frombuffer(handle.read(8), dtype="<u8")[0])
        document_count = int(np.frombuffer(handle.read(8), dtype="<u8")[0]) - 1
        offset = handle.tell()
    lengths = np.memmap(path, dtype=np.int32, mode="r", offset=offset, shape=(sequence_count,))
    return int(lengths.sum(dtype=np.int64)), document_count


def expand_prefixes(source: str, entries: list[str]) -> list[str]:
    """Prefixes named by a source's entries (prefixes, .bin/.idx paths or directories)."""
    prefixes: list[str] = []
    for entry in entries:
        stripped = entry[:-4] if entry.endswith((".bin", ".idx")) else entry
        if os.path.exists(stripped + ".idx") and os.path.exists(stripped + ".bin"):
            prefixes.append(stripped)
        elif os.path.isdir(entry):
            found = sorted(str(p.with_suffix("")) for p in Path(entry).rglob("*.idx") if p.with_suffix(".bin").exists())
            # megatron's own index caches live beside datasets in `cache/` folders: not data.
            found = [p for p in found if "/cache/" not in p]
            if not found:
                raise ConfigError(
                    f"data source {source}: directory {entry} holds no .bin/.idx dataset (run the tokenize step?)"
                )
            prefixes.extend(found)
        else:
            raise ConfigError(
                f"data source {source}: {entry} is neither a dataset prefix (.bin + .idx) nor a directory"
            )
    return prefixes


def resolve_mixture(data: DataConfig) -> Mixture:
    """Find every dataset of every source and give it its blend weight (raises ConfigError)."""
    total_weight = sum(data.weights.values())
    mixture = Mixture()
    for name, entries in data.sources.items():
        source_weight = data.weights[name] / total_weight
        if source_weight == 0:  # weight 0 switches a preset's source off; its files need not exist
            mixture.sources[name] = []
            continue
        prefixes = expand_prefixes(name, list(entries))
        counts = [read_index_counts(prefix) for prefix in prefixes]
        source_tokens = sum(tokens for tokens, _ in counts)
        if source_tokens == 0 and source_weight > 0:
            raise ConfigError(f"data source {name} has weight {data.weights[name]} but its datasets hold no tokens")
        mixture.sources[name] = [
            DatasetShare(prefix, tokens, documents, source_weight * tokens / source_tokens if source_tokens else 0.0)
            for prefix, (tokens, documents) in zip(prefixes, counts)
        ]
    return mixture


class DatasetTokenizer:
    """What megatron's GPT datasets need from a tokenizer: vocabulary size and end-of-document id.

    Built from a Hugging Face `tokenizers` file (tokenizer.json or a directory holding one)."""

    def __init__(self, path: str = ""):
        resolved = Path(path or default_tokenizer_file())
        if resolved.is_dir():
            resolved = resolved / "tokenizer.json"
        if not resolved.exists():
            raise ConfigError(f"data.tokenizer: {resolved} does not exist")
        self.path = str(resolved)
        self.tokenizer = Tokenizer.from_file(self.path)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.eod = next(
            (
                self.tokenizer.token_to_id(t)
                for t in END_OF_DOCUMENT_TOKENS
                if self.tokenizer.token_to_id(t) is not None
            ),
            None,
        )
        # megatron keys its index cache on this description.
        self.unique_identifiers = {
            "class": "DatasetTokenizer",
            "path": self.path,
            "vocab_size": self.vocab_size,
            "eod": self.eod,
        }

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


def load_tokenizer(path: str = "") -> DatasetTokenizer:
    return DatasetTokenizer(path)


class SyntheticTokenizer:
    """Vocabulary size and end-of-document id for megatron's mock (synthetic-token) datasets."""

    def __init__(self, vocab_size: int, eod: int = 0):
        self.path = "synthetic"
        self.vocab_size = vocab_size
        self.eod = eod
        self.unique_identifiers = {"class": "SyntheticTokenizer", "vocab_size": vocab_size, "eod": eod}
