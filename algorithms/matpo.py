"""MATPO: multi-agent tool-integrated policy optimisation, planner and worker in one model
(MATPO: "Multi-Agent Tool-Integrated Policy Optimization", its method section).

A rollout is one agent's whole trajectory: a planner rollout answers a query, delegating
subtasks; each delegation is a nested worker rollout (searches, then a summary). Credit is the
planner's group-normalised final reward, shared by every worker rollout it spawned.
The loss is GRPO's clipped surrogate over the planner and worker rows stacked in one batch
(`algorithms.grpo.clipped_surrogate`, token-mean over all their response tokens, clip 0.2,
dual clip 3.0, no KL, no entropy); tool outputs sit in prompts, outside the loss mask.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np


def rollout_advantages(rewards: jax.Array, query_ids: jax.Array, parent_ids: jax.Array, *,
                       eps: float = 1e-6) -> jax.Array:
  """MATPO's rollout-level advantage (its credit assignment), one entry per rollout r.

  `parent_ids[r] == -1` marks a planner rollout; its advantage is
  A_r = (R_r - mean_G R) / (std_G R + eps) over the G planner rollouts of its query
  (`query_ids`, in [0, R)), std unbiased (ddof 1), a group of one 0 (`grpo.group_advantages`'
  conventions). A worker rollout (`parent_ids[r]` the index of the planner rollout that spawned
  it) gets its parent's advantage exactly; its own `rewards` entry is ignored.
  """
  chex.assert_rank([rewards, query_ids, parent_ids], 1)
  chex.assert_equal_shape([rewards, query_ids, parent_ids])
  n = rewards.shape[0]
  rewards = rewards.astype(jnp.float32)
  planner = (parent_ids < 0).astype(jnp.float32)
  count = jax.ops.segment_sum(planner, query_ids, num_segments=n)
  mean = jax.ops.segment_sum(rewards * planner, query_ids, num_segments=n) / jnp.maximum(
      count, 1.0)
  deviation = (rewards - mean[query_ids]) * planner
  variance = jax.ops.segment_sum(deviation**2, query_ids, num_segments=n) / jnp.maximum(
      count - 1.0, 1.0)
  own = jnp.where(count[query_ids] > 1, deviation / (jnp.sqrt(variance)[query_ids] + eps), 0.0)
  return jnp.where(parent_ids < 0, own, own[jnp.maximum(parent_ids, 0)])


def rollouts_of_rows(episode_ids: np.ndarray, parent_ids: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Groups a TurnBatch's rows (one per action) into rollouts (one per trajectory).

  A planner rollout is the top-level rows (`parent_ids == -1`) of one episode; a worker
  rollout is the rows sharing one parent row (the delegation that started it). Returns
  `(rollout_of_row[B], rollout_parent[R], rollout_episode[R])`: each row's rollout, each
  rollout's parent rollout (-1 for a planner rollout) and episode. Planner rollouts come first,
  in episode order, then worker rollouts in the order of their parent rows.
  """
  episode_ids = np.asarray(episode_ids)
  parent_ids = np.asarray(parent_ids)
  top = parent_ids < 0
  episodes = np.unique(episode_ids[top])
  if not np.all(top[parent_ids[~top]]):
    raise ValueError("a nested row's parent must be a top-level row")
  planner_of_episode = {int(e): i for i, e in enumerate(episodes)}
  spawners = np.unique(parent_ids[~top])
  worker_of_parent = {int(p): len(episodes) + i for i, p in enumerate(spawners)}
  rollout_of_row = np.asarray(
      [planner_of_episode[int(e)] if p < 0 else worker_of_parent[int(p)]
       for e, p in zip(episode_ids, parent_ids)], np.int32)
  rollout_episode = np.concatenate([episodes, episode_ids[spawners]]).astype(np.int32)
  rollout_parent = np.concatenate(
      [np.full(len(episodes), -1), [planner_of_episode[int(e)] for e in episode_ids[spawners]]]
  ).astype(np.int32)
  return rollout_of_row, rollout_parent, rollout_episode
