"""Checks every experiment config must pass before anything compiles."""
from __future__ import annotations

from typing import Any

import ml_collections

from marft.logging import WANDB_MODES
from marft.models.config import NAMED_CONFIGS

# key -> required type; every experiment config has these, so sweeps and tables can drive any.
COMMON_KEYS: dict[str, type] = {
    "seed": int,
    "total_steps": int,
    "eval_every": int,
    "checkpoint_every": int,
    "log.wandb_mode": str,
}


def base_config(*, total_steps: int, eval_every: int, checkpoint_every: int, log_every: int = 10,
                max_to_keep: int = 3, seed: int = 0) -> ml_collections.ConfigDict:
  """The keys every experiment shares (seed, schedule, logging, mesh); configs add the rest."""
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.total_steps = total_steps
  c.eval_every = eval_every
  c.checkpoint_every = checkpoint_every
  c.log = dict(wandb_mode="offline", project="marft", every=log_every, max_to_keep=max_to_keep,
               transcripts=True)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.distributed = False
  # Updates with a non-finite loss or gradient are skipped and counted; this many in a row stop
  # the run (0: never).
  c.max_nonfinite_in_a_row = 10
  return c


class ConfigError(ValueError):
  """A config that cannot run; the message says which key and why."""


def micro_batch_rows(config: Any, rows: int | None = None) -> int:
  """`algo.micro_batch_rows` (0, the default: no gradient accumulation), checked to be a
  non-negative integer dividing `rows` (the rows of one update) when that is known."""
  algo = config.get("algo", None) or {}
  if not isinstance(algo, (dict, ml_collections.ConfigDict)):
    raise ConfigError(f"algo={algo!r}: the algorithm's settings, a dict")
  value = algo.get("micro_batch_rows", 0)
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ConfigError(f"algo.micro_batch_rows={value!r}: a non-negative integer "
                      "(0: no gradient accumulation)")
  if value and rows is not None and rows % value:
    raise ConfigError(f"algo.micro_batch_rows={value} does not divide the {rows} rows of an "
                      "update")
  return value


def _lookup(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node: Any = config
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(f"config is missing the common key {dotted!r}")
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError on a missing common key, a wrong type or an impossible value."""
  for key, kind in COMMON_KEYS.items():
    value = _lookup(config, key)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
      raise ConfigError(f"{key}={value!r} should be {kind.__name__}")
  if config.total_steps < 0:
    raise ConfigError(f"total_steps={config.total_steps} must be >= 0")
  if config.checkpoint_every < 1:
    raise ConfigError(f"checkpoint_every={config.checkpoint_every} must be >= 1")
  streak = config.get("max_nonfinite_in_a_row", 0)
  if isinstance(streak, bool) or not isinstance(streak, int) or streak < 0:
    raise ConfigError(f"max_nonfinite_in_a_row={streak!r}: a non-negative integer (0: never "
                      "stop on non-finite updates)")
  if config.eval_every < 0:
    raise ConfigError(f"eval_every={config.eval_every} must be >= 0 (0 turns evaluation off)")
  if config.log.wandb_mode not in WANDB_MODES:
    raise ConfigError(f"log.wandb_mode={config.log.wandb_mode!r}: choose from {WANDB_MODES}")
  if "model" in config:
    model = config.model
    name = model.get("name") if isinstance(model, (dict, ml_collections.ConfigDict)) else None
    if not isinstance(name, str) or name not in NAMED_CONFIGS:
      raise ConfigError(f"model.name={name!r}: choose from {sorted(NAMED_CONFIGS)}")
