"""GRPO's vectorised pieces agree with their readable references on fixed tensors, including
padded ragged responses, non-contiguous groups, zero-variance and singleton groups; the KL
estimators have the expectations they are chosen for; registries fail with one clear line."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_recipes.rl.config import RlConfig
from megatron_recipes.rl.objectives import (
    ADVANTAGE_ESTIMATORS,
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    AdvantageInputs,
    GrpoLossSettings,
    clipped_surrogate,
    get_advantage_estimator,
    get_kl_estimator,
    get_loss_aggregation,
    grpo_loss,
    reference_grpo_loss,
    reference_kl,
    reference_outcome_advantages,
    reference_process_advantages,
    register_loss_aggregation,
)

# Six outputs of three questions, groups interleaved (not contiguous); responses of 4, 2, 5, 1,
# 3 and 0 tokens placed at different offsets of a padded length of 7 (a prompt of varying length
# precedes them; the last output is empty, e.g. cut by the context length).
GROUP = [0, 1, 0, 1, 2, 2]
REWARDS = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # group 2 has zero variance
SPANS = [(1, 4), (3, 2), (0, 5), (6, 1), (2, 3), (4, 0)]
LENGTH = 7
EPSILON = RlConfig().advantage_epsilon


def ragged_mask() -> torch.Tensor:
    mask = torch.zeros(len(SPANS), LENGTH)
    for row, (start, count) in enumerate(SPANS):
        mask[row, start : start + count] = 1.0
    return mask


def as_lists(tensor: torch.Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in tensor]


def test_registries_hold_the_documented_names_and_fail_with_one_line():
    assert {"outcome", "process", "gae"} <= set(ADVANTAGE_ESTIMATORS)
    assert {"k1", "k2", "k3"} <= set(KL_ESTIMATORS)
    assert {"sequence_mean", "token_mean"} <= set(LOSS_AGGREGATIONS)
    with pytest.raises(KeyError, match="unknown KL estimator 'k4'; registered: k1, k2, k3"):
        get_kl_estimator("k4")
    with pytest.raises(KeyError, match="unknown loss aggregation"):
        get_loss_aggregation("mean_of_means")
    with pytest.raises(KeyError, match="unknown advantage estimator"):
        get_advantage_estimator("vtrace")

    @register_loss_aggregation("test_sum_only")
    def sum_only(per_token, mask):
        return (per_token * mask).sum(), torch.tensor(1)

    assert get_loss_aggregation("test_sum_only") is sum_only
    with pytest.raises(ValueError, match="already registered"):
        register_loss_aggregation("token_mean")(sum_only)


def test_outcome_advantages_match_the_reference_on_ragged_groups():
    mask = ragged_mask()
    result = get_advantage_estimator("outcome")(
        AdvantageInputs(torch.tensor(REWARDS), torch.tensor(GROUP), mask, EPSILON)
    )
    expected = reference_outcome_advantages(REWARDS, GROUP, as_lists(mask), EPSILON)
    assert torch.allclose(result.tokens, torch.tensor(expected), atol=1e-6)
    assert result.tokens.shape == mask.shape
    assert result.zero_variance.tolist() == [False, False, False, False, True, True]
    # The values themselves: group 0 = {1, 0}: mean 0.5, unbiased std 0.7071 -> +-0.7070 on every token.
    value = 0.5 / (math.sqrt(0.5) + EPSILON)
    assert result.tokens[0, 1:5].tolist() == pytest.approx([value] * 4, abs=1e-6)
    assert result.tokens[2, 0:5].tolist() == pytest.approx([-value] * 5, abs=1e-6)
    assert (result.tokens[mask == 0] == 0).all()  # padding and prompt positions carry nothing


def test_unscaled_outcome_advantages_are_the_centred_rewards():
    mask = ragged_mask()
    inputs = AdvantageInputs(torch.tensor(REWARDS), torch.tensor(GROUP), mask, EPSILON)
    result = get_advantage_estimator("outcome_unscaled")(inputs)
    scaled = get_advantage_estimator("outcome")(inputs)
    # Group 0 = {1, 0}: mean 0.5 -> +-0.5 on every token, where the std-scaled form gives +-0.707.
    assert result.tokens[0, 1:5].tolist() == pytest.approx([0.5] * 4)
    assert result.tokens[2, 0:5].tolist() == pytest.approx([-0.5] * 5)
    assert result.zero_variance.tolist() == scaled.zero_variance.tolist()
    assert (result.tokens[mask == 0] == 0).all() and (result.tokens[result.zero_variance] == 0).all()
    assert torch.equal(result.tokens.sign(), scaled.tokens.sign())


def test_outcome_advantages_of_a_singleton_group_are_zero():
    result = get_advantage_estimator("outcome")(
        AdvantageInputs(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([5, 7, 7]), torch.ones(3, 2), EPSILON)
    )
    assert result.zero_variance.tolist() == [True, False, False]
    assert result.tokens[0].tolist() == [0.0, 0.0]
    assert result.tokens[1, 0] == pytest.approx(-result.tokens[2, 0])


def test_process_advantages_match_the_reference_and_sum_future_steps():
    mask = ragged_mask()
    # Steps end at response tokens: (position, reward) per output, on the padded grid.
    steps = [[(2, 1.0), (4, 0.0)], [(4, 1.0)], [(0, 0.5), (3, 1.0), (4, 0.0)], [(6, 0.0)], [(3, 1.0), (4, 1.0)], []]
    step_rewards, step_mask = torch.zeros(6, LENGTH), torch.zeros(6, LENGTH)
    for row, row_steps in enumerate(steps):
        for position, reward in row_steps:
            step_rewards[row, position], step_mask[row, position] = reward, 1.0
    inputs = AdvantageInputs(torch.tensor(REWARDS), torch.tensor(GROUP), mask, EPSILON, step_rewards, step_mask)
    result = get_advantage_estimator("process")(inputs)
    expected = reference_process_advantages(steps, GROUP, as_lists(mask), EPSILON)
    assert torch.allclose(result.tokens, torch.tensor(expected), atol=1e-6)
    # Group 2's step rewards are all 1.0: zero variance.
    assert result.zero_variance.tolist() == [False, False, False, False, True, True]
    # By hand for output 0 (group 0: step rewards 1, 0, 0.5, 1, 0 -> mean 0.5, std sqrt(0.25)):
    std = math.sqrt(sum((v - 0.5) ** 2 for v in (1, 0, 0.5, 1, 0)) / 4) + EPSILON
    assert result.tokens[0, 1].item() == pytest.approx(
        (0.5 - 0.5) / std, abs=1e-6
    )  # both steps ahead: +0.5/std, -0.5/std
    assert result.tokens[0, 3].item() == pytest.approx(-0.5 / std, abs=1e-6)  # only the last step (reward 0) ahead
    with pytest.raises(ValueError, match="needs step_rewards"):
        get_advantage_estimator("process")(AdvantageInputs(torch.tensor(REWARDS), torch.tensor(GROUP), mask, EPSILON))


@pytest.mark.parametrize("name", ["k1", "k2", "k3"])
def test_kl_estimators_match_the_reference(name):
    generator = torch.Generator().manual_seed(0)
    logp = -torch.rand(5, 7, generator=generator, dtype=torch.float64) * 3
    ref = -torch.rand(5, 7, generator=generator, dtype=torch.float64) * 3
    values = get_kl_estimator(name)(logp, ref)
    expected = [
        [reference_kl(name, a, b) for a, b in zip(row_a, row_b)] for row_a, row_b in zip(logp.tolist(), ref.tolist())
    ]
    assert torch.allclose(values, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_k1_and_k3_are_unbiased_and_k3_is_never_negative():
    # Exact expectations over a categorical: E_pi[k1] = E_pi[k3] = KL(pi || pi_ref).
    pi = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    pi_ref = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    kl = float((pi * (pi / pi_ref).log()).sum())
    for name in ("k1", "k3"):
        assert float((pi * get_kl_estimator(name)(pi.log(), pi_ref.log())).sum()) == pytest.approx(kl, abs=1e-12)
    grid = torch.linspace(-6, 0, 50, dtype=torch.float64)
    assert (get_kl_estimator("k3")(grid.unsqueeze(1), grid.unsqueeze(0)) >= 0).all()
    assert get_kl_estimator("k3")(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0.0


def test_clipped_surrogate_clips_only_where_the_bound_is_binding():
    logp = torch.tensor([[0.5, -0.5, 0.5, -0.5, 0.0]]).log1p()  # ratios 1.5, 0.5, 1.5, 0.5, 1 vs old 0
    old = torch.zeros(1, 5)
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 2.0]])
    objective, ratio, clipped = clipped_surrogate(logp, old, advantages, epsilon_low=0.2, epsilon_high=0.28)
    assert ratio.tolist()[0] == pytest.approx([1.5, 0.5, 1.5, 0.5, 1.0])
    assert objective.tolist()[0] == pytest.approx([1.28, 0.5, -1.5, -0.8, 2.0])
    assert clipped.tolist()[0] == [True, False, False, True, False]


def random_case(seed: int, spread: float):
    generator = torch.Generator().manual_seed(seed)
    mask = ragged_mask()
    old = -torch.rand(6, LENGTH, generator=generator) * 2
    logp = old + (torch.rand(6, LENGTH, generator=generator) - 0.5) * spread  # ratios up to ~e^(spread/2)
    ref = old + (torch.rand(6, LENGTH, generator=generator) - 0.5) * 0.4
    advantages = get_advantage_estimator("outcome")(
        AdvantageInputs(torch.tensor(REWARDS), torch.tensor(GROUP), mask, EPSILON)
    ).tokens
    advantages = advantages + (torch.rand(6, LENGTH, generator=generator) - 0.5) * mask  # vary per token too
    return logp, old, ref, advantages, mask


@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean"])
@pytest.mark.parametrize("kl_estimator,kl_coefficient", [("k3", 0.04), ("k1", 0.1), ("k2", 0.5), ("k3", 0.0)])
@pytest.mark.parametrize("epsilons", [(0.2, 0.2), (0.1, 0.3)])
def test_grpo_loss_matches_the_reference_on_padded_ragged_responses(
    aggregation, kl_estimator, kl_coefficient, epsilons
):
    logp, old, ref, advantages, mask = random_case(seed=3, spread=1.2)
    settings = GrpoLossSettings(kl_coefficient, kl_estimator, epsilons[0], epsilons[1], aggregation)
    result = grpo_loss(logp, old, ref, advantages, mask, settings)
    value = float(result.numerator / result.denominator)
    expected = reference_grpo_loss(
        as_lists(logp), as_lists(old), as_lists(ref), as_lists(advantages), as_lists(mask), settings
    )
    assert value == pytest.approx(expected, abs=1e-6)
    # Padding cannot leak in: garbage outside the mask changes nothing.
    noisy = [tensor + 50 * (1 - mask) for tensor in (logp, old, ref, advantages)]
    again = grpo_loss(*noisy, mask, settings)
    assert float(again.numerator / again.denominator) == pytest.approx(value, abs=1e-6)
    # The clip fraction counts the same tokens as a loop would.
    total, count = result.sums["clip_fraction"]
    loop_count = sum(
        1
        for i in range(6)
        for t in range(LENGTH)
        if mask[i, t]
        and (
            (advantages[i, t] > 0 and math.exp(logp[i, t] - old[i, t]) > 1 + epsilons[1])
            or (advantages[i, t] < 0 and math.exp(logp[i, t] - old[i, t]) < 1 - epsilons[0])
        )
    )
    assert int(total) == loop_count > 0 and int(count) == int(mask.sum())


def test_sequence_mean_weighs_outputs_and_token_mean_weighs_tokens():
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    numerator, denominator = get_loss_aggregation("sequence_mean")(per_token, mask)
    assert float(numerator / denominator) == pytest.approx((1.0 + 3.0) / 2)
    numerator, denominator = get_loss_aggregation("token_mean")(per_token, mask)
    assert float(numerator / denominator) == pytest.approx((4 * 1.0 + 3.0) / 5)
    # Micro-batches combine exactly: sum of numerators / sum of denominators = whole-batch value.
    for name in ("sequence_mean", "token_mean"):
        whole = get_loss_aggregation(name)(per_token, mask)
        parts = [get_loss_aggregation(name)(per_token[i : i + 1], mask[i : i + 1]) for i in range(2)]
        combined = sum(p[0] for p in parts) / sum(p[1] for p in parts)
        assert float(combined) == pytest.approx(float(whole[0] / whole[1]))


def test_gradient_flows_only_through_unclipped_tokens():
    logp, old, ref, advantages, mask = random_case(seed=5, spread=1.5)
    logp = logp.clone().requires_grad_(True)
    settings = GrpoLossSettings.from_config(RlConfig(kl_coefficient=0.0, loss_aggregation="token_mean"))
    result = grpo_loss(logp, old, None, advantages, mask, settings)
    (result.numerator / result.denominator).backward()
    _, ratio, clipped = clipped_surrogate(logp.detach(), old, advantages, settings.epsilon_low, settings.epsilon_high)
    expected = -(ratio * advantages) * mask * (~clipped) / mask.sum()
    assert torch.allclose(logp.grad, expected, atol=1e-6)
    assert (logp.grad[clipped & (mask > 0)] == 0).all() and clipped[mask > 0].any()


def test_kl_clamp_bounds_the_estimate_and_its_gradient():
    # One token the policy pushed far below the reference: k3 ~ pi_ref / pi = e^12 (~163,000).
    logp, old, ref, advantages, mask = random_case(seed=7, spread=0.6)
    logp[0, 1] = ref[0, 1] - 12.0
    raw = get_kl_estimator("k3")(logp, ref)
    assert float(raw[0, 1]) > 1e5
    plain = RlConfig(kl_coefficient=0.2, loss_aggregation="token_mean")
    clamped = RlConfig(kl_coefficient=0.2, loss_aggregation="token_mean", kl_clamp=10.0)
    gradients, results = {}, {}
    for name, rl in (("plain", plain), ("clamped", clamped)):
        leaf = logp.clone().requires_grad_(True)
        settings = GrpoLossSettings.from_config(rl)
        results[name] = grpo_loss(leaf, old, ref, advantages, mask, settings)
        (results[name].numerator / results[name].denominator).backward()
        gradients[name] = leaf.grad
        expected = reference_grpo_loss(
            as_lists(logp), as_lists(old), as_lists(ref), as_lists(advantages), as_lists(mask), settings
        )
        assert float((results[name].numerator / results[name].denominator).detach()) == pytest.approx(
            expected, rel=1e-5
        )
    # Unclamped, that token's gradient is ~0.2 e^12 / tokens and dwarfs all the others together;
    # clamped it carries no KL gradient (only its surrogate's, ratio x advantage ~ e^-12), and the
    # other tokens' gradients are unchanged.
    outlier = abs(float(gradients["plain"][0, 1]))
    assert outlier > 100 * (float(gradients["plain"].abs().sum()) - outlier)
    assert abs(float(gradients["clamped"][0, 1])) < 1e-4
    others = torch.ones_like(mask, dtype=torch.bool)
    others[0, 1] = False
    assert torch.equal(gradients["clamped"][others], gradients["plain"][others])
    # The kl metric reports the unclamped estimate; kl_clamped counts the one token cut.
    assert torch.equal(results["clamped"].sums["kl"][0], results["plain"].sums["kl"][0])
    assert int(results["clamped"].sums["kl_clamped"][0]) == 1 and "kl_clamped" not in results["plain"].sums
    with pytest.raises(Exception, match="rl.kl_clamp"):
        RlConfig(kl_clamp=-1.0).validate()
