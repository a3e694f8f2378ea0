"""MATPO jobs: the single searching agent (GRPO over its rollouts) and MATPO's planner/worker
(one model, or one policy per role), both on `envs.search_qa`.

The job is the GRPO job (`experiments.rl.build`) with MATPO's credit: rows are grouped into
rollouts (`algorithms.matpo.rollouts_of_rows`), each planner rollout's reward is its episode's
final reward, and `algorithms.matpo.rollout_advantages` normalises it over the K rollouts of
the query and hands it to every worker rollout the planner spawned. A single agent's rollouts
are all top level, so its credit is plain GRPO over its K episodes: one code path for both.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from algorithms import matpo
from experiments import common, rl
from marft import trainer
from marft.sampling import shape_bucket


@functools.partial(jax.jit, static_argnames=("eps",))
def _advantages(rewards: jax.Array, query_ids: jax.Array, parent_ids: jax.Array, *, eps: float
                ) -> jax.Array:
  return matpo.rollout_advantages(rewards, query_ids, parent_ids, eps=eps)


def matpo_groups(batch: Any) -> np.ndarray:
  """The group each row's advantage is normalised in: its query (the task), whose K planner
  rollouts are normalised together and hand their advantages to their worker rollouts."""
  return np.asarray(batch.task_id, np.int32)


def matpo_credit(batch: Any, algo: Any) -> tuple[np.ndarray, np.ndarray]:
  """Each row's advantage: its rollout's (`matpo.rollout_advantages` over rollouts padded to a
  `shape_bucket`, padding rollouts being planners of queries of their own); every row is kept
  (token-mean over all planner and worker tokens)."""
  rollout_of_row, parents, episodes = matpo.rollouts_of_rows(batch.episode_id, batch.parent_id)
  first = {}
  for row, episode in enumerate(np.asarray(batch.episode_id)):
    first.setdefault(int(episode), row)
  rows = np.asarray([first[int(e)] for e in episodes])
  n = len(episodes)
  width = shape_bucket(n, 16)
  rewards = np.zeros(width, np.float32)
  rewards[:n] = np.asarray(batch.episode_return)[rows]
  queries = np.arange(width, dtype=np.int32)  # task ids are < the number of planner rollouts
  queries[:n] = matpo_groups(batch)[rows]
  parent_ids = np.full(width, -1, np.int32)
  parent_ids[:n] = parents
  advantages = np.asarray(_advantages(rewards, queries, parent_ids, eps=float(algo.eps)))[:n]
  return advantages[rollout_of_row].astype(np.float32), np.ones(len(rollout_of_row), np.float32)


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The MATPO (or single-agent GRPO) job of `config` (`experiments/configs/matpo.py`)."""
  if config.algo.tree:
    raise common.ConfigError("algo.tree=True: MATPO's K rollouts of a query are independent "
                             "episodes (a tree would share the planner's nested workers)")
  return rl.build(config, mesh, credit=matpo_credit, groups=matpo_groups)
