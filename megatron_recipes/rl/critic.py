"""PPO's critic (rl.advantage_estimator=gae): the reward models' scalar-head model used as a value
function, trained with the clipped value loss, beside the policy at the same parallel layout.

    critic = build_critic(config, policy_session)       # its own optimizer and checkpoints
    values = critic.values(batch)                       # V [N, S] at every label position
    results = critic.update(batch, updates, outputs_per_update, seed)
    critic.save(iteration)                              # <checkpoint.dir>/critic/iter_*

Positions: the critic reads the rollout's input tokens [N, S] (the policy's, shifted: position t
holds token t and predicts label t), so V_t is the value of the state in which the policy emits
label t, aligned with the policy's log-probs and the advantages.

Loss (objectives.clipped_value_loss): 0.5 max((V - R)^2, (V_old + clip(V - V_old, +-rl.value_clip)
- R)^2) averaged over trained response tokens (token mean over the global mini-batch), with the
returns R and V_old of the rollout; the critic takes one optimizer step per policy mini-batch,
over the same rows in the same seeded order.

Initialisation: `rl.critic_init_from` (a reward model's checkpoint, or a policy/base checkpoint
whose weights fill everything but the new head), else the policy's checkpoint.init_from. A
resumed run reloads the critic saved at the policy's iteration (the critic is saved first, so a
policy checkpoint always has its critic). Building the critic leaves the random generators where
the policy's restore put them.

Cost: a second model with its optimizer (the memory GRPO saves), one forward pass over the
rollout and one forward/backward per mini-batch.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from pathlib import Path

import torch

from megatron_recipes.reward_models.kinds import get_reward_model_kind
from megatron_recipes.reward_models.model import NEW_MODULES, build_reward_model, reward_forward
from megatron_recipes.rl.objectives import clipped_value_loss
from megatron_recipes.rl.rollout import RolloutBatch
from megatron_recipes.rl.trainer import minibatch_plan
from megatron_recipes.runtime.seeds import capture_rng_state, restore_rng_state
from megatron_recipes.training.checkpointing import CheckpointError, iteration_directory, load_checkpoint
from megatron_recipes.training.config import CheckpointConfig
from megatron_recipes.training.loop import forward_only, save_training_checkpoint, train_step
from megatron_recipes.training.session import TrainState, setup_training

log = logging.getLogger(__name__)

CRITIC_DIRECTORY = "critic"
VALUE_KIND = get_reward_model_kind("value")


def value_loss_function(clip: float):
    """loss_fn(batch, values) for training/loop.train_step: the clipped value loss, token mean."""

    def loss(batch: dict, values: torch.Tensor):
        mask = batch["loss_mask"].to(values.dtype)
        per_token, clipped = clipped_value_loss(values, batch["old_values"], batch["returns"], clip)
        count = mask.sum()
        metrics = {
            "value_clip_fraction": torch.stack([(clipped.to(values.dtype) * mask).sum().detach(), count.detach()]),
            "value_error": torch.stack([((values.detach() - batch["returns"]).abs() * mask).sum(), count.detach()]),
        }
        return (per_token * mask).sum(), count.to(torch.int), metrics

    return loss


class Critic:
    def __init__(self, session, value_clip: float, micro_batch_size: int):
        self.session = session
        self.value_clip = value_clip
        self.micro_batch_size = micro_batch_size

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        micro_batches = [
            batch.rows(torch.arange(start, min(start + self.micro_batch_size, len(batch))))
            for start in range(0, len(batch), self.micro_batch_size)
        ]
        outputs = forward_only(
            self.session, micro_batches, lambda _, values: values.detach().float().cpu(), forward_fn=reward_forward
        )
        return torch.cat(outputs) if outputs else torch.empty(0)

    def update(self, batch: RolloutBatch, updates: int, outputs_per_update: int, seed: int) -> list:
        """One optimizer step per mini-batch, the policy's order (rl/trainer.grpo_updates)."""
        results = []
        loss_fn = value_loss_function(self.value_clip)
        keep = batch.mask.sum(dim=1) > 0
        for micro_batches in minibatch_plan(batch, keep, updates, outputs_per_update, self.micro_batch_size, seed):
            results.append(train_step(self.session, micro_batches, loss_fn, reward_forward))
        return results

    def save(self, iteration: int):
        self.session.state.iteration = iteration
        return save_training_checkpoint(self.session)


def build_critic(config, policy_session) -> Critic:
    """The critic of a GrpoConfig run with rl.advantage_estimator=gae (module docstring)."""
    rl = config.rl
    init = rl.critic_init_from or config.checkpoint.init_from
    directory = Path(config.checkpoint.dir) / CRITIC_DIRECTORY if config.checkpoint.dir else None
    checkpoint = CheckpointConfig(
        dir=str(directory) if directory else None,
        resume=False,
        init_from=init,
        save_interval=0,
        keep_last=config.checkpoint.keep_last,
        optimizer_format=config.checkpoint.optimizer_format,
    )
    optimizer = replace(config.optimizer, lr=rl.critic_lr)
    rng = capture_rng_state()
    session = setup_training(
        config.model,
        config.parallelism,
        optimizer,
        policy_session.trainer,
        checkpoint,
        vocab_size=policy_session.vocab_size,
        runtime=policy_session.runtime,
        model_builder=functools.partial(build_reward_model, kind=VALUE_KIND.name),
        new_modules=NEW_MODULES,
        model_record={"reward_model_kind": VALUE_KIND.name, "hf_class": VALUE_KIND.hf_class},
    )
    iteration = policy_session.state.iteration
    if iteration > 0 and directory is not None:
        path = iteration_directory(directory, iteration)
        if not path.exists():
            raise CheckpointError(f"the policy resumed at step {iteration} but its critic {path} does not exist")
        loaded = load_checkpoint(path, session.model, session.optimizer, session.scheduler, restore_rng=False)
        session.state = TrainState.from_dict(loaded.train_state)
        session.restored_from = str(loaded.path)
    restore_rng_state(rng)
    if policy_session.runtime.is_logging_rank:
        log.info("critic: %s (lr %g, value clip %g)", session.restored_from or "random", rl.critic_lr, rl.value_clip)
    return Critic(session, rl.value_clip, policy_session.trainer.micro_batch_size)


__all__ = ["CRITIC_DIRECTORY", "Critic", "build_critic", "value_loss_function"]
