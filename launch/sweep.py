"""Cartesian sweeps of `--config.*` overrides: a local process pool, or a SLURM array script.

  python -m launch.sweep --config=experiments/configs/at_grpo.py \\
      --sweep='optimizer.lr=1e-5,3e-5' --sweep='seed=0,1,2' [--workers=2]
  python -m launch.sweep ... --slurm=sweep.sbatch      # write the array script instead

Each run is `python -m launch.train --config=... --config.key=value ...` in
`runs/<config name>-<config hash>`, so a run that already finished (its final checkpoint
exists) is skipped, and an interrupted one resumes.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from absl import app, flags

_CONFIG = flags.DEFINE_string("config", None, "Experiment config file.", required=True)
_SWEEP = flags.DEFINE_multi_string("sweep", [], "key=v1,v2,... (repeat for more axes).")
_WORKERS = flags.DEFINE_integer("workers", 1, "Runs at once in the local pool.")
_SLURM = flags.DEFINE_string("slurm", None, "Write a SLURM array script here instead of running.")


def expand(axes: Sequence[str]) -> list[list[str]]:
  """`["a=1,2", "b=x"]` -> `[["--config.a=1", "--config.b=x"], ["--config.a=2", ...]]`."""
  parsed = []
  for axis in axes:
    key, sep, values = axis.partition("=") if isinstance(axis, str) else ("", "", "")
    if not sep or not key or not values:
      raise app.UsageError(f"--sweep={axis!r}: expected key=value1,value2,...")
    parsed.append([f"--config.{key}={value}" for value in values.split(",")])
  return [list(combo) for combo in itertools.product(*parsed)]


def run_command(config: str, overrides: Sequence[str]) -> list[str]:
  return [sys.executable, "-m", "launch.train", f"--config={config}", *overrides]


def slurm_script(config: str, grid: Sequence[Sequence[str]]) -> str:
  """A `sbatch --array` script: task i runs grid point i."""
  lines = ["#!/bin/bash", f"#SBATCH --array=0-{len(grid) - 1}", "#SBATCH --job-name=marft-sweep",
           "", "RUNS=("]
  lines += [f"  {shlex.quote(shlex.join(run_command(config, point)[1:]))}" for point in grid]
  lines += [")", 'eval "python ${RUNS[$SLURM_ARRAY_TASK_ID]}"', ""]
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  grid = expand(_SWEEP.value) if _SWEEP.value else [[]]
  if _SLURM.value:
    with open(_SLURM.value, "w") as f:
      f.write(slurm_script(_CONFIG.value, grid))
    print(f"wrote {_SLURM.value}: {len(grid)} runs")
    return

  def launch(point: list[str]) -> int:
    print("run:", shlex.join(point), flush=True)
    return subprocess.run(run_command(_CONFIG.value, point), env=os.environ).returncode

  with concurrent.futures.ThreadPoolExecutor(max_workers=_WORKERS.value) as pool:
    codes = list(pool.map(launch, grid))
  failed = [shlex.join(p) for p, code in zip(grid, codes) if code != 0]
  print(f"{len(grid) - len(failed)}/{len(grid)} runs finished")
  if failed:
    sys.exit("failed: " + "; ".join(failed))


if __name__ == "__main__":
  app.run(main)
