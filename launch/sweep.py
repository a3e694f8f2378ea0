"""Cartesian sweeps of `--config.*` overrides: a local process pool, or a SLURM array script.

  python -m launch.sweep --config=experiments/configs/at_grpo.py \\
      --sweep='optimizer.lr=1e-5,3e-5' --sweep='seed=0,1,2' [--workers=2]
  python -m launch.sweep ... --slurm=sweep.sbatch      # write the array script instead
  python -m launch.sweep ... --slurm=sweep.sbatch --slurm_nodes=4 --slurm_gpus_per_node=8 \\
      --slurm_time=24:00:00 --slurm_partition=gpu   # each run on 4 nodes (docs/scale_out.md)

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
_SLURM_NODES = flags.DEFINE_integer(
    "slurm_nodes", 1, "Nodes per run; above 1, one process per node with "
    "--config.distributed=True.")
_SLURM_GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 0, "GPUs per node (0: no GPU request).")
_SLURM_TIME = flags.DEFINE_string("slurm_time", None, "Time limit per run, e.g. 24:00:00.")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", None, "SLURM partition.")
_SLURM_LOGS = flags.DEFINE_string("slurm_logs", "slurm-logs",
                                  "Directory of the per-task logs (created now).")


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


def slurm_script(config: str, grid: Sequence[Sequence[str]], *, nodes: int = 1,
                 gpus_per_node: int = 0, time: str | None = None, partition: str | None = None,
                 logs: str = "slurm-logs", chdir: str | None = None) -> str:
  """A `sbatch --array` script: task i runs grid point i in `chdir`, on `nodes` nodes.

  Task i logs to `logs/marft-sweep-<array job id>_<i>.out`. With `nodes > 1` the run is `srun`
  of one process per node with `--config.distributed=True`; `jax.distributed.initialize()`
  reads the coordinator, process count and id from srun's environment. `JAX_LOCAL_DEVICE_IDS`
  gives each such process all its node's GPUs (JAX would otherwise give it only the GPU
  numbered `SLURM_LOCALID`).
  """
  if nodes < 1 or gpus_per_node < 0:
    raise app.UsageError(f"--slurm_nodes={nodes} must be >= 1 and --slurm_gpus_per_node="
                         f"{gpus_per_node} >= 0")
  options = ["--job-name=marft-sweep", f"--array=0-{len(grid) - 1}", f"--nodes={nodes}",
             "--ntasks-per-node=1", f"--output={os.path.join(logs, '%x-%A_%a.out')}"]
  options += [f"--gpus-per-node={gpus_per_node}"] * bool(gpus_per_node)
  options += [f"--time={time}"] * bool(time) + [f"--partition={partition}"] * bool(partition)
  options += [f"--chdir={chdir}"] * bool(chdir)
  lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in options), "set -euo pipefail", ""]
  launcher = "python"
  if nodes > 1:
    if gpus_per_node:
      lines.append(f"export JAX_LOCAL_DEVICE_IDS={','.join(map(str, range(gpus_per_node)))}")
    launcher = f"srun --nodes={nodes} --ntasks-per-node=1 python"
    grid = [[*point, "--config.distributed=True"] for point in grid]
  lines.append("RUNS=(")
  lines += [f"  {shlex.quote(shlex.join(run_command(config, point)[1:]))}" for point in grid]
  lines += [")", 'echo "task ${SLURM_ARRAY_TASK_ID}: ${RUNS[$SLURM_ARRAY_TASK_ID]}"',
            f'eval "{launcher} ${{RUNS[$SLURM_ARRAY_TASK_ID]}}"', ""]
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  grid = expand(_SWEEP.value) if _SWEEP.value else [[]]
  if _SLURM.value:
    logs = os.path.abspath(_SLURM_LOGS.value)
    script = slurm_script(_CONFIG.value, grid, nodes=_SLURM_NODES.value,
                          gpus_per_node=_SLURM_GPUS.value, time=_SLURM_TIME.value,
                          partition=_SLURM_PARTITION.value, logs=logs, chdir=os.getcwd())
    os.makedirs(logs, exist_ok=True)  # sbatch does not create the --output directory
    with open(_SLURM.value, "w") as f:
      f.write(script)
    print(f"wrote {_SLURM.value}: {len(grid)} runs; submit with `sbatch {_SLURM.value}`, "
          f"logs in {logs}")
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
