"""HF LLaMA-layout checkpoint -> megatron-core weights: a checkpoint on disk, or a live model.

    import_hf_checkpoint(hf_dir, megatron_dir, dtype="auto") -> Path     # python -m megatron_recipes.convert
    load_hf_weights(hf_dir, model_chunks) -> HFArchitecture              # model.init_from_hf, any layout

Both ask megatron-core itself for the layout: the model's `sharded_state_dict()` (with its
ShardedTensorFactories applied) lists every tensor it stores, with its global key, its layer on
the stacked layer axis, and the rectangle of the global tensor this process holds. Each
rectangle is filled from the HF rows the mapping table (`mapping.py`) names for it, so the
same code fills the TP=1 model of an import and the TP/PP shards of a training run, and a
process only reads the HF rows it holds.

Import: the model is built on the meta device at TP=1 (no memory, no random init); each of its
sharded tensors gets its own freshly allocated buffer in the target dtype, filled tensor by
tensor, and the result is written with the training core's `save_checkpoint` as a weights-only
checkpoint `<megatron_dir>/iter_0000000/` + `latest`, with `model_config` = the HF
architecture (ModelConfig fields + vocab_size) and the original config.json (`hf_config`); the
HF tokenizer files are copied to `<megatron_dir>/tokenizer/` and recorded as the checkpoint's
tokenizer (train_state.extra.tokenizer), which runs started from it use by default.
Everything is checked before the first byte is written (architecture, every tensor's presence,
shape and dtype, shard files and their lengths). The embedding and output rows are padded with
zeros to `padded_vocab_size(vocab, make_vocab_size_divisible_by, tensor_parallel_size)`;
megatron loads them at any other padding too (its embedding tensors allow a shape mismatch on
the vocabulary axis), and export removes the padding.

Memory: one copy of the model in the target dtype (the buffers handed to dist_checkpointing)
plus one HF region at a time, read from memory-mapped shards. Loading into a live model needs
no extra copy at all. Cost: reads each needed HF byte once; writes the model once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories

from megatron_recipes.convert.architecture import ConversionError, HFArchitecture, hf_architecture
from megatron_recipes.convert.hf_checkpoint import FLOAT_DTYPES, HFCheckpoint
from megatron_recipes.convert.mapping import (
    EMBEDDING,
    HF_EMBEDDING,
    HF_IGNORED_SUFFIXES,
    HF_OUTPUT,
    MegatronTensor,
    TensorMapping,
    read_region,
)
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.models.llama import build_model, padded_vocab_size
from megatron_recipes.runtime.config import PRECISIONS, ParallelismConfig
from megatron_recipes.runtime.cpu import apply_cpu_runtime
from megatron_recipes.training.checkpointing import _unwrap, latest_iteration, save_checkpoint

log = logging.getLogger(__name__)

_SAFETENSORS_TO_PRECISION = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F64": "fp32"}


def torch_dtype(precision: str):
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def check_hf_tensors(source: HFCheckpoint, mapping: TensorMapping) -> None:
    """Every tensor the architecture needs is there, with its shape and a float dtype; nothing
    unexplained is there. Raises ConversionError naming the tensors (and their files)."""
    expected = mapping.hf_shapes()
    problems = []
    for name, shape in expected.items():
        info = source.tensors.get(name)
        if info is None:
            problems.append(f"tensor {name} is missing")
        elif info.shape != shape:
            problems.append(
                f"tensor {name} in {info.file.name} has shape {list(info.shape)}, expected {list(shape)}"
                " from config.json"
            )
        elif info.dtype not in FLOAT_DTYPES:
            problems.append(f"tensor {name} in {info.file.name} has dtype {info.dtype}, expected a float type")
    tied_output = mapping.architecture.tie_word_embeddings
    for name, info in source.tensors.items():
        if name in expected or name.endswith(HF_IGNORED_SUFFIXES) or (tied_output and name == HF_OUTPUT):
            continue
        reason = (
            "biases are not supported"
            if name.endswith(".bias")
            else "not part of a LlamaForCausalLM with this config.json"
        )
        problems.append(f"unexpected tensor {name} in {info.file.name} ({reason})")
    if problems:
        more = f" (and {len(problems) - 4} more problems)" if len(problems) > 4 else ""
        raise ConversionError(f"{source.directory}: " + "; ".join(problems[:4]) + more)


def source_precision(source: HFCheckpoint) -> str:
    """The checkpoint's own dtype, taken from its embedding tensor."""
    return _SAFETENSORS_TO_PRECISION.get(source.tensors[HF_EMBEDDING].dtype, "fp32")


def open_hf_checkpoint(hf_dir: str | os.PathLike) -> tuple[HFCheckpoint, HFArchitecture]:
    """Open and check an HF directory without knowing the vocabulary padding yet."""
    source = HFCheckpoint.open(hf_dir)
    architecture = hf_architecture(source.config, hf_dir)
    check_hf_tensors(source, TensorMapping(architecture, architecture.vocab_size))
    return source, architecture


# ---------------------------------------------------------------------------------------------
# Sharded tensors of a megatron model -> regions of the mapping table
# ---------------------------------------------------------------------------------------------


def _sharded_tensors(state: Any) -> Iterator[tuple[Any, Any, Any]]:
    """(container, key-or-index, ShardedTensor) for every ShardedTensor in a nested state dict."""
    items = state.items() if isinstance(state, dict) else enumerate(state)
    for name, value in list(items):
        if isinstance(value, ShardedTensor):
            yield state, name, value
        elif isinstance(value, (dict, list)):
            yield from _sharded_tensors(value)


def _model_state(chunk, metadata: dict | None = None) -> dict:
    """A GPTModel's sharded state dict with its factories (the fused fc1 halves) applied."""
    state = chunk.sharded_state_dict(metadata=metadata)
    apply_factories(state)
    return state


def _locate(sharded, mapping: TensorMapping) -> tuple[MegatronTensor, int, tuple[int, int] | None]:
    """The mapping entry of a ShardedTensor and the rectangle (first row, columns) it holds."""
    prepend = sharded.prepend_axis_num
    layer = sharded.global_offset[0] if prepend else None
    tensor = mapping.lookup(sharded.key, layer)
    if tensor is None:
        raise ConversionError(
            f"the megatron model has tensor {sharded.key} (layer {layer}), which the HF mapping does not know"
        )
    if prepend and sharded.global_shape[0] != mapping.architecture.num_layers:
        raise ConversionError(
            f"{sharded.key}: the model has {sharded.global_shape[0]} layers, the HF config"
            f" {mapping.architecture.num_layers}"
        )
    global_shape = tuple(sharded.global_shape[prepend:])
    if global_shape != tensor.shape:
        raise ConversionError(
            f"{tensor.label()}: the megatron model's shape {list(global_shape)} does not match"
            f" {list(tensor.shape)} built from the HF tensors {', '.join(tensor.hf_names()[:3])}"
        )
    offsets = sharded.global_offset[prepend:]
    columns = None
    if len(tensor.shape) == 2:
        columns = (offsets[1], offsets[1] + sharded.local_shape[1])
    return tensor, offsets[0], columns


def _padded_vocab_of(state: dict, architecture: HFArchitecture) -> int:
    for _, _, sharded in _sharded_tensors(state):
        if sharded.key == EMBEDDING or sharded.key == "output_layer.weight":
            return sharded.global_shape[0]
    return architecture.vocab_size


def _fill(
    state: dict,
    source: HFCheckpoint,
    architecture: HFArchitecture,
    allocate: Callable[[Any], Any] | None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Fill every ShardedTensor of `state` from `source`; `allocate(sharded) -> tensor` gives it
    a new buffer first (import), or None to copy into the model's own parameters (init).
    Returns the number of elements written."""
    mapping = TensorMapping(architecture, _padded_vocab_of(state, architecture))
    entries = list(_sharded_tensors(state))
    located = [(container, name, sharded, *_locate(sharded, mapping)) for container, name, sharded in entries]
    # Layer order: a layer's HF tensors usually share a shard, so reads stay local.
    located.sort(key=lambda entry: (-1 if entry[3].layer is None else entry[3].layer, entry[3].key))
    written = 0
    done_layers: set[int] = set()
    with torch.no_grad():
        for container, name, sharded, tensor, row_start, columns in located:
            if sharded.flattened_range is not None:
                raise ConversionError(f"{sharded.key}: flattened (distributed-optimizer) shards are not model weights")
            if allocate is not None:
                buffer = allocate(sharded)
                container[name] = dataclasses.replace(sharded, data=buffer, dtype=buffer.dtype)
            else:
                buffer = sharded.data
            read_region(tensor, source, buffer, row_start, columns)
            written += buffer.numel()
            if progress is not None and tensor.layer is not None and tensor.layer not in done_layers:
                done_layers.add(tensor.layer)
                progress(len(done_layers), architecture.num_layers)
    return written


# ---------------------------------------------------------------------------------------------
# Into a live model (model.init_from_hf)
# ---------------------------------------------------------------------------------------------


def load_hf_weights(hf_dir: str | os.PathLike, model: list) -> HFArchitecture:
    """Copy an HF checkpoint into this rank's model chunks (any TP/PP/VP layout, DDP-wrapped or
    not). Every rank calls it; each reads only the HF rows of its own shards. Call
    `optimizer.reload_model_params()` afterwards when an optimizer holds copies of the weights."""
    started = time.perf_counter()
    source, architecture = open_hf_checkpoint(hf_dir)
    elements = 0
    for chunk in model:
        elements += _fill(_model_state(_unwrap(chunk)), source, architecture, allocate=None)
    log.info("loaded %s weights on this rank from %s in %.1f s", f"{elements:,}", hf_dir, time.perf_counter() - started)
    return architecture


# ---------------------------------------------------------------------------------------------
# Into a checkpoint on disk
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def single_process_parallel_state() -> Iterator[None]:
    """A one-process gloo group and megatron's TP=1/PP=1 parallel state for the duration (kept if
    the caller already has them). Conversions run in one process, on CPU tensors, on any machine;
    without CUDA, megatron's checkpoint writer needs the CPU runtime layer (its CUDA syncs)."""
    if not torch.cuda.is_available():
        apply_cpu_runtime()
    created_group = not dist.is_initialized()
    if created_group:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    elif dist.get_world_size() != 1:
        raise ConversionError(
            "the converter runs in one process: start it with `python -m`, not torchrun or srun -n >1"
        )
    created_state = not parallel_state.model_parallel_is_initialized()
    if created_state:
        parallel_state.initialize_model_parallel(1, 1)
    try:
        yield
    finally:
        if created_state:
            parallel_state.destroy_model_parallel()
        if created_group:
            dist.destroy_process_group()


class PreparedWeights:
    """What `save_checkpoint` takes as a model chunk: `sharded_state_dict()` returns the meta
    model's layout with every tensor filled from the HF checkpoint (filled once, when asked)."""

    def __init__(self, meta_chunk, fill: Callable[[dict], None]):
        self._meta_chunk = meta_chunk
        self._fill = fill

    def sharded_state_dict(self, metadata: dict | None = None, **_: Any) -> dict:
        state = _model_state(self._meta_chunk, metadata)
        self._fill(state)
        return state


def resolve_import_precision(dtype: str, source: HFCheckpoint) -> str:
    if dtype not in PRECISIONS:
        raise ConversionError(f"dtype={dtype!r} is not one of {', '.join(PRECISIONS)}")
    return source_precision(source) if dtype == "auto" else dtype


def import_hf_checkpoint(
    hf_dir: str | os.PathLike,
    megatron_dir: str | os.PathLike,
    dtype: str = "auto",
    make_vocab_size_divisible_by: int = 128,
    tensor_parallel_size: int = 1,
    overwrite: bool = False,
    name: str | None = None,
) -> Path:
    """Convert `hf_dir` into a weights-only megatron checkpoint under `megatron_dir` (a run
    directory: `iter_0000000/` + `latest`). Returns the iteration directory."""
    started = time.perf_counter()
    source, architecture = open_hf_checkpoint(hf_dir)
    precision = resolve_import_precision(dtype, source)
    megatron_dir = Path(megatron_dir)
    if latest_iteration(megatron_dir) is not None and not overwrite:
        raise ConversionError(
            f"{megatron_dir} already holds a checkpoint (its `latest` file): choose another directory"
            " or set overwrite=true"
        )
    model_config = ModelConfig(
        name=name or Path(hf_dir).resolve().name,
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        **architecture.model_config_fields(),
    )
    model_config.validate()
    padded = padded_vocab_size(architecture.vocab_size, make_vocab_size_divisible_by, tensor_parallel_size)
    record = {
        **asdict(model_config),
        "vocab_size": architecture.vocab_size,
        "padded_vocab_size": padded,
        "dtype": precision,
        "converted_from": str(Path(hf_dir).resolve()),
        "hf_config": source.config,
    }

    target_dtype = torch_dtype(precision)
    log.info(
        "importing %s (%d layers, hidden %d, vocab %d padded to %d) as %s into %s",
        hf_dir,
        architecture.num_layers,
        architecture.hidden_size,
        architecture.vocab_size,
        padded,
        precision,
        megatron_dir,
    )

    def allocate(sharded):
        return torch.empty(sharded.local_shape, dtype=target_dtype)

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            log.info("filling layer %d/%d (%.1f s)", done, total, time.perf_counter() - started)

    def fill(state: dict) -> None:
        _fill(state, source, architecture, allocate, progress)

    with single_process_parallel_state():
        parallelism = ParallelismConfig(world_size=1)
        # Built with `padded` rows (a multiple of the divisor, so build_model keeps it at TP=1).
        # The local spec's checkpoint keys are the Transformer Engine spec's (training/checkpointing.py).
        layout_model = dataclasses.replace(model_config, transformer_impl="local")
        chunks = build_model(layout_model, parallelism, padded, device="cpu", precision=precision, meta_device=True)
        tokenizer = copy_tokenizer(Path(hf_dir), megatron_dir)
        # Training from this checkpoint (checkpoint.init_from) tokenizes with the model's own tokenizer.
        train_state = {"iteration": 0, "extra": {"tokenizer": tokenizer}} if tokenizer else None
        path = save_checkpoint(
            megatron_dir, 0, [PreparedWeights(chunks[0], fill)], train_state=train_state, model_config=record
        )
    log.info("wrote %s in %.1f s", path, time.perf_counter() - started)
    return path


# The files of a Hugging Face tokenizer that an imported checkpoint keeps beside its weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def copy_tokenizer(hf_dir: Path, megatron_dir: Path) -> str:
    """Copy the HF checkpoint's tokenizer files to `<megatron_dir>/tokenizer/`; returns the copied
    tokenizer.json ("" when the checkpoint has none: training then needs an explicit tokenizer)."""
    if not (hf_dir / TOKENIZER_FILES[0]).exists():
        log.warning("%s has no %s: runs from this checkpoint need their tokenizer set", hf_dir, TOKENIZER_FILES[0])
        return ""
    target = megatron_dir / "tokenizer"
    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (hf_dir / name).exists():
            shutil.copyfile(hf_dir / name, target / name)
    return str((target / TOKENIZER_FILES[0]).resolve())
