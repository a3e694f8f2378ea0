"""The two-step game of QMIX (Rashid et al. 2018, Fig. 3 and Table 1).

Two agents, two actions each (A = 0, B = 1). In state 1 no reward is given and agent 1's action
alone picks the next state: A -> 2A, B -> 2B (agent 2's action does not matter). In the second
state both agents act once more, the team receives the payoff of the joint action and the
episode ends:

  2A: [[7, 7],      2B: [[0, 1],
       [7, 7]]           [1, 8]]      (rows: agent 1's action, columns: agent 2's)

The optimal joint policy (B, then B, B) returns 8; a policy that cannot represent how much
agent 1's choice in 2B depends on agent 2's settles for the safe 7. Observations and the global
state are the one-hot current state (1, 2A, 2B); after the episode ends they are all zero.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs.marl.core import Env, TimeStep, timestep

NAME = "two_step"
STATE_NAMES = ("1", "2A", "2B")
PAYOFF_2A = np.full((2, 2), 7.0, np.float32)
PAYOFF_2B = np.array([[0.0, 1.0], [1.0, 8.0]], np.float32)
_TERMINAL = 3


def _observe(stage: jax.Array, reward: jax.Array | float, done: jax.Array | bool) -> TimeStep:
  one_hot = jax.nn.one_hot(stage, 3)  # the terminal stage (3) is all zeros
  return timestep(obs=jnp.stack([one_hot, one_hot]), state=one_hot,
                  avail=jnp.ones((2, 2), bool), reward=reward, done=done)


def reset(key: jax.Array) -> tuple[jax.Array, TimeStep]:
  """State 1 (the env state is the stage: 0 = 1, 1 = 2A, 2 = 2B, 3 = ended)."""
  del key
  stage = jnp.int32(0)
  return stage, _observe(stage, 0.0, False)


def step(key: jax.Array, stage: jax.Array, actions: jax.Array) -> tuple[jax.Array, TimeStep]:
  """One transition; `actions` is int32[2]. Stepping an ended episode changes nothing."""
  del key
  payoffs = jnp.stack([jnp.asarray(PAYOFF_2A), jnp.asarray(PAYOFF_2B)])
  first = stage == 0
  second = (stage == 1) | (stage == 2)
  reward = jnp.where(second, payoffs[jnp.clip(stage - 1, 0, 1), actions[0], actions[1]], 0.0)
  next_stage = jnp.where(first, 1 + actions[0], jnp.int32(_TERMINAL)).astype(jnp.int32)
  return next_stage, _observe(next_stage, reward, next_stage == _TERMINAL)


def make() -> Env:
  return Env(name=NAME, num_agents=2, num_actions=2, obs_dim=3, state_dim=3, max_steps=2,
             reset=reset, step=step)
