"""Train: `python -m launch.train [--config=experiments/configs/X.py] [--config.key=value ...]`.

With no flags it runs the default experiment on its embedded config (tiny model, CPU, wandb
offline) in `runs/<config name>-<config hash>`; rerunning the same command resumes it.
Unknown keys and wrong types in `--config.*` overrides, and invalid values, are one error
before anything compiles.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from absl import app, flags, logging
from jax.sharding import Mesh
from ml_collections import config_flags

import experiments.configs
from experiments import agentprm, common, lm, maporl, matpo, ppo, pretrain, prm, qmix, rl, verifier
from marft import sharding, trainer
from marft.checkpoint import UnreadableCheckpoint
from marft.logging import config_hash

DEFAULT_CONFIG = os.path.join(os.path.dirname(experiments.configs.__file__), "at_grpo.py")

_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Run directory (default runs/<config name>-<config hash>).")

# algo.name -> the experiment module whose build(config, mesh) returns a trainer.Job.
JOBS = {"sft": lm, "pretrain": pretrain, "grpo": rl, "qmix": qmix, "marft_ppo": ppo,
        "maporl": maporl, "matpo": matpo, "verifier": verifier, "masprm": prm,
        "agentprm": agentprm, "agentprm_policy": agentprm}


def default_workdir(config_path: str, config_dict: dict) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("runs", f"{name}-{config_hash(config_dict)}")


def _unknown_key_exit(error: Exception) -> None:
  key = str(error).strip("\"'")
  sys.exit(f"FATAL Flags parsing error: the config has no key '{key}' "
           "(check the --config.* overrides against the config file)")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with an unknown `--config.*` key reported as one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"FATAL Flags parsing error: {e}")
  except (AttributeError, KeyError) as e:  # ml_collections' report of a key the config lacks
    _unknown_key_exit(e)


def define_config_flag(default: str = DEFAULT_CONFIG) -> flags.FlagHolder:
  """`--config`; ml_collections reads the `--config.*` overrides already when it is defined."""
  try:
    return config_flags.DEFINE_config_file("config", default,
                                           "Experiment config file (experiments/configs/*.py).")
  except (AttributeError, KeyError) as e:
    _unknown_key_exit(e)


def prepare_run(argv: list[str]) -> tuple[Any, Mesh]:
  """Validated config (one clear error otherwise), distributed set-up and the device mesh."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep the progress bar readable
  config = flags.FLAGS.config
  try:
    common.validate(config)
    if config.algo.name not in JOBS:
      raise common.ConfigError(f"algo.name={config.algo.name!r}: choose from {sorted(JOBS)}")
  except common.ConfigError as e:
    logging.error("invalid config: %s", e)
    sys.exit(f"invalid config: {e}")
  sharding.maybe_initialize_distributed(config.get("distributed", False))
  return config, sharding.make_mesh(**config.mesh)


def main(argv: list[str]) -> None:
  config, mesh = prepare_run(argv)
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename,
                                              config.to_dict())
  logging.info("workdir %s; %s", workdir, sharding.describe(mesh))
  print(f"workdir: {workdir}", flush=True)
  try:
    job = JOBS[config.algo.name].build(config, mesh)
  except common.ConfigError as e:  # found while building (e.g. a mapping missing a role)
    sys.exit(f"invalid config: {e}")
  try:
    trainer.run(config, workdir, job)
  except (trainer.ProvenanceMismatch, UnreadableCheckpoint) as e:
    sys.exit(f"cannot resume: {e}")
  except trainer.RunDirectoryBusy as e:
    sys.exit(f"cannot start: {e}")
  except trainer.NonFiniteLoss as e:
    sys.exit(f"stopped: {e}")


if __name__ == "__main__":
  define_config_flag()
  app.run(main, flags_parser=parse_flags)
