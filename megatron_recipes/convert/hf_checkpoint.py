"""Hugging Face safetensors checkpoints: checked from their headers, read by rows, written by shards.

Reading (`HFCheckpoint.open(dir)`): config.json plus either `model.safetensors` or
`model.safetensors.index.json` with its shards. Opening parses only the 8-byte length and the
JSON header of every shard, and checks, before any tensor byte is read and before a converter
writes anything: every shard the index names exists, holds the tensors the index says it holds,
and is long enough for every tensor in its header (a truncated download is named with the
tensor that lies past the end). `read(name, rows, columns)` returns a region of one tensor;
safetensors memory-maps the file, so only the pages of that region are touched.
`pytorch_model*.bin` checkpoints are refused (pickles; convert them to safetensors first).

Writing (`ShardedSafetensorsWriter`): tensors arrive one at a time in a planned order; a shard
file is written as soon as its planned tensors are all there, then dropped from memory. The
plan (`plan_shards`) packs tensors in order into shards of at most `max_shard_size` bytes (a
tensor larger than that gets a shard of its own), named like transformers' own
`model-00001-of-00003.safetensors` with `model.safetensors.index.json`, or a single
`model.safetensors` when everything fits in one.

Cost: opening reads every shard's header (kilobytes); reading touches only the requested bytes;
writing holds at most one shard in memory.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from safetensors import safe_open
from safetensors.torch import save_file

from megatron_recipes.convert.architecture import CONFIG_FILE, ConversionError, read_hf_config

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Bytes per element of the safetensors dtype names.
DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what its header says."""

    name: str
    file: Path
    dtype: str  # safetensors name: F32, BF16, ...
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZES.get(self.dtype, 1)


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Parse one file's header and check that every tensor's bytes lie inside the file."""
    # One cause per message: the length prefix and the header bytes are checked before the JSON
    # is parsed, so a file cut inside its header reads "truncated", never "not valid JSON".
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ConversionError(f"{path} is truncated: {size} bytes, fewer than the 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise ConversionError(
                    f"{path} is not a safetensors file: its first 8 bytes give a header of {length} bytes"
                )
            if length > size - 8:
                raise ConversionError(
                    f"{path} is truncated inside its header: the header needs {length} bytes, the file holds "
                    f"{size - 8} after the length"
                )
            header_bytes = handle.read(length)
    except OSError as error:
        raise ConversionError(f"cannot read {path}: {error}") from None
    try:
        header = json.loads(header_bytes)
    except ValueError as error:
        raise ConversionError(f"{path}: the safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: the safetensors header is not a JSON object")
    data_bytes = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(int(n) for n in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"{path}: malformed header entry for tensor {name}") from None
        if end > data_bytes:
            raise ConversionError(
                f"{path} is truncated: tensor {name} ends at byte {end} of the data but the file holds {data_bytes}"
            )
        expected = math.prod(shape) * DTYPE_SIZES.get(dtype, 0)
        if dtype not in DTYPE_SIZES or end - start != expected:
            raise ConversionError(
                f"{path}: tensor {name} has {end - start} bytes for {dtype} {list(shape)} (corrupt header)"
            )
        tensors[name] = TensorInfo(name, path, dtype, shape)
    return tensors


class HFCheckpoint:
    """An HF model directory opened for reading: its config.json and the headers of its shards."""

    def __init__(self, directory: Path, config: dict[str, Any], tensors: dict[str, TensorInfo]):
        self.directory = directory
        self.config = config
        self.tensors = tensors

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "HFCheckpoint":
        directory = Path(directory)
        config = read_hf_config(directory)
        index_path, single_path = directory / INDEX_FILE, directory / SINGLE_FILE
        if index_path.is_file():
            tensors = cls._open_sharded(directory, index_path)
        elif single_path.is_file():
            tensors = read_safetensors_header(single_path)
        else:
            pickles = sorted(p.name for p in directory.glob("pytorch_model*.bin"))
            hint = (
                (
                    f" (found {pickles[0]}: pickled .bin checkpoints are not read; save the model with"
                    " safe_serialization=True first)"
                )
                if pickles
                else ""
            )
            raise ConversionError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}{hint}")
        return cls(directory, config, tensors)

    @staticmethod
    def _open_sharded(directory: Path, index_path: Path) -> dict[str, TensorInfo]:
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConversionError(f"{index_path} is not a safetensors index (no weight_map): {error}") from None
        by_file: dict[str, list[str]] = {}
        for name, file_name in weight_map.items():
            by_file.setdefault(file_name, []).append(name)
        tensors: dict[str, TensorInfo] = {}
        for file_name, names in sorted(by_file.items()):
            path = directory / file_name
            if not path.is_file():
                shown = ", ".join(sorted(names)[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                raise ConversionError(
                    f"shard {file_name} named by {INDEX_FILE} is missing from {directory}: it holds {shown}"
                )
            header = read_safetensors_header(path)
            for name in names:
                if name not in header:
                    raise ConversionError(f"{INDEX_FILE} places tensor {name} in {file_name}, which does not hold it")
                tensors[name] = header[name]
        return tensors

    def read(self, name: str, rows: tuple[int, int] | None = None, columns: tuple[int, int] | None = None):
        """Tensor `name`, or rows [start, stop) (and columns [start, stop)) of it."""
        info = self.tensors[name]
        with safe_open(str(info.file), framework="pt") as handle:
            piece = handle.get_slice(name)
            if rows is None and columns is None:
                return piece[:]
            row_slice = slice(*rows) if rows is not None else slice(None)
            if columns is None:
                return piece[row_slice]
            return piece[row_slice, slice(*columns)]

    def files(self) -> list[Path]:
        return sorted({info.file for info in self.tensors.values()})


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardPlan:
    files: tuple[str, ...]
    file_of: dict[str, str]  # tensor name -> file name
    total_bytes: int


def plan_shards(sizes: Iterable[tuple[str, int]], max_shard_bytes: int) -> ShardPlan:
    """Pack (name, bytes) in order into files of at most max_shard_bytes each."""
    groups: list[list[str]] = []
    current_bytes = 0
    total = 0
    for name, nbytes in sizes:
        if not groups or (current_bytes + nbytes > max_shard_bytes and groups[-1]):
            groups.append([])
            current_bytes = 0
        groups[-1].append(name)
        current_bytes += nbytes
        total += nbytes
    if len(groups) <= 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{index + 1:05d}-of-{len(groups):05d}.safetensors" for index in range(len(groups))]
    file_of = {name: file_name for file_name, group in zip(names, groups) for name in group}
    return ShardPlan(tuple(names), file_of, total)


class ShardedSafetensorsWriter:
    """Write planned shards as their tensors arrive; each shard leaves memory once written."""

    def __init__(self, directory: Path, plan: ShardPlan):
        self.directory = directory
        self.plan = plan
        self._pending: dict[str, set[str]] = {}
        for name, file_name in plan.file_of.items():
            self._pending.setdefault(file_name, set()).add(name)
        self._buffers: dict[str, dict[str, Any]] = {}
        self.bytes_written = 0

    def add(self, name: str, tensor) -> None:
        file_name = self.plan.file_of[name]
        self._buffers.setdefault(file_name, {})[name] = tensor.contiguous()
        self._pending[file_name].discard(name)
        if not self._pending[file_name]:
            self._write(file_name)

    def _write(self, file_name: str) -> None:
        tensors = self._buffers.pop(file_name)
        save_file(tensors, str(self.directory / file_name), metadata={"format": "pt"})
        self.bytes_written += sum(t.numel() * t.element_size() for t in tensors.values())

    def finish(self) -> None:
        unwritten = sorted(name for names in self._pending.values() for name in names)
        if unwritten:
            raise ConversionError(f"export produced no tensor for {', '.join(unwritten[:5])}")
        if len(self.plan.files) > 1:
            index = {
                "metadata": {"total_size": self.plan.total_bytes},
                "weight_map": dict(sorted(self.plan.file_of.items())),
            }
            (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def write_config(directory: Path, config: dict[str, Any]) -> None:
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
