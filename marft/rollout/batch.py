"""TurnBatch: one row per action an agent took in a turn. Only the rollout engine writes it."""
from __future__ import annotations

import flax.struct
import jax
import numpy as np


@flax.struct.dataclass
class TurnBatch:
  """Rows of (prompt + response) tokens with their credit-assignment keys.

  `tokens[b]` is the prompt followed by the response, right-padded; `loss_mask[b, t]` is 1 on
  response tokens; `behavior_logp[b, t]` is the sampling policy's log-probability of
  `tokens[b, t]` on those positions (0 elsewhere). `reward` is the acting role's local reward
  for this turn, `team_reward` the team's reward of the same stage, `episode_return` the team
  return of the whole episode (the chosen path under tree sampling); `invalid` marks a
  response that did not parse, `score` is the engine's scorer's (a verifier's) score of it, 0
  without one. `parent_id` is, for a row of a nested episode (a MATPO worker's), the row of the
  action that started it (the planner's delegation), else -1. Group keys for AT-GRPO are
  `(task_id, role_id, turn_id)`.
  """

  tokens: jax.Array  # int32[B, T]
  loss_mask: jax.Array  # float32[B, T]
  behavior_logp: jax.Array  # float32[B, T]
  policy_id: jax.Array  # int32[B]
  role_id: jax.Array  # int32[B]
  turn_id: jax.Array  # int32[B]
  episode_id: jax.Array  # int32[B]
  task_id: jax.Array  # int32[B]
  branch_id: jax.Array  # int32[B]
  reward: jax.Array  # float32[B]
  team_reward: jax.Array  # float32[B]
  episode_return: jax.Array  # float32[B]
  invalid: jax.Array  # float32[B]
  score: jax.Array  # float32[B]
  parent_id: jax.Array  # int32[B]

  @property
  def num_rows(self) -> int:
    return int(self.tokens.shape[0])

  def select(self, rows: np.ndarray) -> "TurnBatch":
    """The rows at integer indices `rows` (e.g. one policy's rows)."""
    return jax.tree.map(lambda x: x[rows], self)
