"""GRPO and AT-GRPO (agent- and turn-wise grouped GRPO), as pure functions.

From "Stronger Together: On-Policy Reinforcement Learning
for Collaborative LLMs" (AT-GRPO, Sec. 3-4) and GRPO (DeepSeekMath, Sec. 4.1). Plain GRPO groups
the K samples of one prompt; AT-GRPO groups the K tree-sampled candidates of one
(task, role, turn). Both feed the same clipped surrogate.
"""
from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np


def dense_group_ids(*keys: np.ndarray) -> np.ndarray:
  """Rows with equal key tuples get the same id in `[0, B)` (e.g. task, role, turn for AT-GRPO)."""
  stacked = np.stack([np.asarray(k).astype(np.int64) for k in keys], axis=1)
  _, ids = np.unique(stacked, axis=0, return_inverse=True)
  return ids.reshape(-1).astype(np.int32)


def mix_rewards(local: jax.Array, team: jax.Array, alpha: float) -> jax.Array:
  """AT-GRPO reward of role i at turn t (Sec. 4.2): `r = alpha * r_team + r_local`."""
  return alpha * team + local


def group_advantages(rewards: jax.Array, group_ids: jax.Array, *, eps: float = 1e-6,
                     normalize_std: bool = True) -> jax.Array:
  """AT-GRPO advantage (Stronger Together, Sec. 4.2): A = (r - mean_g r) / (std_g r + eps).

  Rows sharing a group id (in `[0, B)`) form a group; std is unbiased (ddof 1), as in the GRPO
  estimator; a group of one gets 0; `normalize_std=False` (Dr. GRPO) drops the division.
  """
  chex.assert_rank([rewards, group_ids], 1)
  rewards = rewards.astype(jnp.float32)
  n = rewards.shape[0]
  count = jax.ops.segment_sum(jnp.ones_like(rewards), group_ids, num_segments=n)
  mean = jax.ops.segment_sum(rewards, group_ids, num_segments=n) / jnp.maximum(count, 1.0)
  deviation = rewards - mean[group_ids]
  variance = jax.ops.segment_sum(deviation**2, group_ids, num_segments=n) / jnp.maximum(
      count - 1.0, 1.0)
  advantages = deviation / (jnp.sqrt(variance)[group_ids] + eps) if normalize_std else deviation
  return jnp.where(count[group_ids] > 1, advantages, 0.0)


def group_filter_mask(rewards: jax.Array, group_ids: jax.Array, *, drop_zero_variance: bool,
                      drop_lowest_fraction: float = 0.0) -> jax.Array:
  """1 for rows kept, 0 for rows of filtered groups (DAPO-style dynamic sampling).

  `drop_zero_variance` removes groups whose rewards are all equal (no learning signal);
  `drop_lowest_fraction` removes that fraction of groups with the lowest mean reward.
  """
  rewards = rewards.astype(jnp.float32)
  n = rewards.shape[0]
  count = jax.ops.segment_sum(jnp.ones_like(rewards), group_ids, num_segments=n)
  mean = jax.ops.segment_sum(rewards, group_ids, num_segments=n) / jnp.maximum(count, 1.0)
  spread = jax.ops.segment_max(rewards, group_ids, num_segments=n) - jax.ops.segment_min(
      rewards, group_ids, num_segments=n)
  keep = jnp.ones((n,), bool)
  if drop_zero_variance:
    keep = keep & (spread[group_ids] > 0)
  if drop_lowest_fraction > 0:
    present = count > 0
    groups = present.sum()
    to_drop = jnp.floor(drop_lowest_fraction * groups).astype(jnp.int32)
    # Rank present groups by mean (absent ones last); drop the `to_drop` lowest.
    order = jnp.argsort(jnp.where(present, mean, jnp.inf))
    rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    keep = keep & (rank[group_ids] >= to_drop)
  return keep.astype(jnp.float32)


def clipped_surrogate(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, *,
                      clip_eps: float = 0.2, clip_eps_high: float | None = None,
                      dual_clip: float | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-token PPO clipped surrogate loss (Schulman et al. 2017, Eq. 7; dual clip: Ye et al. 2020).

  rho = exp(logp - old_logp);  L = -min(rho A, clip(rho, 1 - eps, 1 + eps_high) A);
  with dual clip c > 1 and A < 0:  L = min(L, -c A).  Returns (loss, clipped indicator).
  """
  high = clip_eps if clip_eps_high is None else clip_eps_high
  ratio = jnp.exp(logp - old_logp)
  unclipped = ratio * advantages
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + high) * advantages
  loss = -jnp.minimum(unclipped, clipped)
  if dual_clip is not None:
    loss = jnp.where(advantages < 0, jnp.minimum(loss, -dual_clip * advantages), loss)
  return loss, (clipped < unclipped).astype(jnp.float32)


def low_variance_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
  """k3 estimator of KL(pi || pi_ref) per token (Schulman 2020): exp(d) - d - 1, d = ref - logp."""
  delta = ref_logp - logp
  return jnp.exp(delta) - delta - 1.0


def aggregate_denominators(mask: jax.Array) -> dict[str, jax.Array]:
  """What `aggregate` divides by, per mode, for the mask `m` of a whole batch:
  `token-mean`: max(sum_{b,t} m_{b,t}, 1); `sequence-mean`: max(#{b : sum_t m_{b,t} > 0}, 1)."""
  mask = mask.astype(jnp.float32)
  has_tokens = (mask.sum(-1) > 0).astype(jnp.float32)
  return {"token-mean": jnp.maximum(mask.sum(), 1.0),
          "sequence-mean": jnp.maximum(has_tokens.sum(), 1.0)}


def aggregate(values: jax.Array, mask: jax.Array, mode: str,
              denominators: dict[str, jax.Array] | None = None) -> jax.Array:
  """`token-mean`: sum(v m) / sum(m) over the batch; `sequence-mean`: mean over rows of each
  row's token mean (rows without tokens excluded).

  `denominators` (from `aggregate_denominators` of a whole batch) replace the ones of `mask`:
  with them, `values` may be any slice of rows of that batch, and the aggregates of a partition
  of its rows sum to the aggregate of the batch.
  """
  mask = mask.astype(jnp.float32)
  if mode == "token-mean":
    denominator = (jnp.maximum(mask.sum(), 1.0) if denominators is None
                   else denominators["token-mean"])
    return (values * mask).sum() / denominator
  if mode == "sequence-mean":
    per_row = (values * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    has_tokens = (mask.sum(-1) > 0).astype(jnp.float32)
    denominator = (jnp.maximum(has_tokens.sum(), 1.0) if denominators is None
                   else denominators["sequence-mean"])
    return (per_row * has_tokens).sum() / denominator
  raise ValueError(f"unknown aggregation {mode!r}: token-mean or sequence-mean")


def max_turns_at(step: int, rounds: Sequence[int], every: int) -> int:
  """ScalingInter-RL horizon curriculum (AgentGym-RL): `rounds[0]` for steps 1..every,
  `rounds[1]` for every+1..2*every, ..., then the last value."""
  stage = max(0, step - 1) // every
  return int(rounds[min(stage, len(rounds) - 1)])
