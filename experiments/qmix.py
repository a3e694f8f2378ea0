"""QMIX / VDN jobs on the JAX-native cooperative games of `envs.marl`.

One trainer step is a jitted `lax.scan` over `algo.updates_per_step` QMIX updates, vmapped over
`algo.num_seeds` independent seeds (or, with `algo.seeds_in="sequence"`, run one after another
by `lax.map`; seed i trains from `jax.random.key(config.seed + i)`, so a run with
`num_seeds=S` equals S runs with `num_seeds=1`). `config.total_steps` counts trainer
steps: the run makes `total_steps * updates_per_step` updates per seed.

The job's state is a `marft.train_step.TrainState` whose leading axis is the seed (as it is the
policy axis for LLM jobs): `params` and `opt_state` are the online networks and their
optimizer, `skipped_steps[S]` counts dropped non-finite updates, `rng` is the run's key, and
`extra` holds the rest of each seed's `algorithms.qmix.Runner` (target networks, the episode
replay buffer, per-seed keys and counters), so a checkpoint resumes the run exactly.
Evaluation logs `eval/greedy_return` (mean over seeds; `eval/greedy_return/s<i>` per seed when
there are several).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import envs.marl
from algorithms import qmix
from experiments import common
from marft import trainer
from marft.checkpoint import Checkpointer
from marft.train_step import TrainState

# Keys of `config.algo` read here rather than by `algorithms.qmix.Config`.
JOB_KEYS = ("name", "num_seeds", "updates_per_step", "seeds_in")
SEEDS_IN = ("vmap", "sequence")  # how a step runs its seeds: vmapped, or one after another
_EVAL_TAG = 0x5EED  # folded into a seed's key for its evaluation episodes


def make_env(config: Any) -> envs.marl.Env:
  """The game of `config.env` (`name` plus that game's keyword arguments)."""
  env_cfg = dict(config.env)
  return envs.marl.make(env_cfg.pop("name"), **env_cfg)


def algo_config(config: Any) -> qmix.Config:
  """The `algorithms.qmix.Config` of `config.algo` (a ValueError names a bad key or value).

  A `linear` learning-rate schedule without `lr_decay_updates` decays over the run's updates
  (`total_steps * updates_per_step`), as JaxMARL's does over its `NUM_UPDATES`.
  """
  values = {k: v for k, v in dict(config.algo).items() if k not in JOB_KEYS}
  if values.get("lr_schedule") == "linear" and not values.get("lr_decay_updates"):
    values["lr_decay_updates"] = int(config.total_steps) * int(config.algo.updates_per_step)
  return qmix.make_config(values)


def seed_keys(config: Any) -> jax.Array:
  """One key per seed: `jax.random.key(config.seed + i)`."""
  return jnp.stack([jax.random.key(config.seed + i) for i in range(config.algo.num_seeds)])


def to_train_state(runner: qmix.Runner, step: jax.Array, rng: jax.Array) -> TrainState:
  """Seed-stacked runners as the trainer's state (what is checkpointed)."""
  extra = {"target_params": runner.target_params, "buffer": runner.buffer, "key": runner.key,
           "t_env": runner.t_env, "updates": runner.updates}
  return TrainState(step=step, params=runner.params, opt_state=runner.opt_state, rng=rng,
                    skipped_steps=runner.skipped, extra=extra)


def to_runner(state: TrainState) -> qmix.Runner:
  """The inverse of `to_train_state`."""
  return qmix.Runner(params=state.params, opt_state=state.opt_state,
                     skipped=state.skipped_steps, **state.extra)


def _chunk_metrics(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """[S, U] per-update metrics -> [S]: means over the chunk, the last value of counters."""
  return {name: values[:, -1] if name == "t_env" else values.mean(-1)
          for name, values in metrics.items()}


def _freeze(value: Any) -> Any:
  """Lists (a payoff table given as one) as tuples, so that env arguments can key a cache."""
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  return value


class Compiled(NamedTuple):
  """The jitted functions of one (env, algorithm config, updates per step)."""

  init: Callable[[jax.Array], qmix.Runner]  # seed keys [S] -> runners [S]
  train_step: Callable[[TrainState], tuple[TrainState, dict[str, jax.Array]]]  # donates
  greedy_returns: Callable[[Any, jax.Array], jax.Array]  # (agent params [S], keys [S]) -> [S]


@functools.lru_cache(maxsize=16)
def compiled(env_items: tuple[tuple[str, Any], ...], cfg: qmix.Config,
             updates_per_step: int, seeds_in: str = "vmap") -> Compiled:
  """Built once per process for equal arguments, so jobs that differ only in their schedule,
  seed or logging (a resumed run, a table's runs) share compilations."""
  env_cfg = dict(env_items)
  env = envs.marl.make(env_cfg.pop("name"), **env_cfg)
  update = qmix.make_update(cfg, env)
  # Seeds vmapped, or in sequence through lax.map (on 2 CPU cores 1.06-1.09x the env steps/s of
  # vmap on MPE and SMAX, 4 seeds); both compute the same runs.
  over_seeds = (lambda f, xs: jax.vmap(f)(xs)) if seeds_in == "vmap" else jax.lax.map

  def chunk(runner: qmix.Runner, first: jax.Array) -> tuple[qmix.Runner, dict[str, jax.Array]]:
    return jax.lax.scan(update, runner, first + jnp.arange(updates_per_step))

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
    # The updates' indices are one value for every seed (unbatched, closed over), so the learn
    # phase's lax.cond stays a branch under vmap.
    first = state.step * updates_per_step
    runner, metrics = over_seeds(lambda r: chunk(r, first), to_runner(state))
    metrics = _chunk_metrics(metrics)
    metrics["finite"] = (runner.skipped == state.skipped_steps).astype(jnp.float32)
    return to_train_state(runner, state.step + 1, state.rng), metrics

  @jax.jit
  def greedy_returns(agent_params: Any, keys: jax.Array) -> jax.Array:
    return over_seeds(lambda pk: qmix.greedy_return(env, *pk, cfg.eval_episodes),
                      (agent_params, keys))

  init = jax.jit(jax.vmap(lambda key: qmix.init_runner(cfg, env, key)))
  return Compiled(init=init, train_step=train_step, greedy_returns=greedy_returns)


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The QMIX/VDN job of `config` (see `experiments/configs/qmix_*.py`).

  The tiny networks run on one device; `mesh` is not used. A bad `env` or `algo` key or value
  raises `experiments.common.ConfigError`.
  """
  del mesh
  num_seeds = int(config.algo.num_seeds)
  updates_per_step = int(config.algo.updates_per_step)
  seeds_in = config.algo.get("seeds_in", "vmap")
  try:
    make_env(config)  # validates the env's name and arguments
    cfg = algo_config(config)
    if num_seeds < 1 or updates_per_step < 1:
      raise ValueError(f"algo.num_seeds={num_seeds} and algo.updates_per_step="
                       f"{updates_per_step} must be >= 1")
    if seeds_in not in SEEDS_IN:
      raise ValueError(f"algo.seeds_in={seeds_in!r}: choose from {SEEDS_IN}")
  except (TypeError, ValueError) as e:  # an unknown env or key, an impossible value
    raise common.ConfigError(str(e)) from e
  env_items = tuple(sorted((k, _freeze(v)) for k, v in dict(config.env).items()))
  try:
    fns = compiled(env_items, cfg, updates_per_step, seeds_in)
  except TypeError:  # an unhashable env argument: build without the cache
    fns = compiled.__wrapped__(env_items, cfg, updates_per_step, seeds_in)
  keys = seed_keys(config)
  state = to_train_state(fns.init(keys), jnp.zeros((), jnp.int32),
                         jax.random.key_data(jax.random.key(config.seed)))
  eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, _EVAL_TAG))(keys)

  def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    del batch  # the data are collected inside the step
    return fns.train_step(state)

  def batch_fn(state: TrainState) -> tuple[None, dict[str, Any]]:
    del state
    return None, {}

  def eval_fn(state: TrainState) -> dict[str, float]:
    returns = np.asarray(fns.greedy_returns(state.params["agent"], eval_keys))
    metrics = {"eval/greedy_return": float(returns.mean())}
    if num_seeds > 1:
      metrics.update({f"eval/greedy_return/s{i}": float(r) for i, r in enumerate(returns)})
    return metrics

  return trainer.Job(state=state, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn,
                     progress_keys=("eval/greedy_return", "train/loss"))


def train_or_reuse(config: Any, workdir: str) -> TrainState:
  """The final train state of `config` in `workdir`: restored if the run finished, else
  trained (or resumed) by the shared trainer loop."""
  job = build(config, None)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    if checkpointer.latest_step == config.total_steps:
      print(f"reuse: {workdir}", flush=True)
      return checkpointer.restore_latest(job.state)
  finally:
    checkpointer.close()
  print(f"run: {workdir} (env={config.env.name}, mixer={config.algo.mixer})", flush=True)
  return trainer.run(config, workdir, job)
