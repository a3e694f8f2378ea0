"""Environments of the `jaxmarl` package (MPE, SMAX, ...) behind the `envs.marl` API.

  env = from_jaxmarl("MPE_simple_spread_v3")
  env = from_jaxmarl("HeuristicEnemySMAX", scenario="3m")

Every agent of the jaxmarl env is one of our agents, in `env.agents` order. Observations are
zero-padded to the longest one and actions to the largest action space (padded actions are
unavailable). The global state is the env's `world_state` observation when it has one (SMAX),
otherwise the agents' padded observations concatenated. `done` is jaxmarl's `__all__` flag,
which time limits also set (so the last step of a timed-out episode is not bootstrapped).
Available actions come from `get_avail_actions` where the env implements it (SMAX), else every
action is available.

The horizon (`Env.max_steps`, the longest episode in transitions) is measured from the env's
behaviour, not read from its `max_steps` attribute: jaxmarl's MPE and SMAX test their step
counter before incrementing it, so an episode of `max_steps = 25` lasts 26 transitions. Where
the env state has a step counter, the horizon is found by stepping a fresh state whose counter
is set near the attribute (one step each, so early endings such as a team's death cannot
shorten it); otherwise a probe episode is stepped until `__all__`.

The team reward follows each benchmark's convention unless `team_reward` is given: the sum over
agents for MPE (what JaxMARL's `MPELogWrapper` and the MPE papers report), the mean for SMAX
(whose allies all receive the same team reward, so it equals JaxMARL's choice of the first
agent's), the mean elsewhere.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from envs.marl.core import Env, TimeStep, timestep

NAME = "jaxmarl"
TEAM_REWARDS = ("mean", "sum")
_PROBE_LIMIT = 100_000  # transitions a probe episode may take before the horizon is an error


def _import_jaxmarl():
  try:
    import jaxmarl  # noqa: PLC0415  (an optional dependency)
  except ImportError as e:
    raise ImportError("env.name='jaxmarl' needs the jaxmarl package: "
                      "pip install -e '.[jaxmarl]'") from e
  return jaxmarl


def default_team_reward(env_id: str) -> str:
  """The benchmark's own return convention: the sum over agents for MPE, else the mean."""
  return "sum" if env_id.upper().startswith("MPE") else "mean"


def _step_counter(env_state: Any) -> tuple[Any, int] | None:
  """The pytree path and value of the env state's step counter (one scalar leaf named `step`)."""
  found = [(path, int(leaf)) for path, leaf in jax.tree_util.tree_flatten_with_path(env_state)[0]
           if path and getattr(path[-1], "name", None) == "step" and jnp.ndim(leaf) == 0]
  return found[0] if len(found) == 1 else None


def _with_counter(env_state: Any, path: Any, value: int) -> Any:
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: jnp.asarray(value, jnp.asarray(leaf).dtype) if p == path else leaf,
      env_state)


def measure_horizon(env_state: Any, step: Any, hint: int | None) -> int:
  """Transitions in the env's longest episode, measured by stepping it from `env_state` (a
  fresh episode's state). `step(key, env_state) -> (env_state, done)` is one transition with
  valid actions; `hint` is the env's `max_steps` attribute, when it has one."""
  key = jax.random.key(0)
  step = jax.jit(step)
  counter = _step_counter(env_state)
  if counter is not None and hint is not None:
    path, start = counter
    for value in range(max(start, hint - 2), hint + 3):
      if bool(step(key, _with_counter(env_state, path, value))[1]):
        return value - start + 1
  # No counter to set (or none that ends the episode near the attribute): a probe episode.
  for t in range(_PROBE_LIMIT):
    env_state, done = step(jax.random.fold_in(key, t), env_state)
    if bool(done):
      return t + 1
  raise ValueError(f"a probe episode did not end within {_PROBE_LIMIT} transitions: pass "
                   "max_steps")


def from_jaxmarl(env_id: str, *, team_reward: str | None = None, max_steps: int | None = None,
                 **env_kwargs: Any) -> Env:
  """Wraps `jaxmarl.make(env_id, **env_kwargs)`; a string `scenario` is a SMAX map name.

  `max_steps`, when given, overrides the measured horizon (episodes are cut there, and a cut
  episode's last step is bootstrapped as if it went on); `team_reward` overrides the
  benchmark's convention (`default_team_reward`).
  """
  team_reward = default_team_reward(env_id) if team_reward is None else team_reward
  if team_reward not in TEAM_REWARDS:
    raise ValueError(f"team_reward={team_reward!r}: choose from {TEAM_REWARDS}")
  jaxmarl = _import_jaxmarl()
  if isinstance(env_kwargs.get("scenario"), str):
    from jaxmarl.environments.smax import map_name_to_scenario  # noqa: PLC0415
    env_kwargs["scenario"] = map_name_to_scenario(env_kwargs["scenario"])
  inner = jaxmarl.make(env_id, **env_kwargs)
  agents = list(inner.agents)
  num_actions = max(int(inner.action_space(a).n) for a in agents)
  action_sizes = jnp.asarray([int(inner.action_space(a).n) for a in agents])
  obs_shapes, state_shapes = jax.eval_shape(inner.reset, jax.random.key(0))
  obs_dim = max(int(jnp.prod(jnp.asarray(obs_shapes[a].shape))) for a in agents)
  has_world_state = "world_state" in obs_shapes
  state_dim = (int(obs_shapes["world_state"].shape[-1]) if has_world_state
               else obs_dim * len(agents))
  base_step_env = type(inner).step_env is not jaxmarl.environments.MultiAgentEnv.step_env
  step_fn = inner.step_env if base_step_env else inner.step

  try:
    jax.eval_shape(inner.get_avail_actions, state_shapes)
    has_avail = True
  except NotImplementedError:
    has_avail = False

  def avail_of(env_state) -> jax.Array:
    within = jnp.arange(num_actions)[None, :] < action_sizes[:, None]
    if not has_avail:
      return within
    given = inner.get_avail_actions(env_state)
    avail = jnp.stack([jnp.pad(jnp.asarray(given[a], bool), (0, num_actions - given[a].shape[0]))
                       for a in agents])
    return avail & within

  def probe_step(key, env_state):
    actions = jnp.argmax(avail_of(env_state), -1)  # the first available action of each agent
    _, env_state, _, dones, _ = step_fn(key, env_state,
                                        {a: actions[i] for i, a in enumerate(agents)})
    return env_state, dones["__all__"]

  if max_steps is not None:
    if max_steps < 1:
      raise ValueError(f"max_steps={max_steps} must be >= 1")
    horizon = max_steps
  else:
    horizon = measure_horizon(inner.reset(jax.random.key(0))[1], probe_step,
                              getattr(inner, "max_steps", None))

  def observe(obs, env_state, reward, done) -> TimeStep:
    padded = jnp.stack([jnp.pad(obs[a].reshape(-1).astype(jnp.float32),
                                (0, obs_dim - obs[a].size)) for a in agents])
    world = obs["world_state"].reshape(-1) if has_world_state else padded.reshape(-1)
    return timestep(obs=padded, state=world, avail=avail_of(env_state), reward=reward,
                    done=done)

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
