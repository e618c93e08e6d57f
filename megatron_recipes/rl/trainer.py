"""The GRPO loop on the training core: rollout -> rewards -> advantages -> pi_old / pi_ref
log-probs -> clipped-surrogate updates, with iterative reference resets, held-out checks,
metrics, checkpoints and graceful stops.

    trainer = GrpoTrainer(config, session, tokenizer, reference_model, prompts, held_out_records)
    outcome = trainer.run()                      # training/loop.run_loop over GRPO steps
    metrics = trainer.step()                     # one GRPO step (the step run_loop calls)
    losses = grpo_updates(session, batch, ...)   # the update part alone (the TP test drives it)

One step on every data-parallel rank r of D: questions [i x Q + r x Q/D, ...) of the prompt
stream (i = the step), G samples each from the current policy (generation/megatron.py), rewards
checked on the first rank of each tensor-parallel group and broadcast inside it (a checker or a
sandbox timeout must not make two tensor-parallel ranks disagree), advantages per group (groups
never span ranks). pi_old: the first optimizer update trains the weights that sampled the
rollout, so its pi_old is its own forward pass, detached (ratio 1, the same loss and gradients
as a separate pass); the rows of later updates get pi_old from a forward pass of the policy
before the first update (or, with rl.old_logp_from_sampler, every row from the sampler's
log-probs of the same weights; PPO: every row by the forward pass, its KL rewards read them all);
pi_ref by the frozen reference model. With rl.shared_prefix_forward (fp32, the local layer spec)
these passes and the updates' forward passes run through the cached decoder (generation/
cached_decoder.py), the G samples of a question sharing one pass over its prompt. Then
`rl.updates_per_rollout` passes over the
rollout in a seeded order, each split into mini-batches of trainer.global_batch_size outputs (one
optimizer step each); outputs of zero-variance and ungradable groups are left out; ranks agree on
the number of micro-batches (padding with fully-masked ones) and skip an update that has no
output at all.

Learned rewards (rl.reward_model, a checkpoint of python -m megatron_recipes.reward_model): the
reward model sits beside the policy at its tensor-parallel layout and scores every rollout on all
ranks of the group before the rule-based rewards are checked; an outcome reward model's score
joins the rewards (outcome supervision normalises the total within the group), a process reward
model's step scores are the steps of the `process` advantage estimator (rollout.compute_rewards).

PPO (rl.advantage_estimator=gae, the paper's baseline): a critic (rl/critic.py) gives a value per
response token; per-token rewards carry the KL penalty (so the loss has none), GAE turns them
into advantages, and the critic takes a clipped value-loss step for every policy mini-batch.

Iterative GRPO: every `rl.reference_reset_interval` steps the reference model takes the policy's
weights; the next checkpoint also writes the reference (weights only) under
`<checkpoint.dir>/reference/` (keeping checkpoint.keep_last of them, all by default), and a
resumed run reloads it from there (train_state.extra).

Metrics per step (console line, metrics.jsonl, TensorBoard under train/): loss, reward_mean,
reward_std, accuracy, kl (the unclamped estimate; with rl.kl_clamp also kl_clamped, the share of
trained tokens the clamp cut), clip_fraction, entropy, ratio, response_length, zero_variance_groups
(fraction of groups), ungradable_groups, updates, rollout_tokens_per_second (sampled tokens /
rollout wall time), training_tokens_per_second (sequence tokens through the updates and
log-prob passes / their wall time), tokens_per_second (all tokens / step time), lr, grad_norm;
with several rewards, `reward_<name>` (each reward's mean over gradable outputs; R1-Zero watches
reward_think_format); reflection_rate (the share of outputs that revise themselves,
rl.reflection_phrases, reasoning_metrics.py);
reward_model_score (mean score, with rl.reward_model); value_loss, value_clip_fraction and
value_error (PPO).
Held-out accuracy (rl.eval_interval): `validation_accuracy` in metrics.jsonl at step 0, every
interval and at the end; with several rewards also `validation_reward_<name>` (each one's mean).

Cost per step: generation of Q x G x (prompt + response) tokens, a forward pass for pi_ref over
the rollout and one for pi_old over the rows after the first update, and updates_per_rollout
forward+backward passes over the rollout; with the shared prefix each pass costs
Q x prompt + Q x G x response tokens instead of Q x G x (prompt + response).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.optimizer_param_scheduler import get_canonical_lr_for_logging

from megatron_recipes.generation.cached_decoder import CachedDecoder, cached_decoder_unsupported
from megatron_recipes.generation.interface import SamplingParams
from megatron_recipes.generation.logprobs import vocab_parallel_entropy, vocab_parallel_log_probs
from megatron_recipes.generation.megatron import MegatronGenerator
from megatron_recipes.rl.config import STEP_ESTIMATORS
from megatron_recipes.rl.objectives import AdvantageInputs, GrpoLossSettings, get_advantage_estimator, grpo_loss
from megatron_recipes.rl.reasoning_metrics import revises_itself
from megatron_recipes.rl.rollout import (
    MODEL_REWARD,
    ModelScores,
    RolloutBatch,
    compute_rewards,
    generate_rollouts,
    rollout_batch,
)
from megatron_recipes.runtime.cpu import device_rewrites_suspended
from megatron_recipes.sandbox import format_output
from megatron_recipes.training.checkpointing import _unwrap, save_checkpoint
from megatron_recipes.training.loop import (
    StepRecord,
    TrainOutcome,
    forward_only,
    run_loop,
    save_training_checkpoint,
    train_step,
)
from megatron_recipes.training.metrics import memory_gib

log = logging.getLogger("grpo")


def policy_forward(model_chunk, batch: dict) -> torch.Tensor:
    """GPTModel forward without labels: logits [b, s, V/TP] on the last stage."""
    return model_chunk(batch["tokens"], batch["position_ids"], None)


def selected_positions(logits: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """The logits [m, V] at the m `selected` positions ([b, s] bool), in row-major order: from
    logits [b, s, V] of every position (megatron's forward), or `logits` itself when it already
    holds just those (2-D: shared_prefix_forward's output, CachedDecoder.selected_logits)."""
    return logits if logits.dim() == 2 else logits[selected]


def response_log_probs(
    logits: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor, temperature: float, vocab_size: int
) -> torch.Tensor:
    """log pi(labels) [b, s] at the `selected` positions ([b, s] bool: the loss mask's), 0 elsewhere.
    Every use of GRPO's log-probs is masked, and the prompt is most of a sequence: the softmax
    over the vocabulary runs only where it is read (same values there, row by row). `logits`:
    [b, s, V/TP], or [m, V] at the selected positions only (see selected_positions)."""
    values = vocab_parallel_log_probs(selected_positions(logits, selected), labels[selected], temperature, vocab_size)
    return torch.zeros(selected.shape, dtype=values.dtype, device=values.device).index_put((selected,), values)


def log_prob_output(temperature: float, vocab_size: int) -> Callable:
    def output(batch: dict, logits: torch.Tensor) -> torch.Tensor:
        selected = batch["loss_mask"] > 0
        return response_log_probs(logits, batch["labels"], selected, temperature, vocab_size).detach()

    return output


def grpo_loss_function(settings: GrpoLossSettings, temperature: float, vocab_size: int) -> Callable:
    """loss_fn(batch, logits) -> (numerator, denominator, metrics) for training/loop.train_step."""

    def loss(batch: dict, logits: torch.Tensor):
        selected = batch["loss_mask"] > 0
        logp = response_log_probs(logits, batch["labels"], selected, temperature, vocab_size)
        mask = batch["loss_mask"].to(logp.dtype)
        # No old_logp: the micro-batch is trained by the weights that sampled it (the rollout's
        # first update), so pi_old is this forward's own log-probs, detached.
        old_logp = batch["old_logp"] if "old_logp" in batch else logp.detach()
        result = grpo_loss(logp, old_logp, batch.get("ref_logp"), batch["advantages"], mask, settings)
        metrics = {name: torch.stack([total.float(), count.float()]) for name, (total, count) in result.sums.items()}
        # The entropy metric averages over trained tokens: computed at those positions only.
        entropy = vocab_parallel_entropy(selected_positions(logits.detach(), selected), temperature, vocab_size)
        metrics["entropy"] = torch.stack([(entropy * mask[selected]).sum(), mask.sum()])
        return result.numerator, result.denominator, metrics

    return loss


def sequence_log_probs(
    model,
    batch: RolloutBatch,
    micro_batch_size: int,
    temperature: float,
    vocab_size: int,
    rows: torch.Tensor | None = None,
    decoder: CachedDecoder | None = None,
) -> torch.Tensor:
    """log pi(label) [N, S] of `rows` (all by default; 0 in the others) by forward passes of `model`
    (a session or chunks), at the batch's loss-mask positions (0 elsewhere: see
    response_log_probs). With `decoder` (a CachedDecoder over the same model, see
    shared_prefix_decoder) the rows sharing a prompt share its prefill: the same values from
    about a quarter of the work for GRPO's G samples of each question."""
    indices = torch.arange(len(batch)) if rows is None else rows
    parts = [indices[start : start + micro_batch_size] for start in range(0, len(indices), micro_batch_size)]
    if decoder is not None:
        device = decoder.embedding.weight.device
        values = torch.zeros(batch.mask.shape)
        # Our own torch calls, none naming a CUDA device: without the CPU layer's per-call dispatch.
        with device_rewrites_suspended():
            for part in parts:
                values[part] = decoder.sequence_log_probs(
                    batch.tokens[part].to(device),
                    batch.labels[part].to(device),
                    batch.mask[part].to(device) > 0,
                    temperature,
                    vocab_size,
                ).cpu()
        return values
    if not parts:
        return torch.zeros(batch.mask.shape)
    outputs = forward_only(
        model, [batch.rows(part) for part in parts], log_prob_output(temperature, vocab_size), forward_fn=policy_forward
    )
    if not outputs:  # not the last pipeline stage
        return torch.empty(0)
    if rows is None:
        return torch.cat([output.cpu() for output in outputs])
    values = torch.zeros(batch.mask.shape)
    values[indices] = torch.cat([output.cpu() for output in outputs])
    return values


def shared_prefix_decoder(chunks, training: bool = False) -> CachedDecoder | None:
    """A CachedDecoder over `chunks` (a model's list of chunks) for sequence_log_probs (and, with
    `training`, for shared_prefix_forward), or None where it would not compute what megatron's
    forward computes: several chunks (pipeline stages), an architecture it does not cover,
    weights that are not fp32 (low-precision inference and training numerics differ; see
    rl.old_logp_from_sampler); for training also tensor parallelism (its all-reduces are not
    differentiable) and dropout."""
    if chunks is None or len(chunks) != 1:
        return None
    model = _unwrap(chunks[0])
    if cached_decoder_unsupported(model) is not None or model.embedding.word_embeddings.weight.dtype != torch.float32:
        return None
    config = model.config
    if training and (config.tensor_model_parallel_size > 1 or config.hidden_dropout or config.attention_dropout):
        return None
    return CachedDecoder(model)


def shared_prefix_forward(decoder: CachedDecoder) -> Callable:
    """A forward_fn for train_step: the logits [m, V] at the m loss-mask positions (row-major, all
    that GRPO's loss reads: see selected_positions) through `decoder`'s shared-prefix pass
    (CachedDecoder.selected_logits), megatron's forward for a micro-batch without any (a
    data-parallel filler). Handing the loss the selected rows directly, rather than scattering
    them into a [b, s, V] tensor of zeros that the loss gathers again, gives the same values and
    gradients without three copies of that tensor (forward) and two more (backward)."""

    def forward(model_chunk, batch: dict) -> torch.Tensor:
        selected = batch["loss_mask"] > 0
        if not selected.any():
            return policy_forward(model_chunk, batch)
        with device_rewrites_suspended():  # see sequence_log_probs
            return decoder.selected_logits(batch["tokens"], selected)[0]

    return forward


def _data_parallel_max(value: int) -> int:
    if not dist.is_initialized() or parallel_state.get_data_parallel_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=parallel_state.get_data_parallel_group())
    return int(tensor.item())


def _collective_device():
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def trainable_rows(batch: RolloutBatch, skip_zero_variance: bool) -> torch.Tensor:
    keep = (batch.mask.sum(dim=1) > 0) & ~batch.ungradable
    if skip_zero_variance:
        keep &= ~batch.zero_variance
    return keep


def grpo_updates(
    session,
    batch: RolloutBatch,
    settings: GrpoLossSettings,
    temperature: float,
    updates: int,
    outputs_per_update: int,
    skip_zero_variance: bool,
    seed: int,
    plan: list | None = None,
    first_update_on_policy: bool = False,
    forward_fn: Callable = policy_forward,
) -> list:
    """The optimisation part of a GRPO step on this rank's rollout batch (old/ref log-probs
    filled). `outputs_per_update` = trainer.global_batch_size / data-parallel size. Returns the
    StepResult of every optimizer update (skipped updates are absent). `plan`: update_rows'
    result for the same arguments (computed here when None). With `first_update_on_policy` the
    first update takes pi_old from its own forward pass (detached): its outputs were sampled by
    the weights it trains, so batch.old_logp is needed only for the rows of later updates
    (GrpoTrainer.step fills only those). `forward_fn`: policy_forward, or shared_prefix_forward."""
    loss_fn = grpo_loss_function(settings, temperature, session.vocab_size)
    if plan is None:
        keep = trainable_rows(batch, skip_zero_variance)
        plan = update_rows(batch, keep, updates, outputs_per_update, session.trainer.micro_batch_size, seed)
    results = []
    for index, update in enumerate(plan):
        micro_batches = [_micro_batch(batch, rows, filler) for rows, filler in update]
        if first_update_on_policy and index == 0:
            for micro_batch in micro_batches:
                micro_batch.pop("old_logp", None)
        results.append(train_step(session, micro_batches, loss_fn, forward_fn))
    return results


def _micro_batch(batch: RolloutBatch, rows: torch.Tensor, filler: bool) -> dict:
    micro_batch = batch.rows(rows)
    if filler:  # this rank has fewer outputs left than another: fully masked
        micro_batch["loss_mask"] = torch.zeros_like(micro_batch["loss_mask"])
    return micro_batch


def later_update_rows(plan: list) -> torch.Tensor:
    """The rows trained by an update after the first (sorted, without repeats; fillers excluded)."""
    rows = [indices for update in plan[1:] for indices, filler in update if not filler]
    return torch.cat(rows).unique() if rows else torch.empty(0, dtype=torch.long)


def minibatch_plan(
    batch: RolloutBatch, keep: torch.Tensor, updates: int, outputs_per_update: int, micro: int, seed: int
) -> Iterator[list[dict]]:
    """The micro-batches of every optimizer update (update_rows as micro-batch dicts); PPO's
    critic follows the same plan as the policy."""
    for update in update_rows(batch, keep, updates, outputs_per_update, micro, seed):
        yield [_micro_batch(batch, rows, filler) for rows, filler in update]


def update_rows(
    batch: RolloutBatch, keep: torch.Tensor, updates: int, outputs_per_update: int, micro: int, seed: int
) -> list[list[tuple[torch.Tensor, bool]]]:
    """(row indices, filler) of every micro-batch of every optimizer update: `updates` passes over
    the rollout in a seeded order, mini-batches of `outputs_per_update` rows of which the `keep`
    ones are trained; the data-parallel ranks agree on the number of micro-batches (fully masked
    fillers) and skip a mini-batch that has no row anywhere."""
    plan = []
    for epoch in range(updates):
        order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(seed * 1009 + epoch))
        for start in range(0, len(batch), outputs_per_update):
            rows = order[start : start + outputs_per_update]
            kept = rows[keep[rows]]
            groups = [kept[i : i + micro] for i in range(0, len(kept), micro)]
            agreed = _data_parallel_max(len(groups))
            if agreed == 0:
                continue
            plan.append([(indices, False) for indices in groups] + [(rows[:1], True)] * (agreed - len(groups)))
    return plan


@dataclass
class StepSums:
    """Rank-local sums of one step's rollout statistics (all-reduced over data parallelism)."""

    values: dict[str, float]

    def reduced(self) -> dict[str, float]:
        names = sorted(self.values)
        tensor = torch.tensor([self.values[name] for name in names], dtype=torch.float64, device=_collective_device())
        if dist.is_initialized() and parallel_state.get_data_parallel_world_size() > 1:
            dist.all_reduce(tensor, group=parallel_state.get_data_parallel_group())
        return dict(zip(names, tensor.cpu().tolist()))


def _broadcast_in_tensor_parallel_group(value: Any) -> Any:
    """Rank 0 of the tensor-parallel group decides; the others take its value."""
    if not dist.is_initialized() or parallel_state.get_tensor_model_parallel_world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(
        holder,
        src=parallel_state.get_tensor_model_parallel_src_rank(),
        group=parallel_state.get_tensor_model_parallel_group(),
    )
    return holder[0]


class GrpoTrainer:
    """See the module docstring. `config` is a GrpoConfig; `session` a TrainingSession of the policy;
    `reference` the frozen reference chunks (None when rl.kl_coefficient == 0)."""

    def __init__(
        self,
        config,
        session,
        tokenizer,
        reference,
        prompts,
        held_out=None,
        checker=None,
        sandbox=None,
        reward_scorer=None,
        critic=None,
    ):
        self.config = config
        self.rl = config.rl
        self.session = session
        self.tokenizer = tokenizer
        self.reference = reference
        self.prompts = prompts
        # Held-out PromptRecords (grpo.held_out_questions: none of them a training question).
        self.held_out = held_out
        self.checker = checker
        self.sandbox = sandbox
        self.reward_scorer = reward_scorer
        self.critic = critic
        self.generator = MegatronGenerator(
            session.model,
            tokenizer,
            session.vocab_size,
            config.model.max_position_embeddings,
            self.rl.generation_batch_size,
        )
        self.settings = GrpoLossSettings(
            # PPO puts the KL penalty into the per-token rewards instead of the loss.
            0.0 if critic is not None else self.rl.kl_coefficient,
            self.rl.kl_estimator,
            self.rl.epsilon_low,
            self.rl.epsilon_high,
            self.rl.loss_aggregation,
            self.rl.kl_clamp,
        )
        runtime = session.runtime
        self.questions_per_rank = self.rl.questions_per_step // runtime.data_parallel_size
        self.outputs_per_update = session.trainer.global_batch_size // runtime.data_parallel_size
        self.is_tensor_parallel_source = runtime.tensor_parallel_rank == 0
        # The shared-prefix path (rl.shared_prefix_forward): (policy, reference) decoders of the
        # log-prob passes, and the updates' forward function.
        self.log_prob_decoders = (None, None)
        self.update_forward = policy_forward
        if self.rl.shared_prefix_forward:
            self.log_prob_decoders = (shared_prefix_decoder(session.model), shared_prefix_decoder(reference))
            # PPO's critic trains with megatron's forward; the policy's updates here.
            training_decoder = shared_prefix_decoder(session.model, training=True)
            if training_decoder is not None:
                self.update_forward = shared_prefix_forward(training_decoder)

    # ------------------------------------------------------------------ rollout pieces
    def _tool_runner(self):
        if not self.rl.tool_use:
            return None

        def run(codes: list[str]) -> list[str]:
            outputs = None
            if self.is_tensor_parallel_source:
                results = self.sandbox.map(codes)
                # The body of the sandbox's ```output block (stdout, the error's last line, or the limit hit).
                outputs = [format_output(result)[len("```output\n") : -len("\n```\n")] for result in results]
            return _broadcast_in_tensor_parallel_group(outputs)

        return run

    def score_samples(
        self, samples, reward_names, reward_weights, step_reward: str | None = None, use_reward_model: bool = False
    ) -> None:
        """rollout.compute_rewards on the first rank of the tensor-parallel group, its results
        broadcast inside the group (rollouts and the held-out check both score this way). With
        `use_reward_model`, the reward model (rl.reward_model) scores the samples first, on
        every rank (a collective forward pass at the policy's layout)."""
        model_scores = None
        if use_reward_model and self.reward_scorer is not None:
            scores = self.reward_scorer.score([(s.prompt_ids, s.response_ids, s.text) for s in samples])
            model_scores = ModelScores(
                self.reward_scorer.per_step, scores, self.rl.reward_model_weight, self.reward_scorer.separator
            )
        decided = None
        if self.is_tensor_parallel_source:
            compute_rewards(
                samples, reward_names, reward_weights, self.checker, step_reward, self.rl.reward_options, model_scores
            )
            decided = [(s.rewards, s.reward, s.steps) for s in samples]
        decided = _broadcast_in_tensor_parallel_group(decided)
        for sample, (rewards, reward, steps) in zip(samples, decided):
            sample.rewards, sample.reward, sample.steps = rewards, reward, steps

    def collect(self, iteration: int):
        """This rank's rollout of GRPO step `iteration` (0-based): samples and the padded batch."""
        runtime = self.session.runtime
        first = iteration * self.rl.questions_per_step + runtime.data_parallel_rank * self.questions_per_rank
        records = self.prompts.take(first, self.questions_per_rank)
        params = SamplingParams(
            self.rl.temperature,
            self.rl.top_p,
            self.rl.max_new_tokens,
            tuple(self.rl.stop),
            1,
            seed=self.rl.seed + 1_000_003 * iteration + 7919 * runtime.data_parallel_rank,
        )
        samples = generate_rollouts(
            self.generator,
            records,
            self.rl.group_size,
            params,
            self.tokenizer,
            self.config.chat_template,
            self._tool_runner(),
            self.rl.max_tool_calls,
        )
        self.score_samples(
            samples,
            self.rl.rewards,
            self.rl.reward_weights,
            self.rl.step_reward if self.rl.advantage_estimator in STEP_ESTIMATORS else None,
            use_reward_model=True,
        )
        batch = rollout_batch(
            samples,
            self.tokenizer.eod,
            self.rl.advantage_estimator,
            self.rl.advantage_epsilon,
            decode=self.tokenizer.decode,
        )
        return samples, batch

    def old_logp_from_sampler(self, batch: RolloutBatch) -> bool:
        return self.rl.old_logp_from_sampler and batch.sampler_logp is not None

    def fill_log_probs(self, batch: RolloutBatch, old_rows: torch.Tensor | None = None) -> None:
        """pi_old of `old_rows` (all by default; 0 in the others) and pi_ref of every row."""
        micro = self.session.trainer.micro_batch_size
        temperature, vocab = self.rl.temperature, self.session.vocab_size
        if self.old_logp_from_sampler(batch):
            batch.old_logp = batch.sampler_logp  # the sampler ran the current weights (rl.old_logp_from_sampler)
        else:
            batch.old_logp = sequence_log_probs(
                self.session, batch, micro, temperature, vocab, old_rows, self.log_prob_decoders[0]
            )
        if self.reference is not None:
            batch.ref_logp = sequence_log_probs(
                self.reference, batch, micro, temperature, vocab, decoder=self.log_prob_decoders[1]
            )

    def fill_critic_advantages(self, batch: RolloutBatch) -> None:
        """PPO: the critic's values, per-token rewards (the outcome at the last response token,
        minus beta x (log pi_old - log pi_ref) at every token), GAE advantages and returns."""
        values = self.critic.values(batch)
        mask = batch.mask
        token_rewards = torch.zeros_like(mask)
        if batch.ref_logp is not None:
            token_rewards -= self.rl.kl_coefficient * (batch.old_logp - batch.ref_logp) * mask
        positions = torch.arange(mask.shape[1]).unsqueeze(0)
        last = (positions * (mask > 0)).argmax(dim=1)
        answered = (mask.sum(dim=1) > 0) & ~batch.ungradable
        token_rewards[answered, last[answered]] += batch.rewards[answered]
        inputs = AdvantageInputs(
            batch.rewards,
            batch.group,
            mask * ~batch.ungradable.unsqueeze(1),
            self.rl.advantage_epsilon,
            token_rewards=token_rewards,
            values=values,
            gamma=self.rl.gae_gamma,
            lam=self.rl.gae_lambda,
            whiten=self.rl.whiten_advantages,
        )
        advantages = get_advantage_estimator(self.rl.advantage_estimator)(inputs)
        batch.advantages, batch.returns, batch.old_values = advantages.tokens, advantages.returns, values

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, float]:
        state = self.session.state
        started = time.perf_counter()
        samples, batch = self.collect(state.iteration)
        rollout_seconds = time.perf_counter() - started
        training_started = time.perf_counter()
        plan = update_rows(
            batch,
            trainable_rows(batch, self.rl.skip_zero_variance_groups),
            self.rl.updates_per_rollout,
            self.outputs_per_update,
            self.session.trainer.micro_batch_size,
            self.rl.seed + state.iteration,
        )
        # The first update trains the weights that sampled the rollout: its pi_old is its own forward
        # pass, so pi_old is computed only for the rows of later updates (PPO's per-token KL rewards
        # read pi_old of every row).
        first_update_on_policy = self.critic is None and not self.old_logp_from_sampler(batch)
        self.fill_log_probs(batch, later_update_rows(plan) if first_update_on_policy else None)
        if self.critic is not None:
            self.fill_critic_advantages(batch)
        results = grpo_updates(
            self.session,
            batch,
            self.settings,
            self.rl.temperature,
            self.rl.updates_per_rollout,
            self.outputs_per_update,
            self.rl.skip_zero_variance_groups,
            self.rl.seed + state.iteration,
            plan,
            first_update_on_policy,
            self.update_forward,
        )
        critic_results = []
        if self.critic is not None:
            critic_results = self.critic.update(
                batch, self.rl.updates_per_rollout, self.outputs_per_update, self.rl.seed + state.iteration
            )
        training_seconds = time.perf_counter() - training_started
        step_seconds = time.perf_counter() - started

        gradable = [s for s in samples if s.reward is not None]
        first_reward = self.rl.rewards[0]
        groups = batch.group.unique()
        zero_variance_groups = batch.group[batch.zero_variance].unique().numel()
        ungradable_groups = batch.group[batch.ungradable].unique().numel()
        sequence_tokens = sum(len(s.prompt_ids) + len(s.response_ids) for s in samples)
        kept = trainable_rows(batch, self.rl.skip_zero_variance_groups)
        trained_rows = int(kept.sum())
        # Tokens through the log-prob passes (policy, reference) and through every update.
        updated_tokens = sum(len(s.prompt_ids) + len(s.response_ids) for s, k in zip(samples, kept.tolist()) if k)
        training_tokens = sequence_tokens * (1 + (self.reference is not None)) + (
            updated_tokens * self.rl.updates_per_rollout if results else 0
        )
        sums = StepSums(
            {
                "reward_sum": sum(s.reward for s in gradable),
                "reward_squares": sum(s.reward**2 for s in gradable),
                "gradable": len(gradable),
                "accuracy_sum": sum(s.rewards[first_reward] or 0.0 for s in gradable),
                "response_tokens": sum(len(s.response_ids) for s in samples),
                "outputs": len(samples),
                "sampled_tokens": sum(s.generated_tokens for s in samples),
                "groups": groups.numel(),
                "zero_variance_groups": zero_variance_groups,
                "ungradable_groups": ungradable_groups,
                "tool_calls": sum(s.tool_calls for s in samples),
                "reflections": sum(revises_itself(s.text, self.rl.reflection_phrases) for s in samples),
                **{f"reward_sum_{name}": sum(s.rewards[name] or 0.0 for s in gradable) for name in self.rl.rewards},
                "reward_model_sum": sum(s.rewards.get(MODEL_REWARD) or 0.0 for s in gradable),
                "trained_outputs": trained_rows,
                "training_tokens": training_tokens,
                "all_tokens": sequence_tokens,
            }
        ).reduced()
        slowest = _data_parallel_max_float(rollout_seconds)
        reward_mean = sums["reward_sum"] / sums["gradable"] if sums["gradable"] else math.nan
        reward_variance = sums["reward_squares"] / sums["gradable"] - reward_mean**2 if sums["gradable"] else math.nan
        values: dict[str, float] = {
            "loss": _mean([r.loss for r in results]),
            "lr": results[-1].learning_rate if results else _current_lr(self.session),
            "grad_norm": _mean([r.grad_norm for r in results]),
            "reward_mean": reward_mean,
            "reward_std": math.sqrt(max(reward_variance, 0.0)) if sums["gradable"] else math.nan,
            "accuracy": sums["accuracy_sum"] / sums["gradable"] if sums["gradable"] else math.nan,
            "response_length": sums["response_tokens"] / sums["outputs"],
            "zero_variance_groups": sums["zero_variance_groups"] / sums["groups"],
            "ungradable_groups": sums["ungradable_groups"],
            "trained_outputs": sums["trained_outputs"],
            "updates": float(len(results)),
            "rollout_tokens_per_second": sums["sampled_tokens"] / slowest if slowest > 0 else math.nan,
            "training_tokens_per_second": sums["training_tokens"] / _data_parallel_max_float(training_seconds),
            "tokens_per_second": sums["all_tokens"] / step_seconds,
            "rollout_seconds": slowest,
            "step_seconds": step_seconds,
            "tokens": float(sum(r.tokens for r in results)),
        }
        values["reflection_rate"] = sums["reflections"] / sums["outputs"]
        if len(self.rl.rewards) > 1:
            for name in self.rl.rewards:
                values[f"reward_{name}"] = (
                    sums[f"reward_sum_{name}"] / sums["gradable"] if sums["gradable"] else math.nan
                )
        if self.rl.tool_use:
            values["tool_calls"] = sums["tool_calls"] / sums["outputs"]
        if self.reward_scorer is not None:
            values["reward_model_score"] = sums["reward_model_sum"] / sums["gradable"] if sums["gradable"] else math.nan
        if self.critic is not None:
            values["value_loss"] = _mean([r.loss for r in critic_results])
            for name in ("value_clip_fraction", "value_error"):
                values[name] = _mean([r.metrics[name] for r in critic_results if name in r.metrics])
        for name in ("kl", "clip_fraction", "entropy", "ratio"):
            measured = [r.metrics[name] for r in results if name in r.metrics]
            values[name] = _mean(measured)
        if self.settings.kl_clamp:  # the share of trained tokens whose KL estimate the clamp cut
            values["kl_clamped"] = _mean([r.metrics["kl_clamped"] for r in results if "kl_clamped" in r.metrics])
        return values

    # ------------------------------------------------------------------ held-out accuracy
    def evaluate_heldout(self) -> dict[str, float]:
        """Accuracy of the current policy on the held-out prompts (first reward), all ranks."""
        runtime = self.session.runtime
        records = [
            r
            for index, r in enumerate(self.held_out)
            if index % runtime.data_parallel_size == runtime.data_parallel_rank
        ]
        params = SamplingParams(
            self.rl.eval_temperature,
            1.0 if self.rl.eval_temperature == 0 else self.rl.top_p,
            self.rl.max_new_tokens,
            tuple(self.rl.stop),
            1,
            seed=self.rl.seed,
        )
        samples = generate_rollouts(
            self.generator,
            records,
            self.rl.eval_samples,
            params,
            self.tokenizer,
            self.config.chat_template,
            self._tool_runner(),
            self.rl.max_tool_calls,
        )
        accuracy, *others = self.rl.rewards
        # The other rewards are measured on the held-out answers too (R1 watches the format and the
        # language consistency there): validation_reward_<name>.
        self.score_samples(samples, [accuracy, *others], [1.0] * (1 + len(others)))
        gradable = [s.rewards[accuracy] for s in samples if s.rewards[accuracy] is not None]
        totals = {
            "correct": sum(gradable),
            "count": len(gradable),
            "length": sum(len(s.response_ids) for s in samples),
            "samples": len(samples),
        }
        for name in others:
            scored = [s.rewards[name] for s in samples if s.rewards[name] is not None]
            totals[f"{name}/sum"], totals[f"{name}/count"] = sum(scored), len(scored)
        sums = StepSums(totals).reduced()
        return {
            "accuracy": sums["correct"] / sums["count"] if sums["count"] else math.nan,
            "response_length": sums["length"] / max(sums["samples"], 1),
            "problems": sums["count"],
            **{
                f"reward_{name}": sums[f"{name}/sum"] / sums[f"{name}/count"] if sums[f"{name}/count"] else math.nan
                for name in others
            },
        }

    # ------------------------------------------------------------------ reference model
    def reset_reference(self) -> None:
        """Iterative GRPO: the reference takes the policy's current weights."""
        if self.reference is None:
            return
        for reference_chunk, policy_chunk in zip(self.reference, self.session.unwrapped_model()):
            reference_chunk.load_state_dict(policy_chunk.state_dict(), strict=False)
        self.session.state.extra["reference_iteration"] = self.session.state.iteration
        self.session.state.extra["reference_saved"] = False

    def save_reference_if_needed(self) -> None:
        extra = self.session.state.extra
        if self.reference is None or extra.get("reference_saved", True) or not self.session.checkpoint.dir:
            return
        root = Path(self.session.checkpoint.dir) / "reference"
        path = save_checkpoint(
            root,
            int(extra.get("reference_iteration", 0)),
            self.reference,
            model_config=self.session.model_config_record(),
            keep_last=self.session.checkpoint.keep_last,
        )
        extra["reference_checkpoint"] = str(path)
        extra["reference_saved"] = True

    def save(self):
        self.save_reference_if_needed()
        if self.critic is not None:  # first: a policy checkpoint always has its critic
            self.critic.save(self.session.state.iteration)
        return save_training_checkpoint(self.session)

    # ------------------------------------------------------------------ the loop
    def loop_step(self) -> StepRecord:
        """One GRPO step as training/loop.run_loop takes it."""
        values = self.step()
        values["memory_gib"] = memory_gib(self.session.runtime.device)
        return StepRecord(values, self.rl.questions_per_step, int(values["tokens"]))

    def after_step(self, iteration: int) -> None:
        if self.rl.reference_reset_interval and iteration % self.rl.reference_reset_interval == 0:
            self.reset_reference()
            if self.session.runtime.is_logging_rank:
                log.info("step %d: reference model reset to the policy (iterative GRPO)", iteration)

    def run(self) -> TrainOutcome:
        """GRPO steps until trainer.train_steps (run_loop: stops, checkpoints, exit status);
        held-out accuracy at step 0, every rl.eval_interval steps and at the end."""
        total = self.config.trainer.train_steps  # the session's trainer counts optimizer updates

        def heldout(iteration: int) -> dict[str, float] | None:
            if iteration % self.rl.eval_interval == 0 or iteration == total:
                return self.evaluate_heldout()
            return None

        evaluate = bool(self.held_out) and self.rl.eval_interval > 0
        return run_loop(
            self.session,
            self.loop_step,
            total_steps=total,
            validation=heldout if evaluate else None,
            after_step=self.after_step,
            save=self.save,
        )


def _data_parallel_max_float(value: float) -> float:
    if not dist.is_initialized() or parallel_state.get_data_parallel_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=parallel_state.get_data_parallel_group())
    return float(tensor.item())


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _current_lr(session) -> float:
    value = get_canonical_lr_for_logging(session.optimizer.param_groups)
    return float(value) if value is not None else math.nan


__all__ = [
    "GrpoTrainer",
    "grpo_loss_function",
    "grpo_updates",
    "log_prob_output",
    "response_log_probs",
    "policy_forward",
    "sequence_log_probs",
    "shared_prefix_decoder",
    "shared_prefix_forward",
    "trainable_rows",
    "update_rows",
]
