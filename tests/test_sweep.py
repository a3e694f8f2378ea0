"""launch.sweep: the cartesian grid, a local two-run sweep that reuses finished runs, SLURM."""
import json
import os
import subprocess
import sys

import pytest

from launch import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "lm_arithmetic.py")


def test_expand_is_the_cartesian_product():
  grid = sweep.expand(["optimizer.lr=1e-3,3e-3", "seed=0,1,2"])
  assert len(grid) == 6
  assert grid[0] == ["--config.optimizer.lr=1e-3", "--config.seed=0"]
  assert grid[-1] == ["--config.optimizer.lr=3e-3", "--config.seed=2"]


@pytest.mark.slow  # four launch.train processes; the SLURM tests check each point's command
def test_local_sweep_runs_each_point_once_and_reuses_finished_runs(tmp_path):
  def run():
    return subprocess.run(
        [sys.executable, "-m", "launch.sweep", f"--config={CONFIG}", "--sweep=seed=0,1",
         "--sweep=total_steps=3", "--sweep=eval_every=3", "--sweep=log.wandb_mode=disabled",
         "--sweep=task.eval_size=8", "--workers=2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT})

  out = run()
  assert out.returncode == 0, out.stderr[-3000:]
  assert "2/2 runs finished" in out.stdout
  runs = sorted(os.listdir(tmp_path / "runs"))
  assert len(runs) == 2 and all(r.startswith("lm_arithmetic-") for r in runs)
  seeds = {json.load(open(tmp_path / "runs" / r / "config.json"))["seed"] for r in runs}
  assert seeds == {0, 1}
  before = [open(tmp_path / "runs" / r / "metrics.jsonl").read() for r in runs]
  assert run().returncode == 0  # finished runs are reused: nothing is trained again
  assert [open(tmp_path / "runs" / r / "metrics.jsonl").read() for r in runs] == before


def _stub(directory, name):
  path = directory / name
  path.write_text(f'#!/bin/bash\necho "RAN {name} $*"\n')
  path.chmod(0o755)


def test_multi_node_slurm_script_runs_the_right_point_per_array_task(tmp_path):
  script, logs = tmp_path / "sweep.sbatch", tmp_path / "logs"
  out = subprocess.run(
      [sys.executable, "-m", "launch.sweep", f"--config={CONFIG}", "--sweep=seed=0,1,2",
       "--sweep=optimizer.lr=1e-3,3e-3", f"--slurm={script}", "--slurm_nodes=2",
       "--slurm_gpus_per_node=8", "--slurm_time=02:00:00", "--slurm_partition=gpu",
       f"--slurm_logs={logs}"],
      cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  assert logs.is_dir()
  text = script.read_text()
  header = [line for line in text.splitlines() if line.startswith("#SBATCH")]
  assert header == ["#SBATCH --job-name=marft-sweep", "#SBATCH --array=0-5",
                    "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
                    f"#SBATCH --output={logs}/%x-%A_%a.out", "#SBATCH --gpus-per-node=8",
                    "#SBATCH --time=02:00:00", "#SBATCH --partition=gpu",
                    f"#SBATCH --chdir={tmp_path}"]
  assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
  # srun and python replaced by stubs that print the command they were given.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _stub(bin_dir, "srun")
  _stub(bin_dir, "python")
  grid = sweep.expand(["seed=0,1,2", "optimizer.lr=1e-3,3e-3"])
  for task, point in enumerate(grid):
    ran = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, check=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": str(task)})
    expected = ["RAN", "srun", "--nodes=2", "--ntasks-per-node=1", "python", "-m",
                "launch.train", f"--config={CONFIG}", *point, "--config.distributed=True"]
    assert ran.stdout.splitlines()[-1].split() == expected
  assert subprocess.run(["bash", str(script)], capture_output=True,
                        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "6"}
                        ).stdout.count(b"RAN") == 0  # past the array: nothing runs
  exported = [line for line in text.splitlines() if line.startswith("export ")]
  assert exported == ["export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"]


def test_single_node_slurm_script_runs_python_without_distributed(tmp_path):
  script = tmp_path / "one.sbatch"
  script.write_text(sweep.slurm_script("c.py", sweep.expand(["seed=3"])))
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _stub(bin_dir, "python")
  ran = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True,
                       env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "0"})
  assert ran.stdout.splitlines()[-1] == "RAN python -m launch.train --config=c.py --config.seed=3"
  assert "--gpus-per-node" not in script.read_text() and "srun" not in script.read_text()
