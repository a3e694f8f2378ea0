"""launch.sweep: the cartesian grid, a local two-run sweep that reuses finished runs, SLURM."""
import json
import os
import subprocess
import sys

from launch import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "lm_arithmetic.py")


def test_expand_is_the_cartesian_product():
  grid = sweep.expand(["optimizer.lr=1e-3,3e-3", "seed=0,1,2"])
  assert len(grid) == 6
  assert grid[0] == ["--config.optimizer.lr=1e-3", "--config.seed=0"]
  assert grid[-1] == ["--config.optimizer.lr=3e-3", "--config.seed=2"]


def test_local_sweep_runs_each_point_once_and_writes_slurm(tmp_path):
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
  script = tmp_path / "sweep.sbatch"
  subprocess.run([sys.executable, "-m", "launch.sweep", f"--config={CONFIG}", "--sweep=seed=0,1,2",
                  f"--slurm={script}"], cwd=tmp_path, check=True, capture_output=True,
                 env={**os.environ, "PYTHONPATH": ROOT})
  text = script.read_text()
  assert "#SBATCH --array=0-2" in text and text.count("--config.seed=") == 3
