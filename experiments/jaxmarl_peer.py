"""JaxMARL's own QMIX baseline, run from a JaxMARL checkout, for side-by-side comparisons.

JaxMARL's `baselines/QLearning/qmix_rnn.py` is a script, not part of the `jaxmarl` package, so
nothing here fetches it: `root` is a checkout (e.g. `git clone` of FLAIROx/JaxMARL), and
running its QMIX needs the script's own imports (`pip install flashbax hydra-core omegaconf`).
Its `make_train(config, env)` is called with the published recipe (`config/config.yaml` merged
with `config/alg/<recipe>.yaml`), any overrides, wandb disabled, seeds vmapped as its
`single_run` does, but in sequence
(`run_qmix`).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import time
from typing import Any

import jax
import numpy as np

QLEARNING = os.path.join("baselines", "QLearning")


def _qlearning_dir(root: str) -> str:
  path = os.path.join(root, QLEARNING)
  if not os.path.isfile(os.path.join(path, "qmix_rnn.py")):
    raise FileNotFoundError(f"--jaxmarl_root={root!r} is not a JaxMARL checkout: "
                            f"{os.path.join(path, 'qmix_rnn.py')} does not exist")
  return path


def recipe(root: str, name: str, **overrides: Any) -> dict[str, Any]:
  """JaxMARL's config for `name` (e.g. `ql_rnn_mpe`): the main config, the algorithm's on top,
  then `overrides` (upper-case keys, as in the YAML files)."""
  import yaml  # noqa: PLC0415  (comes with the script's hydra / omegaconf)
  path = _qlearning_dir(root)
  with open(os.path.join(path, "config", "config.yaml")) as f:
    config = yaml.safe_load(f)
  with open(os.path.join(path, "config", "alg", f"{name}.yaml")) as f:
    config.update(yaml.safe_load(f))
  config.pop("alg", None)
  config.update(overrides)
  config["WANDB_MODE"] = "disabled"
  config["TOTAL_TIMESTEPS"] = int(float(config["TOTAL_TIMESTEPS"]))  # YAML reads 1e7 as text
  return config


def recipe_for_updates(root: str, name: str, updates: int, **overrides: Any) -> dict[str, Any]:
  """JaxMARL's recipe `name` with `overrides`, one seed, trained for `updates` updates (its
  `TOTAL_TIMESTEPS` is `updates * NUM_ENVS * NUM_STEPS`)."""
  published = recipe(root, name, **overrides)
  return recipe(root, name, NUM_SEEDS=1, **overrides,
                TOTAL_TIMESTEPS=updates * published["NUM_ENVS"] * published["NUM_STEPS"])


def _module(root: str):
  path = os.path.join(_qlearning_dir(root), "qmix_rnn.py")
  spec = importlib.util.spec_from_file_location("jaxmarl_qmix_rnn", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class _Recorder:
  """Stands in for the script's `wandb`: keeps what its per-update callback logs."""

  def __init__(self):
    self.rows: list[dict[str, float]] = []

  def log(self, metrics: dict[str, Any]) -> None:
    self.rows.append({k: float(np.asarray(v)) for k, v in metrics.items()
                      if np.asarray(v).size == 1})


def run_qmix(root: str, config: dict[str, Any], seeds: int, *, curves: bool = True
             ) -> dict[str, Any]:
  """Trains `seeds` seeds of JaxMARL's QMIX one after another (`lax.map`: vmapping its
  orthogonal initialisers hangs on XLA:CPU, see `algorithms.qmix.orthogonal`).

  Returns the env steps trained and the compile and run seconds; with `curves` also the final
  greedy test return per seed (`final_returns[seeds]`, the script's
  `test_returned_episode_returns` after its last update) and the test returns against env
  steps that the script logs every update. Without `curves` (for timing) the script neither
  tests nor logs.
  """
  module = _module(root)
  config = copy.deepcopy(config)
  recorder = _Recorder()
  if curves:
    module.wandb = recorder
    config["WANDB_MODE"] = "offline"  # the script logs through `wandb.log` unless disabled
  else:
    config["TEST_DURING_TRAINING"] = False
  env, _ = module.env_from_config(copy.deepcopy(config))
  train_one = module.make_train(config, env)
  train = jax.jit(lambda keys: jax.lax.map(train_one, keys))
  keys = jax.random.split(jax.random.PRNGKey(config["SEED"]), seeds)
  start = time.perf_counter()
  compiled = train.lower(keys).compile()
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  runner_state = jax.block_until_ready(compiled(keys))["runner_state"]
  run_seconds = time.perf_counter() - start
  out = {"env_steps": int(config["NUM_UPDATES"]) * int(config["NUM_STEPS"]) *
                      int(config["NUM_ENVS"]),
         "compile_seconds": compile_seconds, "run_seconds": run_seconds}
  if curves:
    test_state = runner_state[2]
    out["final_returns"] = np.asarray(test_state["returned_episode_returns"]).reshape(
        seeds, -1).mean(-1)
    per_seed = len(recorder.rows) // seeds
    out["curves"] = [[(row["env_step"], row["test_returned_episode_returns"])
                      for row in recorder.rows[i * per_seed:(i + 1) * per_seed]]
                     for i in range(seeds)]
  return out


def run_or_reuse(root: str, config: dict[str, Any], seeds: int, runs_dir: str
                 ) -> dict[str, Any]:
  """`run_qmix` with curves, kept as `<runs_dir>/jaxmarl_qmix-<config hash>-s<seeds>.json`
  and read back when that file exists."""
  from marft.logging import config_hash  # noqa: PLC0415
  path = os.path.join(runs_dir, f"jaxmarl_qmix-{config_hash(config)}-s{seeds}.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  out = run_qmix(root, config, seeds, curves=True)
  out = {**out, "final_returns": [float(v) for v in out["final_returns"]], "config": config}
  os.makedirs(runs_dir, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(out, f)
  os.replace(path + ".tmp", path)
  return out
