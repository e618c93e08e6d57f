"""GRPO's pieces (DeepSeekMath, arXiv:2402.03300, section 4.1), registered by name, each with a
small readable reference implementation right after it (tests check they agree, also on padded
ragged responses).

Shapes used throughout: a rollout batch holds N sampled outputs (Q questions x G samples, or
fewer after filtering); per-token tensors are [N, T] on the training sequence's label positions
(T = the padded length), with `mask` [N, T] (1.0 where the label is a response token that is
trained; prompt, padding and tool-output tokens are 0). `group` [N] int64 names each output's
question (any ids; outputs of one group need not be contiguous).

Advantage estimators (ADVANTAGE_ESTIMATORS, `rl.advantage_estimator`), f(inputs) -> Advantages:
  outcome   r_i -> (r_i - mean(r_group)) / (std(r_group) + eps), the same for every token of output
            i (std is the unbiased sample std, as torch.std; a group of one has std 0).
  process   step rewards r_{i,j} at the token ending each reasoning step; normalised with the
            mean and std over *all* steps of all outputs of the group; a token's advantage is the
            sum of the normalised rewards of the steps ending at or after it.
  outcome_unscaled  r_i - mean(r_group) (Dr. GRPO: no division by the group's std).
  outcome_steps  outcome's advantage at every token, plus, at the token that ends each step, that
            step's reward minus the mean of all step rewards of the group (not divided by their
            std: the step reward's own weight sets its scale). For a reward decided at a few
            tokens of a response (R1's language consistency, decided by the tokens that open each
            sentence: rl.step_reward=language_spans puts its steps there), those tokens get their
            own credit, and no other token is moved by it. Zero-variance: outcome and steps both.
  Groups whose rewards all agree (std == 0) get advantage 0 and are flagged `zero_variance`:
  the trainer drops them from the loss (rl.skip_zero_variance_groups) and counts them.
  gae       PPO's baseline (the paper's comparison, section 4.1): per-token rewards r_t (the
            outcome reward at the last response token minus beta x KL_k1 at every token, the
            trainer builds them) and a critic's values V_t at each trained position;
            delta_t = r_t + gamma V_{t'} - V_t (t' the next trained position, V = 0 after the
            last), A_t = delta_t + gamma lambda A_{t'}; returns R_t = A_t + V_t train the critic.
            The policy sees A whitened over the rank's rollout (mean 0, std 1 over trained tokens).
            Needs values (`needs_values`): the trainer calls it after the critic's forward pass.
KL estimators (KL_ESTIMATORS, `rl.kl_estimator`) of KL(pi_theta || pi_ref) per token, from
log-probs logp = log pi_theta and ref = log pi_ref, [N, T] -> [N, T]:
  k1 = logp - ref;  k2 = (logp - ref)^2 / 2;  k3 = pi_ref/pi - log(pi_ref/pi) - 1 (the paper's,
  unbiased and always >= 0).
  With rl.kl_clamp = c > 0 the loss uses the estimate clamped to [-c, c] (the `kl` metric stays the
  unclamped estimate): k3 grows like pi_ref/pi, so one token the policy has pushed far below the
  reference (a sampled wrong answer, on a second pass over the rollout) can carry a KL of
  thousands whose gradient outweighs the whole batch's, and gradient clipping then shrinks every
  other token's update with it. Past the clamp the token's KL term has no gradient.
Clipped surrogate: ratio = exp(logp - old_logp); objective_t = min(ratio A_t,
  clip(ratio, 1 - eps_low, 1 + eps_high) A_t); a token is "clipped" when the clipped term is the
  smaller one and differs (the gradient through it is zero).
Per-token loss: l_t = -(objective_t - beta x KL_t).
Loss aggregations (LOSS_AGGREGATIONS, `rl.loss_aggregation`), f(per_token_loss, mask) ->
(numerator, denominator), so that megatron's loop (loss = sum of numerators / sum of denominators
over micro-batches and data-parallel ranks) computes the same global value at every layout:
  sequence_mean  (1/N) sum_i (1/|o_i|) sum_t l_{i,t}   the paper's form: numerator = sum_i of the
                 per-output token means, denominator = number of outputs
  token_mean     sum_{i,t} l_{i,t} / sum_i |o_i|       every token weighs the same

Cost: every function is O(N x T) tensor work (the references are Python loops, for tests only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from megatron_recipes.rl.config import RlConfig
from stack_common.checks import require_choice

# ------------------------------------------------------------------------------------------------
# Registries
# ------------------------------------------------------------------------------------------------

ADVANTAGE_ESTIMATORS: dict[str, Callable[..., "Advantages"]] = {}
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}
LOSS_AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {}


def _register(registry: dict, name: str):
    def decorator(function):
        if name in registry and registry[name] is not function:
            raise ValueError(f"{name!r} is already registered")
        registry[name] = function
        return function

    return decorator


def register_advantage_estimator(name: str):
    return _register(ADVANTAGE_ESTIMATORS, name)


def register_kl_estimator(name: str):
    return _register(KL_ESTIMATORS, name)


def register_loss_aggregation(name: str):
    return _register(LOSS_AGGREGATIONS, name)


def _lookup(registry: dict, kind: str, name: str):
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r}; registered: {', '.join(sorted(registry))}") from None


def get_advantage_estimator(name: str):
    return _lookup(ADVANTAGE_ESTIMATORS, "advantage estimator", name)


def get_kl_estimator(name: str):
    return _lookup(KL_ESTIMATORS, "KL estimator", name)


def get_loss_aggregation(name: str):
    return _lookup(LOSS_AGGREGATIONS, "loss aggregation", name)


def check_objective_names(rl: RlConfig) -> None:
    """ConfigError (one line) unless the `rl` section's estimator and aggregation names are
    registered. RlConfig.validate checks the rest; this part needs the registries, hence torch."""
    require_choice("rl.advantage_estimator", rl.advantage_estimator, ADVANTAGE_ESTIMATORS)
    require_choice("rl.kl_estimator", rl.kl_estimator, KL_ESTIMATORS)
    require_choice("rl.loss_aggregation", rl.loss_aggregation, LOSS_AGGREGATIONS)


# ------------------------------------------------------------------------------------------------
# Advantages
# ------------------------------------------------------------------------------------------------


@dataclass
class AdvantageInputs:
    """rewards [N] outcome rewards; group [N] int64; mask [N, T] trained response tokens;
    step_rewards [N, T] reward of the step ending at each position (process supervision only);
    step_mask [N, T] 1.0 where a step ends."""

    rewards: torch.Tensor
    group: torch.Tensor
    mask: torch.Tensor
    # Added to the group's std before dividing (rl.advantage_epsilon).
    epsilon: float
    step_rewards: torch.Tensor | None = None
    step_mask: torch.Tensor | None = None
    # PPO (gae): per-token rewards [N, T], the critic's values [N, T], discount and GAE lambda.
    token_rewards: torch.Tensor | None = None
    values: torch.Tensor | None = None
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True


@dataclass
class Advantages:
    """tokens [N, T] per-token advantages (0 outside mask); zero_variance [N] bool (the output's
    group had identical rewards, so its advantages are 0); returns [N, T] the critic's targets
    (gae only)."""

    tokens: torch.Tensor
    zero_variance: torch.Tensor
    returns: torch.Tensor | None = None


def _group_statistics(
    values: torch.Tensor, weights: torch.Tensor, group: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and unbiased std of `values` per group, gathered back to each element's
    group. values/weights: [N, K] (weights 0/1), group [N]. Returns ([N], [N])."""
    _, inverse = torch.unique(group, return_inverse=True)
    groups = int(inverse.max()) + 1 if inverse.numel() else 0
    values, weights = values.double(), weights.double()
    count = torch.zeros(groups, dtype=torch.float64).index_add_(0, inverse, weights.sum(dim=1))
    total = torch.zeros(groups, dtype=torch.float64).index_add_(0, inverse, (values * weights).sum(dim=1))
    mean = total / count.clamp(min=1)
    deviations = ((values - mean[inverse].unsqueeze(1)) ** 2 * weights).sum(dim=1)
    squares = torch.zeros(groups, dtype=torch.float64).index_add_(0, inverse, deviations)
    std = (squares / (count - 1).clamp(min=1)).sqrt()
    std = torch.where(count > 1, std, torch.zeros_like(std))
    return mean[inverse], std[inverse]


# Rewards are 0/1 or small sums; a spread below this is "all equal".
ZERO_STD = 1e-6


@register_advantage_estimator("outcome")
def outcome_advantages(inputs: AdvantageInputs) -> Advantages:
    """Group-normalised outcome reward, broadcast to every response token."""
    rewards = inputs.rewards.double().unsqueeze(1)
    mean, std = _group_statistics(rewards, torch.ones_like(rewards), inputs.group)
    zero_variance = std < ZERO_STD
    normalised = torch.where(
        zero_variance, torch.zeros_like(mean), (inputs.rewards.double() - mean) / (std + inputs.epsilon)
    )
    return Advantages((normalised.unsqueeze(1) * inputs.mask.double()).to(torch.float32), zero_variance)


@register_advantage_estimator("outcome_unscaled")
def outcome_unscaled_advantages(inputs: AdvantageInputs) -> Advantages:
    """Dr. GRPO's outcome advantage (arXiv:2503.20783): r_i - mean(r_group), not divided by the
    group's std, so a group that is nearly all right or all wrong weighs less than an even one."""
    rewards = inputs.rewards.double().unsqueeze(1)
    mean, std = _group_statistics(rewards, torch.ones_like(rewards), inputs.group)
    zero_variance = std < ZERO_STD
    centred = torch.where(zero_variance, torch.zeros_like(mean), inputs.rewards.double() - mean)
    return Advantages((centred.unsqueeze(1) * inputs.mask.double()).to(torch.float32), zero_variance)


def reference_outcome_advantages(
    rewards: list[float], group: list[int], mask: list[list[float]], epsilon: float
) -> list[list[float]]:
    """Readable reference of `outcome_advantages`."""
    members: dict[int, list[float]] = {}
    for reward, g in zip(rewards, group):
        members.setdefault(g, []).append(reward)
    advantages = []
    for reward, g, row in zip(rewards, group, mask):
        values = members[g]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        value = 0.0 if std < ZERO_STD else (reward - mean) / (std + epsilon)
        advantages.append([value * m for m in row])
    return advantages


@register_advantage_estimator("process")
def process_advantages(inputs: AdvantageInputs) -> Advantages:
    """Process supervision: group-normalised step rewards summed over the steps ending at or after each token."""
    if inputs.step_rewards is None or inputs.step_mask is None:
        raise ValueError("the process advantage estimator needs step_rewards and step_mask (rl.step_reward)")
    step_mask = inputs.step_mask.double()
    mean, std = _group_statistics(inputs.step_rewards.double(), step_mask, inputs.group)
    zero_variance = std < ZERO_STD
    normalised = (inputs.step_rewards.double() - mean.unsqueeze(1)) / (std.unsqueeze(1) + inputs.epsilon) * step_mask
    normalised = torch.where(zero_variance.unsqueeze(1), torch.zeros_like(normalised), normalised)
    # Sum over steps ending at or after t: a reversed cumulative sum along the sequence.
    to_go = normalised.flip(1).cumsum(1).flip(1)
    return Advantages((to_go * inputs.mask.double()).to(torch.float32), zero_variance)


@register_advantage_estimator("outcome_steps")
def outcome_steps_advantages(inputs: AdvantageInputs) -> Advantages:
    """outcome's advantage plus each step's centred reward at its own token (see module docstring)."""
    if inputs.step_rewards is None or inputs.step_mask is None:
        raise ValueError("the outcome_steps advantage estimator needs step_rewards and step_mask (rl.step_reward)")
    outcome = outcome_advantages(inputs)
    step_mask = inputs.step_mask.double()
    mean, std = _group_statistics(inputs.step_rewards.double(), step_mask, inputs.group)
    centred = (inputs.step_rewards.double() - mean.unsqueeze(1)) * step_mask
    zero_variance = outcome.zero_variance & (std < ZERO_STD)
    tokens = outcome.tokens.double() + centred * inputs.mask.double()
    return Advantages(tokens.to(torch.float32), zero_variance)


def reference_outcome_steps_advantages(
    rewards: list[float],
    step_rewards: list[list[tuple[int, float]]],
    group: list[int],
    mask: list[list[float]],
    epsilon: float,
) -> list[list[float]]:
    """Readable reference of `outcome_steps_advantages`: step_rewards[i] = [(position, reward), ...]."""
    outcome = reference_outcome_advantages(rewards, group, mask, epsilon)
    pooled: dict[int, list[float]] = {}
    for steps, g in zip(step_rewards, group):
        pooled.setdefault(g, []).extend(reward for _, reward in steps)
    advantages = []
    for steps, g, row, base in zip(step_rewards, group, mask, outcome):
        mean = sum(pooled[g]) / len(pooled[g]) if pooled[g] else 0.0
        own = {end: reward - mean for end, reward in steps}
        advantages.append([base[t] + own.get(t, 0.0) * m for t, m in enumerate(row)])
    return advantages


def reference_process_advantages(
    step_rewards: list[list[tuple[int, float]]], group: list[int], mask: list[list[float]], epsilon: float
) -> list[list[float]]:
    """Readable reference of `process_advantages`: step_rewards[i] = [(end position, reward), ...]."""
    pooled: dict[int, list[float]] = {}
    for steps, g in zip(step_rewards, group):
        pooled.setdefault(g, []).extend(reward for _, reward in steps)
    advantages = []
    for steps, g, row in zip(step_rewards, group, mask):
        values = pooled[g]
        mean = sum(values) / len(values) if values else 0.0
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        tokens = []
        for t, m in enumerate(row):
            if std < ZERO_STD:
                tokens.append(0.0)
                continue
            total = sum((reward - mean) / (std + epsilon) for end, reward in steps if end >= t)
            tokens.append(total * m)
        advantages.append(tokens)
    return advantages


@register_advantage_estimator("gae")
def gae_advantages(inputs: AdvantageInputs) -> Advantages:
    """PPO's generalized advantage estimation over the trained positions of each output (module docstring)."""
    if inputs.token_rewards is None or inputs.values is None:
        raise ValueError("the gae advantage estimator needs token_rewards and the critic's values")
    mask = inputs.mask.double()
    rewards, values = inputs.token_rewards.double() * mask, inputs.values.double() * mask
    count, length = mask.shape
    advantages = torch.zeros(count, length, dtype=torch.float64)
    next_value = torch.zeros(count, dtype=torch.float64)
    running = torch.zeros(count, dtype=torch.float64)
    for t in range(length - 1, -1, -1):
        trained = mask[:, t] > 0
        delta = rewards[:, t] + inputs.gamma * next_value - values[:, t]
        updated = delta + inputs.gamma * inputs.lam * running
        running = torch.where(trained, updated, running)
        next_value = torch.where(trained, values[:, t], next_value)
        advantages[:, t] = torch.where(trained, updated, torch.zeros_like(updated))
    returns = (advantages + values) * mask
    tokens = advantages
    if inputs.whiten and mask.sum() > 1:
        mean = (advantages * mask).sum() / mask.sum()
        std = (((advantages - mean) ** 2 * mask).sum() / (mask.sum() - 1)).sqrt()
        tokens = (advantages - mean) / (std + inputs.epsilon) * mask
    zero_variance = torch.zeros(count, dtype=torch.bool)
    return Advantages(tokens.to(torch.float32), zero_variance, returns.to(torch.float32))


gae_advantages.needs_values = True


def reference_gae_advantages(
    token_rewards: list[list[float]], values: list[list[float]], mask: list[list[float]], gamma: float, lam: float
) -> tuple[list[list[float]], list[list[float]]]:
    """Readable reference of `gae_advantages` without whitening: (advantages, returns)."""
    advantages, returns = [], []
    for rewards, row_values, row_mask in zip(token_rewards, values, mask):
        positions = [t for t, m in enumerate(row_mask) if m]
        row_advantages = [0.0] * len(row_mask)
        following, next_value = 0.0, 0.0
        for t in reversed(positions):
            delta = rewards[t] + gamma * next_value - row_values[t]
            following = delta + gamma * lam * following
            row_advantages[t] = following
            next_value = row_values[t]
        advantages.append(row_advantages)
        returns.append([a + v if m else 0.0 for a, v, m in zip(row_advantages, row_values, row_mask)])
    return advantages, returns


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss per token: 0.5 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2),
    and whether the clipped term was the larger one. All [N, T]."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped_loss, clipped_loss), clipped_loss > unclipped_loss


def reference_clipped_value_loss(value: float, old_value: float, target: float, clip: float) -> float:
    """Readable reference of `clipped_value_loss` for one token."""
    clipped = old_value + min(max(value - old_value, -clip), clip)
    return 0.5 * max((value - target) ** 2, (clipped - target) ** 2)


# ------------------------------------------------------------------------------------------------
# KL estimators
# ------------------------------------------------------------------------------------------------


@register_kl_estimator("k1")
def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return logp - ref_logp


@register_kl_estimator("k2")
def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logp - ref_logp) ** 2


@register_kl_estimator("k3")
def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    log_ratio = ref_logp - logp  # log(pi_ref / pi)
    return torch.exp(log_ratio) - log_ratio - 1.0


def reference_kl(name: str, logp: float, ref_logp: float) -> float:
    """Readable reference of the KL estimators, on one token's log-probs."""
    pi, pi_ref = math.exp(logp), math.exp(ref_logp)
    if name == "k1":
        return math.log(pi / pi_ref)
    if name == "k2":
        return 0.5 * math.log(pi / pi_ref) ** 2
    if name == "k3":
        return pi_ref / pi - math.log(pi_ref / pi) - 1.0
    raise KeyError(name)


# ------------------------------------------------------------------------------------------------
# Clipped surrogate and the per-token loss
# ------------------------------------------------------------------------------------------------


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped objective per token. All inputs [N, T]. Returns (objective [N, T],
    ratio [N, T], clipped [N, T] bool)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped_ratio = ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)
    clipped = clipped_ratio * advantages
    objective = torch.minimum(unclipped, clipped)
    was_clipped = clipped < unclipped
    return objective, ratio, was_clipped


@dataclass(frozen=True)
class GrpoLossSettings:
    """The loss's settings, taken from the `rl` section (megatron_recipes.rl.config.RlConfig), whose
    defaults are the only ones: `GrpoLossSettings.from_config(config.rl)`."""

    kl_coefficient: float
    kl_estimator: str
    epsilon_low: float
    epsilon_high: float
    loss_aggregation: str
    # Bound on the per-token KL estimate in the loss, 0 = none (rl.kl_clamp).
    kl_clamp: float = 0.0

    @classmethod
    def from_config(cls, rl: RlConfig) -> "GrpoLossSettings":
        return cls(
            rl.kl_coefficient, rl.kl_estimator, rl.epsilon_low, rl.epsilon_high, rl.loss_aggregation, rl.kl_clamp
        )


@dataclass
class GrpoLoss:
    """numerator (scalar, with gradient) / denominator (scalar) is the loss of the batch; `sums`
    maps metric names to (sum, count) scalars over masked tokens: kl, clip_fraction, ratio,
    surrogate (the clipped objective)."""

    numerator: torch.Tensor
    denominator: torch.Tensor
    per_token: torch.Tensor
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]]


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    settings: GrpoLossSettings,
) -> GrpoLoss:
    """GRPO's objective, negated, for a batch. logp [N, T] (with gradient), old_logp / ref_logp /
    advantages / mask [N, T]. ref_logp may be None when settings.kl_coefficient == 0."""
    mask = mask.to(logp.dtype)
    objective, ratio, was_clipped = clipped_surrogate(
        logp, old_logp, advantages, settings.epsilon_low, settings.epsilon_high
    )
    per_token = -objective
    tokens = mask.sum()
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if settings.kl_coefficient:
        if ref_logp is None:
            raise ValueError("kl_coefficient > 0 needs reference log-probs")
        kl = get_kl_estimator(settings.kl_estimator)(logp, ref_logp)
        sums["kl"] = ((kl.detach() * mask).sum(), tokens)
        if settings.kl_clamp:
            sums["kl_clamped"] = (((kl.detach().abs() > settings.kl_clamp).to(mask.dtype) * mask).sum(), tokens)
            kl = kl.clamp(-settings.kl_clamp, settings.kl_clamp)
        per_token = per_token + settings.kl_coefficient * kl
    elif ref_logp is not None:
        sums["kl"] = ((get_kl_estimator(settings.kl_estimator)(logp.detach(), ref_logp) * mask).sum(), tokens)
    sums["clip_fraction"] = ((was_clipped.to(mask.dtype) * mask).sum(), tokens)
    sums["ratio"] = ((ratio.detach() * mask).sum(), tokens)
    sums["surrogate"] = ((objective.detach() * mask).sum(), tokens)
    numerator, denominator = get_loss_aggregation(settings.loss_aggregation)(per_token, mask)
    return GrpoLoss(numerator, denominator, per_token, sums)


@register_loss_aggregation("sequence_mean")
def sequence_mean(per_token_loss: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output token mean, summed over outputs; denominator = outputs with at least one token."""
    lengths = mask.sum(dim=1)
    has_tokens = lengths > 0
    per_output = (per_token_loss * mask).sum(dim=1) / lengths.clamp(min=1)
    return per_output[has_tokens].sum(), has_tokens.sum()


@register_loss_aggregation("token_mean")
def token_mean(per_token_loss: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over every trained token; denominator = number of trained tokens."""
    return (per_token_loss * mask).sum(), mask.sum()


def reference_grpo_loss(
    logp: list[list[float]],
    old_logp: list[list[float]],
    ref_logp: list[list[float]] | None,
    advantages: list[list[float]],
    mask: list[list[float]],
    settings: GrpoLossSettings,
) -> float:
    """Readable reference of `grpo_loss` + aggregation: the final loss value (numerator / denominator)."""
    outputs = []
    for i in range(len(logp)):
        terms = []
        for t in range(len(logp[i])):
            if not mask[i][t]:
                continue
            ratio = math.exp(logp[i][t] - old_logp[i][t])
            clipped_ratio = min(max(ratio, 1 - settings.epsilon_low), 1 + settings.epsilon_high)
            objective = min(ratio * advantages[i][t], clipped_ratio * advantages[i][t])
            kl = reference_kl(settings.kl_estimator, logp[i][t], ref_logp[i][t]) if settings.kl_coefficient else 0.0
            if settings.kl_clamp:
                kl = min(max(kl, -settings.kl_clamp), settings.kl_clamp)
            terms.append(-(objective - settings.kl_coefficient * kl))
        outputs.append(terms)
    if settings.loss_aggregation == "sequence_mean":
        means = [sum(terms) / len(terms) for terms in outputs if terms]
        return sum(means) / len(means)
    if settings.loss_aggregation == "token_mean":
        every = [term for terms in outputs for term in terms]
        return sum(every) / len(every)
    raise KeyError(settings.loss_aggregation)
