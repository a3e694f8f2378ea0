"""MASPRM (Yazdani et al. 2025, "MASPRM: Multi-Agent System Process Reward Model", its method
section), as pure functions.

A multi-agent MCTS over a fixed agent schedule expands one agent's message per tree level;
each terminal is graded +1 / -1 by the exact answer checker and its return is backed up the
tree. Every node's mean backed-up value is the target of the PRM at that agent step; the PRM
reads one scalar z per step at the step's boundary token, its value tanh(z) in [-1, 1], and is
fit by squared error in logit space. Only trees whose root value is not near +-1 (neither
always right nor always wrong) are kept.

Shapes: `[N]` one entry per tree node; `[B, T]` is (transcript, token).
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def grade_terminal(correct: bool) -> float:
  """A terminal node's reward (MASPRM, method section): +1 if the exact checker accepts the
  final answer, -1 otherwise."""
  return 1.0 if correct else -1.0


def value_targets(value_sum: jax.Array, visits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each MCTS node's PRM target (MASPRM, method section): its mean backed-up return,

  y_n = W_n / N_n   in [-1, 1],

  from the summed returns `value_sum: float32[N]` and visit counts `visits: int32[N]`.
  Returns `(y: float32[N], visited: bool[N])`; an unvisited node has no target (y 0, visited
  False).
  """
  chex.assert_rank([value_sum, visits], 1)
  chex.assert_equal_shape([value_sum, visits])
  visited = visits > 0
  mean = value_sum.astype(jnp.float32) / jnp.maximum(visits, 1).astype(jnp.float32)
  return jnp.where(visited, mean, 0.0), visited


def informative_tree(root_value: float, *, low: float = -0.7, high: float = 0.7) -> bool:
  """Whether a search tree is kept for training (MASPRM's data filter): its root's mean value
  lies in [low, high] (bounds included), so its branches are neither almost all right nor
  almost all wrong."""
  return low <= float(root_value) <= high


def prm_value(z: jax.Array) -> jax.Array:
  """The PRM's value of a partial transcript from its scalar head output: V = tanh(z)."""
  return jnp.tanh(z)


def logit_targets(y: jax.Array, *, clip: float = 0.95) -> jax.Array:
  """The regression target in logit space: z* = atanh(clip(y, -c, c)), c = `clip` < 1 so that
  terminal values y = +-1 give finite targets (atanh(0.95) ~ 1.83)."""
  return jnp.arctanh(jnp.clip(y, -clip, clip))


def masprm_loss(z: jax.Array, y: jax.Array, mask: jax.Array, *, clip: float = 0.95
                ) -> jax.Array:
  """MASPRM's training objective (method section): squared error in logit space,

  L = sum_{b,t} m_{b,t} (z_{b,t} - atanh(clip(y_{b,t}, -c, c)))^2 / max(sum m, 1),

  `z, y, mask: float32[B, T]`; m is 1 at each agent step's boundary token, where the head z is
  read and y holds that step's `value_targets` value; y off the mask is ignored.
  """
  chex.assert_rank(z, 2)
  chex.assert_equal_shape([z, y, mask])
  mask = mask.astype(jnp.float32)
  targets = logit_targets(jnp.where(mask > 0, y.astype(jnp.float32), 0.0), clip=clip)
  return (mask * (z.astype(jnp.float32) - targets)**2).sum() / jnp.maximum(mask.sum(), 1.0)
