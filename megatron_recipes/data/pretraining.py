"""The pretraining mixture: Hydra data config -> megatron-core blended GPT datasets -> batches.

    mixture = resolve_mixture(config.data)            # data/mixture.py: files, token counts, weights
    tokenizer = load_tokenizer(config.data.tokenizer)  # data/mixture.py: vocab size, end-of-document id
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

import functools
import signal
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, MockGPTDataset
from torch.utils.data import DataLoader

from megatron_recipes.data.config import DataConfig
from megatron_recipes.data.mixture import DatasetTokenizer, Mixture
from stack_common.errors import ConfigError


@dataclass
class PretrainingDatasets:
    train: Any
    validation: Any | None
    test: Any | None


def gpt_dataset_config(data: DataConfig, mixture: Mixture | None, tokenizer: DatasetTokenizer, cache_dir: str | None):
    """megatron-core GPTDatasetConfig for the mixture (mock tokens when data.mock)."""
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
