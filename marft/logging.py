"""Run logging: `config.json`, `metrics.jsonl` (always), `transcripts.jsonl` (the sampled
episodes, for `launch.inspect`), wandb (offline by default), a progress bar.

Each line of `metrics.jsonl` is `{"step": N, "<name>": value, ...}`; each line of
`transcripts.jsonl` is `{"step": N, ...}`, one action of a sampled episode. On resume, lines past
the restored step are dropped first (all of them when the run starts afresh), so an
interrupted-and-resumed run's files equal an uninterrupted one's.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging
from tqdm import tqdm

WANDB_MODES = ("offline", "online", "disabled")


# Keys that change how a run is logged or laid out on devices, not what it computes.
NON_SEMANTIC_KEYS = ("log", "mesh", "distributed", "max_nonfinite_in_a_row")

# Options added after runs were made, each with the value that computes what runs made before
# it existed computed. A key holding that value is left out of the hash, so a new option never
# orphans a finished run; register every new option here with its neutral value.
NEUTRAL_DEFAULTS: dict[str, Any] = {
    "algo.lr_schedule": "constant",
    "algo.lr_decay_updates": 0,
    "algo.init": "uniform",
    "algo.agent_init_scale": 1.0,
    "algo.mixer_init_scale": 1.0,
    "algo.train_terminal": True,
    "algo.reward_scale": 1.0,
    "algo.epochs": 1,
    "algo.fragment_steps": 0,
    "algo.seeds_in": "vmap",
    "algo.micro_batch_rows": 0,
    "model.remat": "none",
    "model.logprob_chunk": 0,
    "model.enable_thinking": True,
    "model.base": "",
    "algo.critic_warmup_steps": 0,
    "task.prompt_style": "compact",
    "verifier.kind": "model",
    "algo.prm_path": "",
    "algo.prm_coef": 0.0,
    "prm.shaping": False,
}


def _without_neutral(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    dotted = f"{prefix}{key}"
    if dotted in NEUTRAL_DEFAULTS and value == NEUTRAL_DEFAULTS[dotted]:
      continue
    out[key] = _without_neutral(value, f"{dotted}.") if isinstance(value, Mapping) else value
  return out


def config_hash(config_dict: Mapping[str, Any]) -> str:
  """A short stable hash of what a config computes: logging and mesh keys excluded, and so
  are options at their neutral value (`NEUTRAL_DEFAULTS`)."""
  semantic = _without_neutral({k: v for k, v in config_dict.items()
                               if k not in NON_SEMANTIC_KEYS})
  text = json.dumps(semantic, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def _scalar(value: Any) -> float | int:
  value = np.asarray(value)
  if value.size != 1:
    raise ValueError(f"metrics must be scalars, got shape {value.shape}")
  value = value.item()
  return value if isinstance(value, int) else float(value)


def _json_default(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"not JSON-able: {type(value).__name__}")


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a JSON-lines file ([] if it is missing); a torn last line (the process was
  killed mid-write) is dropped."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return records


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All records of a run's `metrics.jsonl`."""
  return read_jsonl(os.path.join(workdir, "metrics.jsonl"))


def truncate_jsonl(path: str, last_step: int) -> None:
  """Keeps the records of `path` up to `last_step` (none when it is negative)."""
  kept = [r for r in read_jsonl(path) if r["step"] <= last_step]
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)


class MetricsLogger:
  """Writes metrics to `workdir/metrics.jsonl`, wandb and a tqdm bar showing `progress_keys`."""

  def __init__(self, workdir: str, config_dict: Mapping[str, Any], *, total_steps: int,
               start_step: int = 0, wandb_mode: str = "offline", project: str = "marft",
               progress_keys: Sequence[str] = ("train/loss",), show_progress: bool = True,
               primary: bool = True):
    if wandb_mode not in WANDB_MODES:
      raise ValueError(f"log.wandb_mode={wandb_mode!r}: expected one of {WANDB_MODES}")
    self.workdir = workdir
    self._primary = primary  # in a multi-process run only process 0 writes anything
    if not primary:
      return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config_dict, f, indent=2, sort_keys=True, default=str)
    # A fresh run (start_step 0) drops everything an earlier, unfinished attempt wrote.
    last_kept = start_step if start_step > 0 else -1
    self._path = os.path.join(workdir, "metrics.jsonl")
    truncate_jsonl(self._path, last_kept)
    self._file = open(self._path, "a")
    self._transcript_path = os.path.join(workdir, "transcripts.jsonl")
    truncate_jsonl(self._transcript_path, last_kept)
    self._transcripts = None
    self._progress_keys = tuple(progress_keys)
    self._shown: dict[str, Any] = {}
    self._bar = tqdm(total=total_steps, initial=start_step, disable=not show_progress,
                     dynamic_ncols=True, desc=os.path.basename(os.path.normpath(workdir)))
    self._wandb = self._init_wandb(config_dict, wandb_mode, project)

  def _init_wandb(self, config_dict, mode: str, project: str):
    if mode == "disabled":
      return None
    try:
      import wandb  # imported lazily: it starts a service process
      run_id = config_hash({"workdir": os.path.abspath(self.workdir), **config_dict})
      return wandb.init(project=project, dir=self.workdir, mode=mode, id=run_id,
                        resume="allow", config=dict(config_dict), reinit="finish_previous")
    except Exception as e:  # a logging backend must never stop training
      logging.warning("wandb (%s) unavailable, logging to metrics.jsonl only: %s", mode, e)
      return None

  def log(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Records scalar metrics for `step` (arrays of size 1 are fine)."""
    record = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    if not self._primary:
      return
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._wandb is not None:
      self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=int(step))
    shown = {k.split("/")[-1]: record[k] for k in self._progress_keys if k in record}
    if shown:
      self._shown.update(shown)
      self._bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else v
                             for k, v in self._shown.items()}, refresh=False)

  def log_transcripts(self, step: int, records: Sequence[Mapping[str, Any]]) -> None:
    """Appends the sampled episodes' actions of `step` to `transcripts.jsonl`."""
    if not self._primary:
      return
    if self._transcripts is None:
      self._transcripts = open(self._transcript_path, "a")
    self._transcripts.writelines(json.dumps({"step": int(step), **r}, default=_json_default)
                                 + "\n" for r in records)
    self._transcripts.flush()

  def advance(self, steps: int = 1) -> None:
    if self._primary:
      self._bar.update(steps)

  def close(self) -> None:
    if not self._primary:
      return
    self._bar.close()
    self._file.close()
    if self._transcripts is not None:
      self._transcripts.close()
    if self._wandb is not None:
      self._wandb.finish()
