"""The training loop, shared by every recipe (pretraining, SFT, GRPO; reward models and the R1
stages supply their own step to the same `run_loop`).

A micro-batch is a dict of tensors for this data-parallel rank, at least
    tokens [b, s] int64, labels [b, s] int64, loss_mask [b, s] float, position_ids [b, s] int64
(plus `attention_mask` [b, 1, s, s] bool, True = masked, for packed SFT samples on the local
spec, or anything a custom forward/loss function reads: GRPO's advantages, old log-probs...).

Two pluggable functions (defaults: `gpt_forward`, `masked_token_loss`):
- `forward_fn(model_chunk, micro_batch) -> Tensor`: runs one model chunk. On the last pipeline
  stage GPTModel given `labels` returns the per-token cross-entropy [b, s] = -log p(label),
  computed exactly over the tensor-parallel vocabulary shards. (GRPO's forward passes no labels
  and takes the logits [b, s, V/TP]: its loss needs log-probs at a sampling temperature and the
  entropy, rl/trainer.py.)
- `loss_fn(micro_batch, output) -> (numerator, denominator, metrics)`: numerator a scalar
  tensor with gradient, denominator an int tensor (e.g. the number of loss tokens); metrics
  maps names to 2-element tensors [sum, count]. The optimized loss of a step is
  sum(numerators) / sum(denominators) over all micro-batches and data-parallel ranks (megatron's
  per-token loss normalisation), so masked SFT tokens and uneven samples weigh correctly, and
  every layout computes the same number. Reported metrics are sum(sum) / sum(count).

Functions:
    train_step(session, micro_batches, loss_fn=..., forward_fn=...) -> StepResult
    evaluate(session, micro_batches, loss_fn=..., forward_fn=...) -> dict[str, float]
    forward_only(session, micro_batches, output_fn, forward_fn=...) -> list   # e.g. log-probs
    run_loop(session, step, validation=None, after_step=None, save=None) -> TrainOutcome
    train(session, batches, loss_fn=..., forward_fn=..., validation_batches=None) -> TrainOutcome

`run_loop` is the lifecycle of a run: `step() -> StepRecord` (metrics, samples and tokens
consumed) until trainer.train_steps, logging each step, validating, saving every
`checkpoint.save_interval` steps and at the end, and stopping early - checkpoint,
exit_status.json, `outcome.exit_code` - on the signals of `trainer.exit_signals` or after
`trainer.exit_duration_minutes` (training/signals.py). A recipe supplies only its step: `train`
(pretraining, SFT) takes `session.num_microbatches` micro-batches from `batches` (an iterator
already positioned at session.state, see data.pretraining) per `train_step` and validates every
`trainer.eval_interval` steps; GRPO's step is a rollout and several updates (rl/trainer.py).

Notes on correctness: the schedule divides the loss tensor in place, so reported values are
clones taken before; metrics are reduced over data-parallel ranks and sent from the last
pipeline stage to all ranks, so every rank returns the same StepResult.

Cost per step: one forward and backward of the global batch, one optimizer step.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.optimizer_param_scheduler import get_canonical_lr_for_logging
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_recipes.training.checkpointing import save_checkpoint
from megatron_recipes.training.metrics import ProgressLogger, memory_gib, peak_tflops_per_device
from megatron_recipes.training.session import TrainingSession
from megatron_recipes.training.signals import GracefulStop

log = logging.getLogger(__name__)

Batch = dict  # str -> Tensor
LossFunction = Callable[[Batch, torch.Tensor], tuple]
ForwardFunction = Callable[[Any, Batch], torch.Tensor]

EXIT_STATUS_FILE = "exit_status.json"


def gpt_forward(model_chunk, batch: Batch) -> torch.Tensor:
    """GPTModel forward with labels: per-token loss [b, s] on the last stage, hidden states before."""
    return model_chunk(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"])


def masked_token_loss(batch: Batch, per_token_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Sum of the per-token losses where loss_mask is 1, and the number of those tokens."""
    mask = batch["loss_mask"].to(per_token_loss.device).float()
    return (per_token_loss.float() * mask).sum(), mask.sum().to(torch.int), {}


@dataclass
class StepResult:
    iteration: int
    loss: float
    tokens: int  # loss tokens (denominator) of the global batch
    grad_norm: float
    learning_rate: float
    update_successful: bool
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainOutcome:
    reason: str  # finished | signal | duration | error
    iteration: int
    exit_code: int
    signal: str | None = None
    checkpoint: str | None = None


def _to_device(batch: Batch, device) -> Batch:
    return {
        key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()
    }


def _reported_loss(loss_fn: LossFunction, batch: Batch, output: torch.Tensor):
    numerator, denominator, metrics = loss_fn(batch, output)
    if not torch.is_tensor(denominator):
        denominator = torch.tensor(denominator, device=numerator.device)
    denominator = denominator.to(torch.int)
    # Clones: the schedule rescales the returned loss tensor in place.
    reported = {"loss": torch.stack([numerator.detach().clone().float(), denominator.detach().clone().float()])}
    for name, value in metrics.items():
        reported[name] = value.detach().clone().float().reshape(2)
    return numerator, denominator, reported


def _forward_step_function(loss_fn: LossFunction, forward_fn: ForwardFunction, device):
    def forward_step(data_iterator, model_chunk):
        batch = _to_device(next(data_iterator), device)
        output = forward_fn(model_chunk, batch)
        return output, functools.partial(_reported_loss, loss_fn, batch)

    return forward_step


def _iterators(chunk_count: int, micro_batches: list[Batch]):
    # Every virtual stage walks the same micro-batches (the first needs tokens, the last labels).
    if chunk_count == 1:
        return iter(micro_batches)
    return [iter(micro_batches) for _ in range(chunk_count)]


def _run_schedule(
    session: TrainingSession,
    micro_batches: list[Batch],
    loss_fn: LossFunction,
    forward_fn: ForwardFunction,
    forward_only: bool,
) -> list[dict]:
    first = micro_batches[0]["tokens"]
    return get_forward_backward_func()(
        forward_step_func=_forward_step_function(loss_fn, forward_fn, session.runtime.torch_device()),
        data_iterator=_iterators(len(session.model), micro_batches),
        model=session.model if len(session.model) > 1 else session.model[0],
        num_microbatches=len(micro_batches),
        seq_length=first.shape[1],
        micro_batch_size=first.shape[0],
        decoder_seq_length=first.shape[1],
        forward_only=forward_only,
    )


def _reduce_metrics(session: TrainingSession, per_microbatch: list[dict]) -> dict[str, tuple[float, float]]:
    """{name: (sum, count)} over the global batch, identical on every rank."""
    totals: dict[str, torch.Tensor] = {}
    for reported in per_microbatch:
        for name, value in reported.items():
            totals[name] = totals[name] + value if name in totals else value.clone()
    names = sorted(totals)
    reduced: dict[str, tuple[float, float]] = {}
    if parallel_state.is_pipeline_last_stage(ignore_virtual=True) and names:
        stacked = torch.stack([totals[name] for name in names])
        dist.all_reduce(stacked, group=parallel_state.get_data_parallel_group())
        reduced = {name: (float(row[0]), float(row[1])) for name, row in zip(names, stacked.cpu())}
    if session.runtime.pipeline_parallel_size > 1:
        holder = [reduced]
        dist.broadcast_object_list(
            holder,
            src=parallel_state.get_pipeline_model_parallel_last_rank(),
            group=parallel_state.get_pipeline_model_parallel_group(),
        )
        reduced = holder[0]
    return reduced


def _ratio(pair: tuple[float, float]) -> float:
    total, count = pair
    return total / count if count else math.nan


def train_step(
    session: TrainingSession,
    micro_batches: list[Batch],
    loss_fn: LossFunction = masked_token_loss,
    forward_fn: ForwardFunction = gpt_forward,
) -> StepResult:
    """One optimizer step over `micro_batches` (this DP rank's share of the global batch).
    Does not advance session.state (the loop does: recipes decide what a step consumed)."""
    started = time.perf_counter()
    for chunk in session.model:
        chunk.train()
        chunk.zero_grad_buffer()
    session.optimizer.zero_grad()

    learning_rate = get_canonical_lr_for_logging(session.optimizer.param_groups)  # the rate this update uses
    per_microbatch = _run_schedule(session, micro_batches, loss_fn, forward_fn, forward_only=False)
    update_successful, grad_norm, _ = session.optimizer.step()
    if update_successful:
        session.scheduler.step(increment=1)
    reduced = _reduce_metrics(session, per_microbatch)
    loss_pair = reduced.pop("loss", (math.nan, 0.0))
    return StepResult(
        iteration=session.state.iteration + 1,
        loss=_ratio(loss_pair),
        tokens=int(loss_pair[1]),
        grad_norm=float(grad_norm) if grad_norm is not None else math.nan,
        learning_rate=float(learning_rate) if learning_rate is not None else math.nan,
        update_successful=bool(update_successful),
        seconds=time.perf_counter() - started,
        metrics={name: _ratio(pair) for name, pair in reduced.items()},
    )


def evaluate(
    session: TrainingSession,
    micro_batches: list[Batch],
    loss_fn: LossFunction = masked_token_loss,
    forward_fn: ForwardFunction = gpt_forward,
) -> dict[str, float]:
    """Forward-only loss (and metrics) over micro-batches; identical on every rank."""
    for chunk in session.model:
        chunk.eval()
    try:
        with torch.no_grad():
            per_microbatch = _run_schedule(session, micro_batches, loss_fn, forward_fn, forward_only=True)
    finally:
        for chunk in session.model:
            chunk.train()
    reduced = _reduce_metrics(session, per_microbatch)
    return {name: _ratio(pair) for name, pair in reduced.items()}


def forward_only(
    model: "TrainingSession | list",
    micro_batches: list[Batch],
    output_fn: Callable[[Batch, torch.Tensor], Any],
    forward_fn: ForwardFunction = gpt_forward,
) -> list[Any]:
    """`output_fn(micro_batch, output)` for each micro-batch, on the last pipeline stage (an empty
    list on other stages), without gradients. `model` is a session or a list of model chunks of
    the current layout (e.g. a frozen reference model from build_model + load_model_weights).
    Log-probs from the loss: output_fn = lambda batch, per_token_loss: -per_token_loss (GRPO
    passes a logits forward and computes them at its temperature: rl/trainer.sequence_log_probs)."""
    chunks = model.model if isinstance(model, TrainingSession) else list(model)
    device = next(chunks[0].parameters()).device

    def forward_step(data_iterator, model_chunk):
        batch = _to_device(next(data_iterator), device)
        output = forward_fn(model_chunk, batch)

        def collect(output_tensor, non_loss_data=False):
            return output_fn(batch, output_tensor)

        return output, collect

    modes = [chunk.training for chunk in chunks]
    for chunk in chunks:
        chunk.eval()
    try:
        with torch.no_grad():
            first = micro_batches[0]["tokens"]
            return get_forward_backward_func()(
                forward_step_func=forward_step,
                data_iterator=_iterators(len(chunks), micro_batches),
                model=chunks if len(chunks) > 1 else chunks[0],
                num_microbatches=len(micro_batches),
                seq_length=first.shape[1],
                micro_batch_size=first.shape[0],
                decoder_seq_length=first.shape[1],
                forward_only=True,
                collect_non_loss_data=True,
            )
    finally:
        for chunk, mode in zip(chunks, modes):
            chunk.train(mode)


def save_training_checkpoint(session: TrainingSession) -> Path | None:
    """Save the session's full state under checkpoint.dir at its current iteration."""
    if not session.checkpoint.dir:
        return None
    return save_checkpoint(
        session.checkpoint.dir,
        session.state.iteration,
        session.model,
        session.optimizer,
        session.scheduler,
        train_state=session.state.as_dict(),
        model_config=session.model_config_record(),
        optimizer_format=session.checkpoint.optimizer_format,
        keep_last=session.checkpoint.keep_last,
    )


def write_exit_status(session: TrainingSession, outcome: TrainOutcome, detail: str | None = None) -> None:
    """`exit_status.json` in checkpoint.dir (or trainer.output_dir): why the run stopped
    (reason finished | signal | duration | error, iteration, exit code, signal, checkpoint)."""
    if not session.runtime.is_logging_rank:
        return
    directory = Path(session.checkpoint.dir or session.trainer.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / (EXIT_STATUS_FILE + ".tmp")
    temporary.write_text(
        json.dumps(
            {
                "reason": outcome.reason,
                "iteration": outcome.iteration,
                "exit_code": outcome.exit_code,
                "signal": outcome.signal,
                "checkpoint": outcome.checkpoint,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **({"detail": detail[:2000]} if detail else {}),
            },
            indent=2,
        )
        + "\n"
    )
    temporary.replace(directory / EXIT_STATUS_FILE)


def _take(batches: Iterator[Batch], count: int) -> list[Batch]:
    taken = list(islice(batches, count))
    if len(taken) < count:
        raise RuntimeError(f"the data iterator ran out: {len(taken)} of {count} micro-batches")
    return taken


@dataclass
class StepRecord:
    """What one step of a recipe reports to `run_loop`."""

    values: dict[str, float]  # its row of metrics.jsonl (and the console line), in this order
    samples: int  # samples it consumed (train_state.consumed_samples: the data position)
    tokens: int  # tokens it consumed (train_state.consumed_tokens)


def run_loop(
    session: TrainingSession,
    step: Callable[[], StepRecord],
    *,
    total_steps: int | None = None,
    validation: Callable[[int], "Mapping[str, float] | None"] | None = None,
    after_step: Callable[[int], None] | None = None,
    save: Callable[[], Path | None] | None = None,
    logger=None,
) -> TrainOutcome:
    """The lifecycle every recipe shares: call `step()` until `total_steps` (default
    trainer.train_steps) steps are done, counting them in session.state, and stop early,
    checkpointed, on the signals of trainer.exit_signals or after trainer.exit_duration_minutes.

    Per step: `step()`; state.iteration, consumed_samples and consumed_tokens advance; the
    record's values are logged; `after_step(iteration)`; `validation(iteration)` (also called
    once before the first step of a fresh run, at iteration 0), whose dict, if any, is logged as
    validation metrics; a checkpoint by `save()` (default: save_training_checkpoint) every
    checkpoint.save_interval steps, on a stop, and at the end (checkpoint.save_at_end).
    Returns the TrainOutcome and writes it to exit_status.json; an exception writes reason
    `error` there (a launcher must not requeue a run that fails by itself) and propagates.
    `logger` (a ProgressLogger; default: one for trainer.output_dir) is closed on return.
    """
    trainer, state, runtime = session.trainer, session.state, session.runtime
    total_steps = trainer.train_steps if total_steps is None else total_steps
    if logger is None:
        logger = ProgressLogger(
            trainer.output_dir, total_steps, trainer.log_interval, runtime.is_logging_rank, trainer.tensorboard
        )
    save = save or functools.partial(save_training_checkpoint, session)
    stop = GracefulStop(trainer.exit_signals, trainer.exit_duration_minutes, enabled=trainer.exit_signal_handler)
    device = runtime.torch_device()
    last_saved: Path | None = None
    outcome: TrainOutcome | None = None
    first_iteration = state.iteration
    try:
        if validation is not None and state.iteration == 0:
            _record_validation(logger, 0, validation(0))
        while state.iteration < total_steps:
            record = step()
            state.iteration += 1
            state.consumed_samples += record.samples
            state.consumed_tokens += record.tokens
            logger.record_step(state.iteration, record.values)
            if after_step is not None:
                after_step(state.iteration)
            if validation is not None:
                _record_validation(logger, state.iteration, validation(state.iteration))
            reason, signal_name = stop.agreed_reason(device)
            periodic = session.checkpoint.save_interval and state.iteration % session.checkpoint.save_interval == 0
            if periodic or reason is not None:
                last_saved = save()
            if reason is not None:
                outcome = TrainOutcome(
                    reason,
                    state.iteration,
                    trainer.signal_exit_code,
                    signal_name,
                    str(last_saved) if last_saved else None,
                )
                if runtime.is_logging_rank:
                    log.info(
                        "stopping at step %d (%s%s); checkpoint %s; exit code %d",
                        state.iteration,
                        reason,
                        f" {signal_name}" if signal_name else "",
                        last_saved,
                        trainer.signal_exit_code,
                    )
                break
        if outcome is None:
            trained = state.iteration > first_iteration
            already_saved = last_saved is not None and last_saved.name == f"iter_{state.iteration:07d}"
            if session.checkpoint.save_at_end and trained and not already_saved:
                last_saved = save()
            outcome = TrainOutcome(
                "finished", state.iteration, 0, None, str(last_saved) if last_saved else session.restored_from
            )
        write_exit_status(session, outcome)
        return outcome
    except Exception as error:
        write_exit_status(
            session, TrainOutcome("error", state.iteration, 1, None, None), detail=f"{type(error).__name__}: {error}"
        )
        raise
    finally:
        stop.restore()
        logger.close()


def _record_validation(logger, iteration: int, values: "Mapping[str, float] | None") -> None:
    if values is not None:
        logger.record_evaluation(iteration, values)


def train(
    session: TrainingSession,
    batches: Iterator[Batch],
    loss_fn: LossFunction = masked_token_loss,
    forward_fn: ForwardFunction = gpt_forward,
    validation_batches: Callable[[], Iterable[Batch]] | None = None,
    samples_per_step: int | None = None,
    tokens_per_sample: int | None = None,
    flops_per_token: float | None = None,
) -> TrainOutcome:
    """`run_loop` with the step of pretraining and SFT: `session.num_microbatches` micro-batches
    from `batches` through `train_step`; validation every trainer.eval_interval steps."""
    trainer, runtime = session.trainer, session.runtime
    samples_per_step = samples_per_step or trainer.global_batch_size
    peak = peak_tflops_per_device(trainer.peak_tflops_per_device, runtime.device, session.precision)
    logger = ProgressLogger(
        trainer.output_dir,
        trainer.train_steps,
        trainer.log_interval,
        runtime.is_logging_rank,
        trainer.tensorboard,
        flops_per_token=flops_per_token,
        peak_flops_total=peak * 1e12 * runtime.world_size if peak else None,
    )

    def step() -> StepRecord:
        micro_batches = _take(batches, session.num_microbatches)
        step_tokens = samples_per_step * (tokens_per_sample or micro_batches[0]["tokens"].shape[1])
        result = train_step(session, micro_batches, loss_fn, forward_fn)
        values = {
            "loss": result.loss,
            "lr": result.learning_rate,
            "grad_norm": result.grad_norm,
            "tokens": result.tokens,
            "step_seconds": result.seconds,
            "memory_gib": memory_gib(runtime.device),
            "skipped": float(not result.update_successful),
            **logger.throughput(step_tokens, result.seconds),
            **result.metrics,
        }
        return StepRecord(values, samples_per_step, step_tokens)

    def validation(iteration: int) -> dict[str, float] | None:
        if iteration == 0 or iteration % trainer.eval_interval:
            return None
        return evaluate(session, list(validation_batches()), loss_fn, forward_fn)

    periodic_validation = validation_batches is not None and trainer.eval_interval
    return run_loop(session, step, validation=validation if periodic_validation else None, logger=logger)
