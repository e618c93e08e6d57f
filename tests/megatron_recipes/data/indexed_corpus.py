"""Write megatron indexed datasets (.bin/.idx) for tests, with megatron-core's own builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder


def write_indexed_dataset(prefix: str | Path, documents: list[list[int]], vocab_size: int) -> str:
    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if vocab_size < 65500 else np.int32
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for document in documents:
        builder.add_document(torch.tensor(document, dtype=torch.int64), [len(document)])
    builder.finalize(prefix + ".idx")
    return prefix
