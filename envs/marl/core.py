"""The functional API every cooperative game in `envs.marl` shares.

An environment is an `Env`: its sizes and two pure functions,

  reset(key) -> (env_state, TimeStep)
  step(key, env_state, actions: int32[N]) -> (env_state, TimeStep)

where a `TimeStep` holds what the agents and a centralised learner see after the transition:
per-agent observations `obs[N, O]`, the global state `state[S]`, the available actions
`avail[N, A]`, the team reward of the transition and whether the episode ended. Everything is
jittable and vmappable; an episode never runs past `max_steps` transitions.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TimeStep:
  """What a transition returns (and `reset`, with reward 0 and done False)."""

  obs: jax.Array  # float32[N, O]: per-agent observations
  state: jax.Array  # float32[S]: global state (for a centralised critic or mixer)
  avail: jax.Array  # bool[N, A]: actions each agent may take next
  reward: jax.Array  # float32[]: team reward of the transition
  done: jax.Array  # bool[]: the episode has terminated


class Env(NamedTuple):
  """A cooperative game: static sizes and the pure `reset` / `step` functions."""

  name: str
  num_agents: int
  num_actions: int
  obs_dim: int
  state_dim: int
  max_steps: int  # the longest episode, in transitions
  reset: Callable[[jax.Array], tuple[Any, TimeStep]]
  step: Callable[[jax.Array, Any, jax.Array], tuple[Any, TimeStep]]


def timestep(obs: jax.Array, state: jax.Array, avail: jax.Array, reward: jax.Array | float,
             done: jax.Array | bool) -> TimeStep:
  """A `TimeStep` with the canonical dtypes (float32 observations and reward, bool masks)."""
  chex.assert_rank([obs, state, avail], [2, 1, 2])
  return TimeStep(obs=jnp.asarray(obs, jnp.float32), state=jnp.asarray(state, jnp.float32),
                  avail=jnp.asarray(avail, bool), reward=jnp.asarray(reward, jnp.float32),
                  done=jnp.asarray(done, bool))
