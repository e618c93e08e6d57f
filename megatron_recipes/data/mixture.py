"""The pretraining data mixture and its tokenizer, resolved before any process group exists (the
Slurm pre-check, launch/slurm/recipe_config.py, runs this part too, so it loads no torch):

    plan = plan_pretraining_data(config)              # all of the below, checked: a PretrainPlan
    mixture = resolve_mixture(config.data)            # files, token counts, weights
    tokenizer = load_tokenizer(path)                  # vocab size, end-of-document id, sha256

The tokenizer follows the model (data/model_tokenizer.py): data.tokenizer, else the tokenizer of
model.init_from_hf, else the one checkpoint.init_from recorded, else DeepSeek's; every dataset of
the mixture must have been tokenized with it.

Inside a source, datasets share its weight in proportion to their tokens, so a source split
into shards samples like one dataset (data/pretraining.py turns the mixture into megatron's
blended datasets).

Cost: reading .idx headers is O(documents) per dataset (memory-mapped).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from megatron_recipes.config import PretrainConfig
from megatron_recipes.data.config import DataConfig
from megatron_recipes.data.model_tokenizer import check_data_tokenizer, training_tokenizer_path
from megatron_recipes.generation.tokenizer import default_tokenizer_file
from stack_common.errors import ConfigError
from stack_common.tokenizer_identity import tokenizer_sha256

log = logging.getLogger("pretrain")

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
    """What megatron's GPT datasets need from a tokenizer: vocabulary size and end-of-document id,
    plus its identity (`sha256` of tokenizer.json) to check the data against.

    Built from a Hugging Face `tokenizers` file (tokenizer.json or a directory holding one). The
    end-of-document token follows the tokenize step's rule: the `eos_token` of a
    tokenizer_config.json beside the file, else the first known end-of-text token."""

    def __init__(self, path: str = ""):
        resolved = Path(path or default_tokenizer_file())
        if resolved.is_dir():
            resolved = resolved / "tokenizer.json"
        if not resolved.exists():
            raise ConfigError(f"data.tokenizer: {resolved} does not exist")
        self.path = str(resolved)
        self.tokenizer = Tokenizer.from_file(self.path)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.sha256 = tokenizer_sha256(self.path)
        candidates = [_configured_eos(resolved), *END_OF_DOCUMENT_TOKENS]
        self.eod = next(
            (self.tokenizer.token_to_id(t) for t in candidates if t and self.tokenizer.token_to_id(t) is not None),
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


def _configured_eos(tokenizer_json: Path) -> str:
    config = tokenizer_json.with_name("tokenizer_config.json")
    try:
        eos = json.loads(config.read_text()).get("eos_token") if config.exists() else None
    except (OSError, ValueError):
        return ""
    eos = eos.get("content") if isinstance(eos, dict) else eos
    return eos if isinstance(eos, str) else ""


def load_tokenizer(path: str = "") -> DatasetTokenizer:
    return DatasetTokenizer(path)


class SyntheticTokenizer:
    """Vocabulary size and end-of-document id for megatron's mock (synthetic-token) datasets."""

    def __init__(self, vocab_size: int, eod: int = 0):
        self.path = "synthetic"
        self.vocab_size = vocab_size
        self.eod = eod
        self.unique_identifiers = {"class": "SyntheticTokenizer", "vocab_size": vocab_size, "eod": eod}


@dataclass
class PretrainPlan:
    """Everything checked before any process group: device, data files, tokenizer, vocabulary."""

    mixture: Mixture | None
    tokenizer: DatasetTokenizer | SyntheticTokenizer
    vocab_size: int
    cache_dir: str | None


def plan_pretraining_data(config: PretrainConfig) -> PretrainPlan:
    """Data and tokenizer of a pretraining run (no device needed: launch/slurm/recipe_config.py runs
    it before queueing); raises ConfigError with one line if the run cannot work."""
    data, model = config.data, config.model
    for name, (old, new) in model.adopt_init_from_hf().items():
        log.info("model.%s = %s from %s/config.json (preset: %s)", name, new, model.init_from_hf, old)
    if data.mock:
        vocab_size = model.vocab_size or 32000
        return PretrainPlan(None, SyntheticTokenizer(vocab_size), vocab_size, data.cache_dir or None)
    path, origin = training_tokenizer_path(data.tokenizer, model.init_from_hf, config.checkpoint.init_from)
    tokenizer = load_tokenizer(path)
    vocab_size = model.vocab_size or tokenizer.vocab_size
    if tokenizer.vocab_size > vocab_size:
        raise ConfigError(
            f"the tokenizer {tokenizer.path} ({origin}) has {tokenizer.vocab_size} tokens but"
            f" model.vocab_size={vocab_size}: set data.tokenizer to the model's tokenizer (or model.vocab_size=null)"
        )
    mixture = resolve_mixture(data)
    unverified = check_data_tokenizer(mixture, tokenizer)
    if unverified:
        log.warning(
            "%d dataset(s) carry no tokenizer record (not made by beam_pipelines.tokenize?), their tokenizer is"
            " not checked: %s",
            len(unverified),
            ", ".join(unverified[:5]) + (" ..." if len(unverified) > 5 else ""),
        )
    # Logged once the checks pass: a refused run prints its one error line only.
    log.info(
        "tokenizer: %s (%s; sha256 %s, %d ids)", tokenizer.path, origin, tokenizer.sha256[:12], tokenizer.vocab_size
    )
    return PretrainPlan(mixture, tokenizer, vocab_size, data.cache_dir or None)
