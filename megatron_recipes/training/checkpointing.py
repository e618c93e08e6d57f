"""Checkpoints with megatron-core dist_checkpointing: atomic, resumable, loadable at any layout.

Directory layout (one training run):

    <dir>/
      iter_0000100/            one checkpoint: megatron dist_checkpointing files (metadata.json,
                               common.pt, *.distcp, .metadata) + checkpoint_info.json (readable)
      iter_0000200/
      latest                   "200\n": the newest COMPLETE checkpoint
      exit_status.json         why the last run stopped (written by the training loop)

Atomicity: every rank writes into `iter_0000200.incomplete/`; after all ranks are done, rank 0
renames it to `iter_0000200/` and then replaces `latest` (write + fsync + os.replace). A crash
at any moment leaves `latest` pointing at the previous complete checkpoint; leftovers named
`*.incomplete` are never read and are removed by the next save of that iteration.

State-dict layout (what a converter must write to be loadable by every recipe):
- "model" (or "model0", "model1", ... with virtual pipeline stages): megatron-core
  `GPTModel.sharded_state_dict()`. Tensors are ShardedTensors keyed by their *global* names,
  e.g. `embedding.word_embeddings.weight`, `decoder.layers.self_attention.linear_qkv.weight`
  (all layers stacked along a leading layer axis), `decoder.layers.self_attention.linear_qkv.
  layer_norm_weight`, `decoder.layers.mlp.linear_fc1.weight` (gate and up projections fused),
  `decoder.layers.mlp.linear_fc1.layer_norm_weight`, `decoder.layers.mlp.linear_fc2.weight`,
  `decoder.final_layernorm.weight`, `output_layer.weight`. Because keys and shapes are global,
  the same files load at any TP/PP/VP/DP. The local and TE layer specs use the same keys.
  The embedding and output rows are padded to `padded_vocab_size(vocab, 128, TP)`.
- "optimizer": the megatron optimizer's sharded state (`fully_reshardable` by default: loadable
  at any layout; `dp_reshardable`: DP changes only). Absent from weights-only checkpoints.
- "scheduler": the lr scheduler's state dict; "train_state": iteration, consumed samples and
  tokens, recipe extras (`TrainState.as_dict()`); "rng_state": a ShardedObject per
  (pipeline, tensor, data) rank, restored only when the layout is unchanged.
- "iteration", "format" (= CHECKPOINT_FORMAT), "layout" (TP/PP/VP/DP of the saving run),
  "model_config" (the ModelConfig fields and vocab size, so tools can rebuild the model).

Writing this format from elsewhere (the HF converter): build the model with
`models.build_model` at any layout (TP=1 in one process is simplest), copy the weights into its
parameters, and call `save_checkpoint(dir, 0, chunks, model_config=...)` - a weights-only
checkpoint that every recipe loads at its own layout via `checkpoint.init_from=dir`.

API:
    save_checkpoint(root, iteration, model, optimizer=None, scheduler=None, train_state=None,
                    model_config=None, optimizer_format="fully_reshardable", keep_last=0) -> Path
    load_checkpoint(path, model, optimizer=None, scheduler=None) -> LoadedCheckpoint
    load_model_weights(path, model) -> LoadedCheckpoint     # weights only, e.g. a converted HF
    latest_iteration(root) -> int | None ; resolve_checkpoint(path) -> Path ; read_checkpoint_info(path)
                                                            # from checkpoint_files.py (no torch)
`path` is a run directory (its `latest` is used) or one `iter_*` directory. `model` is the list
of chunks (DDP-wrapped or not).

Cost: each rank writes and reads only its shard of the weights (the distributed optimizer's
fully_reshardable format gathers optimizer state per data-parallel group on save).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy, load_sharded_metadata
from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper
from megatron.core.dist_checkpointing.validation import StrictHandling

from megatron_recipes.models.config import ModelConfig
from megatron_recipes.runtime.seeds import capture_rng_state, restore_rng_state
from megatron_recipes.training.checkpoint_files import (
    CHECKPOINT_FORMAT,
    INCOMPLETE_SUFFIX,
    INFO_FILE,
    LATEST_FILE,
    CheckpointError,
    iteration_directory,
    latest_iteration,
    read_checkpoint_info,
    resolve_checkpoint,
)

log = logging.getLogger(__name__)


@dataclass
class LoadedCheckpoint:
    path: Path
    iteration: int
    train_state: dict[str, Any] = field(default_factory=dict)
    layout: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    optimizer_loaded: bool = False
    rng_restored: bool = False


def model_config_from_checkpoint(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig a checkpoint's `model_config` record describes (its vocab_size included),
    for building the model it holds."""
    record = read_checkpoint_info(path).get("model_config") or {}
    if not record:
        raise CheckpointError(f"{path} has no model_config record")
    names = {schema_field.name for schema_field in fields(ModelConfig)}
    return ModelConfig(**{key: value for key, value in record.items() if key in names})


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _unwrap(chunk):
    """The GPTModel inside megatron's DDP and Float16Module wrappers."""
    while hasattr(chunk, "module") and not hasattr(chunk, "decoder"):
        chunk = chunk.module
    return chunk


def _model_keys(count: int) -> list[str]:
    return ["model"] if count == 1 else [f"model{index}" for index in range(count)]


def _layout() -> dict[str, Any]:
    return {
        "tensor_parallel": parallel_state.get_tensor_model_parallel_world_size(),
        "pipeline_parallel": parallel_state.get_pipeline_model_parallel_world_size(),
        "virtual_pipeline": parallel_state.get_virtual_pipeline_model_parallel_world_size(),
        "data_parallel": parallel_state.get_data_parallel_world_size(),
    }


def _sharding_metadata(optimizer_format: str) -> dict[str, Any]:
    # Stored with the checkpoint (content metadata) so that loading builds the same structure.
    return {
        "distrib_optim_sharding_type": optimizer_format,
        "singleton_local_shards": False,
        "chained_optim_avoid_prefix": True,
    }


def _model_sharded_state(model: list, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _unwrap(chunk).sharded_state_dict(metadata=metadata) for key, chunk in zip(_model_keys(len(model)), model)
    }


def _rng_sharded_object(state: Any):
    return ShardedObject(
        "rng_state",
        state,
        (
            parallel_state.get_pipeline_model_parallel_world_size(),
            parallel_state.get_tensor_model_parallel_world_size(),
            parallel_state.get_data_parallel_world_size(),
        ),
        (
            parallel_state.get_pipeline_model_parallel_rank(),
            parallel_state.get_tensor_model_parallel_rank(),
            parallel_state.get_data_parallel_rank(),
        ),
        replica_id=0,
    )


def _strategies():
    # Every data-parallel replica writes a disjoint part of the (replicated) model shards.
    return FullyParallelSaveStrategyWrapper(
        get_default_save_sharded_strategy(), parallel_state.get_data_parallel_group(with_context_parallel=True)
    )


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _is_rank_zero() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def save_checkpoint(
    root: str | os.PathLike,
    iteration: int,
    model: list,
    optimizer=None,
    scheduler=None,
    train_state: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    optimizer_format: str = "fully_reshardable",
    keep_last: int = 0,
) -> Path:
    """Write `<root>/iter_<iteration>/` on every rank, then point `latest` at it (collective)."""
    root = Path(root)
    final = iteration_directory(root, iteration)
    staging = final.with_name(final.name + INCOMPLETE_SUFFIX)
    started = time.perf_counter()
    if _is_rank_zero():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    _barrier()

    metadata = _sharding_metadata(optimizer_format)
    model_state = _model_sharded_state(model, metadata)
    state: dict[str, Any] = dict(model_state)
    if optimizer is not None:
        merged_model_state: dict[str, Any] = {}
        for chunk_state in model_state.values():
            merged_model_state.update(chunk_state)
        state["optimizer"] = optimizer.sharded_state_dict(merged_model_state, is_loading=False, metadata=metadata)
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    state["rng_state"] = _rng_sharded_object(capture_rng_state())
    state["train_state"] = dict(train_state or {"iteration": iteration})
    state["iteration"] = iteration
    state["format"] = CHECKPOINT_FORMAT
    state["layout"] = _layout()
    state["model_config"] = dict(model_config or {})
    dist_checkpointing.save(state, str(staging), sharded_strategy=_strategies(), content_metadata=metadata)
    _barrier()

    if _is_rank_zero():
        info = {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "train_state": state["train_state"],
            "layout": state["layout"],
            "model_config": state["model_config"],
            "has_optimizer": optimizer is not None,
            "optimizer_format": optimizer_format if optimizer is not None else None,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _atomic_write(staging / INFO_FILE, json.dumps(info, indent=2, default=str) + "\n")
        if final.exists():  # re-saving an iteration (e.g. a stop right after a resume)
            shutil.rmtree(final)
        os.replace(staging, final)
        _atomic_write(root / LATEST_FILE, f"{iteration}\n")
        if keep_last > 0:
            _remove_old_checkpoints(root, keep_last)
        log.info("saved checkpoint %s in %.1f s", final, time.perf_counter() - started)
    _barrier()
    return final


def _remove_old_checkpoints(root: Path, keep_last: int) -> None:
    complete = sorted(p for p in root.glob("iter_*") if p.is_dir() and not p.name.endswith(INCOMPLETE_SUFFIX))
    latest = latest_iteration(root)
    for directory in complete[:-keep_last]:
        if latest is not None and directory == iteration_directory(root, latest):
            continue
        shutil.rmtree(directory, ignore_errors=True)


def _checked_common_state(directory: Path) -> dict[str, Any]:
    try:
        common = dist_checkpointing.load_common_state_dict(str(directory))
    except Exception as error:
        raise CheckpointError(f"cannot read {directory}: {error}") from error
    if common.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{directory} is not a {CHECKPOINT_FORMAT} checkpoint (format={common.get('format')!r})")
    return common


def _drop_absent_extra_states(request: dict[str, Any], directory: Path) -> list[str]:
    """TE modules carry `_extra_state` objects (FP8 metadata) that a local-spec checkpoint does
    not have; they are re-initialised, not loaded. Everything else must be present."""
    available = {item.key for item in load_sharded_metadata(str(directory)).values()}
    dropped: list[str] = []

    def visit(node: dict[str, Any]) -> None:
        for name in list(node):
            value = node[name]
            if isinstance(value, dict):
                visit(value)
            elif isinstance(value, ShardedObject) and value.key.endswith("_extra_state") and value.key not in available:
                dropped.append(value.key)
                del node[name]

    visit(request)
    return dropped


def _load_model_request(model: list, metadata: dict[str, Any], directory: Path) -> dict[str, Any]:
    request = _model_sharded_state(model, metadata)
    dropped = _drop_absent_extra_states(request, directory)
    if dropped:
        log.info("%d module extra states not in %s are re-initialised (e.g. TE FP8 metadata)", len(dropped), directory)
    return request


def _apply_model_state(model: list, loaded: dict[str, Any]) -> None:
    for key, chunk in zip(_model_keys(len(model)), model):
        _unwrap(chunk).load_state_dict(loaded[key], strict=False)


def _dist_load(request: dict[str, Any], directory: Path) -> dict[str, Any]:
    try:
        # megatron's naming: "unexpected" = requested but not in the checkpoint; "missing" = in
        # the checkpoint but not requested (fine: e.g. optimizer state when loading weights).
        loaded, _not_requested, absent = dist_checkpointing.load(
            request, str(directory), strict=StrictHandling.RETURN_ALL
        )
    except Exception as error:
        raise CheckpointError(f"cannot load {directory}: {error}") from error
    if absent:
        shown = ", ".join(sorted(absent)[:5])
        raise CheckpointError(f"{directory} lacks {len(absent)} tensor(s) this model needs: {shown}")
    return loaded


def load_model_weights(path: str | os.PathLike, model: list) -> LoadedCheckpoint:
    """Load only the model weights (any layout): init from a converted checkpoint, a frozen
    reference model, evaluation. Call `optimizer.reload_model_params()` afterwards if an
    optimizer already holds copies of the parameters."""
    directory = resolve_checkpoint(path)
    common = _checked_common_state(directory)
    metadata = _sharding_metadata("fully_reshardable")
    loaded = _dist_load(_load_model_request(model, metadata, directory), directory)
    _apply_model_state(model, loaded)
    log.info("loaded model weights from %s (saved at %s)", directory, common.get("layout"))
    return LoadedCheckpoint(
        directory,
        int(common.get("iteration", 0)),
        dict(common.get("train_state", {})),
        dict(common.get("layout", {})),
        dict(common.get("model_config", {})),
    )


def load_checkpoint(
    path: str | os.PathLike, model: list, optimizer=None, scheduler=None, restore_rng: bool = True
) -> LoadedCheckpoint:
    """Load a full training state saved by `save_checkpoint` into freshly built objects.

    Model and optimizer load at any layout (optimizer: fully_reshardable checkpoints); RNG
    states only when TP/PP/VP/DP are unchanged (otherwise the generators keep their seeds).
    """
    directory = resolve_checkpoint(path)
    common = _checked_common_state(directory)
    saved_metadata = dist_checkpointing.load_content_metadata(str(directory)) or _sharding_metadata("fully_reshardable")
    request = _load_model_request(model, saved_metadata, directory)
    if optimizer is not None:
        if "optimizer" not in common:
            raise CheckpointError(
                f"{directory} holds no optimizer state (a weights-only checkpoint): use checkpoint.init_from"
            )
        merged_model_state: dict[str, Any] = {}
        for chunk_state in request.values():
            merged_model_state.update(chunk_state)
        request["optimizer"] = optimizer.sharded_state_dict(
            merged_model_state, is_loading=True, metadata=saved_metadata
        )
    same_layout = dict(common.get("layout", {})) == _layout()
    if restore_rng and same_layout:
        request["rng_state"] = _rng_sharded_object(capture_rng_state())
    loaded = _dist_load(request, directory)
    _apply_model_state(model, loaded)
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    if scheduler is not None and "scheduler" in common:
        scheduler.load_state_dict(common["scheduler"])
    rng_restored = False
    if restore_rng and same_layout:
        restore_rng_state(loaded["rng_state"])
        rng_restored = True
    elif restore_rng:
        log.info("layout changed (%s -> %s): random generators keep their seeds", common.get("layout"), _layout())
    return LoadedCheckpoint(
        directory,
        int(common["iteration"]),
        dict(common.get("train_state", {})),
        dict(common.get("layout", {})),
        dict(common.get("model_config", {})),
        optimizer_loaded=optimizer is not None,
        rng_restored=rng_restored,
    )
