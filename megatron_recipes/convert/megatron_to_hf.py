"""megatron-core checkpoint (any TP/PP/VP/DP layout it was saved at) -> HF LlamaForCausalLM files.

    export_megatron_checkpoint(megatron_dir, hf_dir, dtype="auto", max_shard_size="5GB") -> Path

`megatron_dir` is a run directory (its `latest`) or one `iter_*` directory written by the
training core or by an import. The architecture comes from the checkpoint's `model_config`,
the stored shapes come from its dist_checkpointing metadata, and the two are checked against
each other (and every tensor's presence) before anything is written. Tensors are read with
megatron's own loader at their global names, so the layout the run used does not matter.

Streaming: one group at a time is loaded - the embedding, then each decoder layer, then the
final norm and output layer - split or copied into HF tensors (QKV into q/k/v by key/value
group, fc1 into gate/up, vocabulary padding dropped) and handed to a shard writer that writes
each `model-0000k-of-0000n.safetensors` as soon as its planned tensors are complete. Peak
memory: one shard (`max_shard_size`) plus one layer. Files go to `<hf_dir>.incomplete/` and
are renamed to `hf_dir` when complete.

config.json: the architecture from the checkpoint; the other fields (token ids, ...) from a
template, the first of: `hf_template`'s config.json, the HF config an import stored in the
checkpoint, the config.json of the run's `model.init_from_hf`. Tokenizer and generation files
of the template directory (when it is a directory that still exists) are copied along, so
the result is a complete HF model directory.

Cost: reads the model once and writes it once; memory bounded by one shard plus one layer.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.mapping import ShardedTensor
from torch.distributed.checkpoint import FileSystemReader

from megatron_recipes.convert.architecture import (
    CONFIG_FILE,
    ConversionError,
    HFArchitecture,
    hf_config_for_export,
    read_hf_config,
    torch_dtype_name,
)
from megatron_recipes.convert.config import parse_size
from megatron_recipes.convert.hf_checkpoint import (
    DTYPE_SIZES,
    ShardedSafetensorsWriter,
    plan_shards,
    write_config,
)
from megatron_recipes.convert.hf_to_megatron import single_process_parallel_state, torch_dtype
from megatron_recipes.convert.mapping import EMBEDDING, FINAL_NORM, OUTPUT, MegatronTensor, TensorMapping
from megatron_recipes.runtime.config import PRECISIONS
from megatron_recipes.training.checkpointing import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    read_checkpoint_info,
    resolve_checkpoint,
)

log = logging.getLogger(__name__)

# Files of an HF model directory besides config and weights, copied from the template.
COMPANION_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
)
_BYTES_PER_ELEMENT = {"bf16": DTYPE_SIZES["BF16"], "fp16": DTYPE_SIZES["F16"], "fp32": DTYPE_SIZES["F32"]}


def _precision_of(dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def _template(model_config: dict[str, Any], hf_template: str | os.PathLike | None) -> tuple[dict | None, Path | None]:
    """(config dict, directory to copy companion files from) per the order in the docstring."""
    if hf_template:
        template = Path(hf_template)
        if template.is_dir():
            return read_hf_config(template), template
        if template.is_file():
            return read_hf_config(template.parent), template.parent
        raise ConversionError(f"hf_template={hf_template} does not exist")
    origin = model_config.get("converted_from") or model_config.get("init_from_hf")
    directory = Path(origin) if origin and Path(origin, CONFIG_FILE).is_file() else None
    if isinstance(model_config.get("hf_config"), dict):
        return model_config["hf_config"], directory
    if directory is not None:
        return read_hf_config(directory), directory
    return None, None


def _check_stored(stored: dict[str, Any], mapping: TensorMapping, where: Path) -> None:
    """Every tensor the model_config implies is stored, with the implied global shape."""
    architecture = mapping.architecture
    problems = []
    for (key, layer), tensor in mapping.tensors.items():
        if layer not in (None, 0):
            continue
        entry = stored.get(key)
        if entry is None:
            problems.append(f"tensor {key} is missing")
            continue
        expected = tensor.shape if layer is None else (architecture.num_layers, *tensor.shape)
        if tuple(entry.global_shape) != tuple(expected):
            problems.append(
                f"tensor {key} has shape {list(entry.global_shape)}, expected {list(expected)} from model_config"
            )
    if architecture.tie_word_embeddings and OUTPUT in stored:
        problems.append(f"tensor {OUTPUT} is stored but model_config says the embeddings are tied")
    if problems:
        raise ConversionError(
            f"{where}: " + "; ".join(problems[:4]) + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else "")
        )


def _check_storage_files(directory: Path, keys: set[str]) -> None:
    """Every byte range the checkpoint's metadata assigns to the model tensors lies in a file that
    exists and is long enough (a lost or truncated .distcp file is named with its tensors)."""
    try:
        storage = FileSystemReader(str(directory)).read_metadata().storage_data
    except Exception as error:
        raise ConversionError(f"{directory}: cannot read the checkpoint's .metadata ({error})") from None
    sizes: dict[str, int | None] = {}
    for index, location in storage.items():
        if index.fqn not in keys:
            continue
        name = location.relative_path
        if name not in sizes:
            path = directory / name
            sizes[name] = path.stat().st_size if path.is_file() else None
        if sizes[name] is None:
            raise ConversionError(f"{directory}: file {name} holding tensor {index.fqn} is missing")
        if location.offset + location.length > sizes[name]:
            raise ConversionError(
                f"{directory}: file {name} is truncated: tensor {index.fqn} ends at byte"
                f" {location.offset + location.length} of {sizes[name]}"
            )


def _load_group(directory: Path, tensors: list[MegatronTensor], stored: dict[str, Any], num_layers: int) -> dict:
    """Load whole per-layer tensors of one group with megatron's loader -> {(key, layer): tensor}."""
    request = {}
    for tensor in tensors:
        if tensor.layer is None:
            buffer = torch.empty(tensor.shape, dtype=stored[tensor.key].dtype)
            request[tensor.label()] = ShardedTensor.from_rank_offsets(tensor.key, buffer, replica_id=0)
        else:
            # One slice [layer] of the stacked global tensor, as a real (not prepended) axis:
            # megatron's prepended-axis path expects every layer of the grid to be requested.
            buffer = torch.empty((1, *tensor.shape), dtype=stored[tensor.key].dtype)
            request[tensor.label()] = ShardedTensor.from_rank_offsets(
                tensor.key, buffer, (0, tensor.layer, num_layers), replica_id=0
            )
    try:
        # One layer of the stacked tensors is requested at a time: not a full cover of them.
        loaded = dist_checkpointing.load(request, str(directory), validate_access_integrity=False)
    except Exception as error:  # a torn or unreadable .distcp file
        raise ConversionError(
            f"cannot read {', '.join(t.label() for t in tensors)} from {directory}: {error}"
        ) from None
    return {
        (tensor.key, tensor.layer): loaded[tensor.label()] if tensor.layer is None else loaded[tensor.label()][0]
        for tensor in tensors
    }


def _hf_tensors(mapping: TensorMapping, group: list[MegatronTensor], loaded: dict, dtype) -> dict[str, Any]:
    """Split the loaded megatron tensors of a group into HF tensors (padding rows dropped)."""
    out = {}
    for name, parts in mapping.hf_sources(group).items():
        pieces = [loaded[(tensor.key, tensor.layer)][offset : offset + block.rows] for tensor, offset, block in parts]
        out[name] = (pieces[0] if len(pieces) == 1 else torch.cat(pieces)).to(dtype)
    return out


def export_megatron_checkpoint(
    megatron_dir: str | os.PathLike,
    hf_dir: str | os.PathLike,
    dtype: str = "auto",
    max_shard_size: str | int = "5GB",
    hf_template: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `hf_dir` (config.json + safetensors, loadable with AutoModelForCausalLM) from a
    megatron checkpoint. Returns hf_dir."""
    started = time.perf_counter()
    if dtype not in PRECISIONS:
        raise ConversionError(f"dtype={dtype!r} is not one of {', '.join(PRECISIONS)}")
    max_shard_bytes = parse_size(max_shard_size)
    try:
        directory = resolve_checkpoint(megatron_dir)
        info = read_checkpoint_info(directory)
    except (CheckpointError, OSError, ValueError) as error:
        raise ConversionError(f"cannot read the megatron checkpoint {megatron_dir}: {error}") from None
    if info.get("format") != CHECKPOINT_FORMAT:
        raise ConversionError(f"{directory} is not a {CHECKPOINT_FORMAT} checkpoint (format={info.get('format')!r})")
    model_config = dict(info.get("model_config") or {})
    architecture = HFArchitecture.from_model_config(model_config)
    template, companion_directory = _template(model_config, hf_template)
    hf_dir = Path(hf_dir)
    if hf_dir.exists() and any(hf_dir.iterdir()) and not overwrite:
        raise ConversionError(f"{hf_dir} exists and is not empty: choose another directory or set overwrite=true")

    with single_process_parallel_state():
        stored = {
            key: entry
            for key, entry in dist_checkpointing.load_tensors_metadata(str(directory)).items()
            if not key.startswith("optimizer")
        }
        if EMBEDDING not in stored:
            raise ConversionError(f"{directory}: tensor {EMBEDDING} is missing (not a GPT model checkpoint?)")
        padded = stored[EMBEDDING].global_shape[0]
        if padded < architecture.vocab_size:
            raise ConversionError(
                f"{directory}: tensor {EMBEDDING} has {padded} rows, fewer than vocab_size={architecture.vocab_size}"
            )
        mapping = TensorMapping(architecture, padded)
        if OUTPUT in stored and stored[OUTPUT].global_shape[0] != padded:
            raise ConversionError(
                f"{directory}: {OUTPUT} has {stored[OUTPUT].global_shape[0]} rows but {EMBEDDING} {padded}"
            )
        _check_stored(stored, mapping, directory)
        _check_storage_files(directory, {tensor.key for tensor in mapping.tensors.values()})
        precision = _precision_of(stored[EMBEDDING].dtype) if dtype == "auto" else dtype
        target_dtype = torch_dtype(precision)
        hf_shapes = mapping.hf_shapes()
        plan = plan_shards(
            ((name, _numel(shape) * _BYTES_PER_ELEMENT[precision]) for name, shape in hf_shapes.items()),
            max_shard_bytes,
        )
        log.info(
            "exporting %s (%d layers, vocab %d of %d stored rows) as %s into %d file(s) in %s",
            directory,
            architecture.num_layers,
            architecture.vocab_size,
            padded,
            precision,
            len(plan.files),
            hf_dir,
        )

        staging = hf_dir.with_name(hf_dir.name + ".incomplete")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            writer = ShardedSafetensorsWriter(staging, plan)
            groups = [mapping.layer_tensors(None)[:1]]  # the embedding first (HF order)
            groups += [mapping.layer_tensors(layer) for layer in range(architecture.num_layers)]
            groups.append([tensor for tensor in mapping.layer_tensors(None) if tensor.key in (FINAL_NORM, OUTPUT)])
            for index, group in enumerate(groups):
                loaded = _load_group(directory, group, stored, architecture.num_layers)
                for name, tensor in _hf_tensors(mapping, group, loaded, target_dtype).items():
                    if tuple(tensor.shape) != hf_shapes[name]:
                        raise AssertionError(f"{name}: exported {list(tensor.shape)}, planned {list(hf_shapes[name])}")
                    writer.add(name, tensor)
                del loaded
                layers = architecture.num_layers
                if 0 < index <= layers and (index == layers or index % max(1, layers // 10) == 0):
                    log.info("exported layer %d/%d (%.1f s)", index, layers, time.perf_counter() - started)
            writer.finish()
            write_config(staging, hf_config_for_export(architecture, torch_dtype_name(target_dtype), template))
            if companion_directory is not None:
                for file_name in COMPANION_FILES:
                    if (companion_directory / file_name).is_file():
                        shutil.copy2(companion_directory / file_name, staging / file_name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # never leave a half-written model behind
            raise
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    os.replace(staging, hf_dir)
    log.info(
        "wrote %s (%d file(s), %.2f GB) in %.1f s",
        hf_dir,
        len(plan.files),
        writer.bytes_written / 1e9,
        time.perf_counter() - started,
    )
    return hf_dir


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count
