"""JAX-native cooperative games with one functional API (see `envs.marl.core`).

  env = envs.marl.make("two_step")
  env = envs.marl.make("matrix", payoff="climbing")            # or "[[11, -30, 0], ...]"
  env = envs.marl.make("meet_grid", size=5, view=1, max_steps=10)
  env = envs.marl.make("jaxmarl", env_id="MPE_simple_spread_v3")  # needs the jaxmarl extra
  env_state, ts = env.reset(key)
  env_state, ts = env.step(key, env_state, actions)   # ts.obs, .state, .avail, .reward, .done
"""
from __future__ import annotations

from typing import Any

from envs.marl import matrix, meet_grid, two_step
from envs.marl.core import Env, TimeStep

ENVS = ("two_step", "matrix", "meet_grid", "jaxmarl")

__all__ = ["ENVS", "Env", "TimeStep", "make"]


def make(name: str, **kwargs: Any) -> Env:
  """The game called `name` (one of `ENVS`), built with its keyword arguments."""
  if name == "two_step":
    return two_step.make(**kwargs)
  if name == "matrix":
    return matrix.make(**kwargs)
  if name == "meet_grid":
    return meet_grid.make(**kwargs)
  if name == "jaxmarl":
    from envs.marl.jaxmarl_adapter import from_jaxmarl  # noqa: PLC0415  (optional dependency)
    return from_jaxmarl(**kwargs)
  raise ValueError(f"unknown env {name!r}; choose from {ENVS}")
