"""Environments of the `jaxmarl` package (MPE, SMAX, ...) behind the `envs.marl` API.

  pip install -e '.[jaxmarl]'
  env = from_jaxmarl("MPE_simple_spread_v3")
  env = from_jaxmarl("HeuristicEnemySMAX", scenario="3m")

Every agent of the jaxmarl env is one of our agents, in `env.agents` order. Observations are
zero-padded to the longest one and actions to the largest action space (padded actions are
unavailable). The global state is the env's `world_state` observation when it has one (SMAX),
otherwise the agents' padded observations concatenated. The team reward is the mean (or sum)
of the agents' rewards; `done` is jaxmarl's `__all__` flag, which time limits also set (so the
last step of a timed-out episode is not bootstrapped). Available actions come from
`get_avail_actions` where the env implements it (SMAX), else every action is available.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from envs.marl.core import Env, TimeStep, timestep

NAME = "jaxmarl"


def _import_jaxmarl():
  try:
    import jaxmarl  # noqa: PLC0415  (an optional dependency)
  except ImportError as e:
    raise ImportError("env.name='jaxmarl' needs the jaxmarl package: "
                      "pip install -e '.[jaxmarl]'") from e
  return jaxmarl


def from_jaxmarl(env_id: str, *, team_reward: str = "mean", max_steps: int | None = None,
                 **env_kwargs: Any) -> Env:
  """Wraps `jaxmarl.make(env_id, **env_kwargs)`; a string `scenario` is a SMAX map name."""
  if team_reward not in ("mean", "sum"):
    raise ValueError(f"team_reward={team_reward!r}: choose 'mean' or 'sum'")
  jaxmarl = _import_jaxmarl()
  if isinstance(env_kwargs.get("scenario"), str):
    from jaxmarl.environments.smax import map_name_to_scenario  # noqa: PLC0415
    env_kwargs["scenario"] = map_name_to_scenario(env_kwargs["scenario"])
  inner = jaxmarl.make(env_id, **env_kwargs)
  agents = list(inner.agents)
  num_actions = max(int(inner.action_space(a).n) for a in agents)
  action_sizes = jnp.asarray([int(inner.action_space(a).n) for a in agents])
  obs_shapes = jax.eval_shape(inner.reset, jax.random.key(0))[0]
  obs_dim = max(int(jnp.prod(jnp.asarray(obs_shapes[a].shape))) for a in agents)
  has_world_state = "world_state" in obs_shapes
  state_dim = (int(obs_shapes["world_state"].shape[-1]) if has_world_state
               else obs_dim * len(agents))
  horizon = max_steps if max_steps is not None else getattr(inner, "max_steps", None)
  if horizon is None:
    raise ValueError(f"{env_id} has no max_steps attribute: pass max_steps")
  base_step_env = type(inner).step_env is not jaxmarl.environments.MultiAgentEnv.step_env
  step_fn = inner.step_env if base_step_env else inner.step

  try:
    jax.eval_shape(inner.get_avail_actions, jax.eval_shape(inner.reset, jax.random.key(0))[1])
    has_avail = True
  except NotImplementedError:
    has_avail = False

  def observe(obs, env_state, reward, done) -> TimeStep:
    padded = jnp.stack([jnp.pad(obs[a].reshape(-1).astype(jnp.float32),
                                (0, obs_dim - obs[a].size)) for a in agents])
    world = obs["world_state"].reshape(-1) if has_world_state else padded.reshape(-1)
    within = jnp.arange(num_actions)[None, :] < action_sizes[:, None]
    if has_avail:
      given = inner.get_avail_actions(env_state)
      avail = jnp.stack([jnp.pad(jnp.asarray(given[a], bool), (0, num_actions - given[a].shape[0]))
                         for a in agents])
      avail = avail & within
    else:
      avail = within
    return timestep(obs=padded, state=world, avail=avail, reward=reward, done=done)

  def reset(key: jax.Array) -> tuple[Any, TimeStep]:
    obs, env_state = inner.reset(key)
    return env_state, observe(obs, env_state, 0.0, False)

  def step(key: jax.Array, env_state: Any, actions: jax.Array) -> tuple[Any, TimeStep]:
    obs, env_state, rewards, dones, _ = step_fn(key, env_state,
                                                {a: actions[i] for i, a in enumerate(agents)})
    per_agent = jnp.stack([jnp.asarray(rewards[a], jnp.float32) for a in agents])
    reward = per_agent.mean() if team_reward == "mean" else per_agent.sum()
    return env_state, observe(obs, env_state, reward, dones["__all__"])

  return Env(name=f"{NAME}:{env_id}", num_agents=len(agents), num_actions=num_actions,
             obs_dim=obs_dim, state_dim=state_dim, max_steps=int(horizon), reset=reset,
             step=step)
