"""
The adaptive KL penalty coefficient of PPO-Penalty (Schulman et al. 2017, section 4).

After each policy update, with ``d`` the mean KL over the rollout:
``beta <- beta / beta_factor`` if ``d < kl_target / kl_tolerance``,
``beta <- beta * beta_factor`` if ``d > kl_target * kl_tolerance``, unchanged otherwise.
The paper uses ``beta_factor = 2`` and ``kl_tolerance = 1.5``.

Why bounds: a rule that only multiplies can drive beta to ``inf`` (a policy that keeps overshooting,
see ray-project/ray#18492) or to exactly ``0.0`` after enough halvings, from where doubling never brings it
back (batch-ppo PR #54). ``[BETA_MIN, BETA_MAX] = [1e-4, 1e4]`` is wide enough never to bind in
normal training: with normalized advantages the surrogate is of order 1 and the KL of order ``kl_target``
(1e-2), so at ``1e-4`` the penalty is negligible and at ``1e4`` it dominates by orders of magnitude;
from either bound a dozen updates bring beta back to 1.
"""

import math

BETA_MIN = 1e-4
BETA_MAX = 1e4


def adapt_beta(
    beta: float,
    kl_divergence: float,
    kl_target: float,
    beta_factor: float = 2.0,
    kl_tolerance: float = 1.5,
    beta_min: float = BETA_MIN,
    beta_max: float = BETA_MAX,
) -> float:
    """
    One step of the paper's adaptive beta rule, kept inside ``[beta_min, beta_max]``.

    :param beta: Current penalty coefficient
    :param kl_divergence: Mean KL divergence between the policy before and after the update
    :param kl_target: Target KL divergence ``d_targ``
    :param beta_factor: Multiplicative step (the paper's 2)
    :param kl_tolerance: Tolerance band around the target (the paper's 1.5)
    :param beta_min: Lower bound of beta
    :param beta_max: Upper bound of beta
    :return: The new beta
    """
    if not math.isfinite(kl_divergence):
        raise ValueError(f"kl_divergence must be finite, got {kl_divergence}")
    if kl_divergence < kl_target / kl_tolerance:
        beta = beta / beta_factor
    elif kl_divergence > kl_target * kl_tolerance:
        beta = beta * beta_factor
    return min(max(beta, beta_min), beta_max)
