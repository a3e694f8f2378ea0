"""`launch.reproduce --table=at_grpo` on finished runs: cells, mean ± std, CSV, figure, reuse."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.tables import at_grpo as table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_run(runs_dir, regime, seed, first, last, total=None):
  """A run directory whose metrics.jsonl holds step-0 and final evaluations."""
  config = table.run_config("plan_path", regime, "tiny", seed)
  workdir = table.run_dir(str(runs_dir), config)
  os.makedirs(workdir, exist_ok=True)
  steps = (0, config.total_steps if total is None else total)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step, values in zip(steps, (first, last)):
      f.write(json.dumps({"step": step, "train/loss": 0.1}) + "\n")
      f.write(json.dumps({"step": step, **values}) + "\n")
  return workdir


def _evals(greedy, sampled, **extra):
  out = {"eval/greedy_success": greedy, "eval/sampled_success": sampled}
  for prefix, (g, s) in extra.items():
    out.update({f"eval/{prefix}/greedy_success": g, f"eval/{prefix}/sampled_success": s})
  return out


def test_verdict_counts_a_difference_only_beyond_two_standard_errors():
  # 55.5% vs 52.3% on 256 each: SE = sqrt((.555 * .445 + .523 * .477) / 256) = 0.04404.
  assert table.verdict(0.555, 0.523, 256) == "holds only within noise (2 SE = 8.8 points)"
  assert table.verdict(0.625, 0.15, 256) == "holds"  # SE 0.0376: 47.5 points > 7.5
  assert table.verdict(0.5, 0.5, 256) == "does NOT hold"


def test_reproduce_writes_the_table_from_finished_runs(tmp_path):
  runs, results = tmp_path / "runs", tmp_path / "results"
  shared_final = [0.50, 0.75]
  for seed in range(2):
    _fake_run(runs, "single_grpo", seed, _evals(0.10, 0.20, mas=(0.0, 0.0)),
              _evals(0.30, 0.40, mas=(0.125, 0.25)))
    _fake_run(runs, "mas_shared", seed, _evals(0.15, 0.25), _evals(shared_final[seed], 0.6))
    _fake_run(runs, "mas_per_role", seed, _evals(0.15, 0.25, swapped=(0.0, 0.0)),
              _evals(0.9, 0.95, swapped=(0.05, 0.1)))
  out = subprocess.run([sys.executable, "-m", "launch.reproduce", "--table=at_grpo",
                        "--seeds=2", "--tasks=plan_path", f"--runs_dir={runs}",
                        f"--results_dir={results}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "6 of 6 runs done" in out.stdout and "run:" not in out.stdout  # nothing retrained
  md = (results / "at_grpo.md").read_text()
  mean, std = 100 * np.mean(shared_final), 100 * np.std(shared_final)
  assert f"| MAS + AT-GRPO, shared policy | {mean:.1f} ± {std:.1f} (paper 96) |" in md
  assert "| Single agent | 10.0 ± 0.0 (paper 5) |" in md
  assert "| Single-agent GRPO policy, run in the MAS | 12.5 ± 0.0 | 25.0 ± 0.0 | 16.0 |" in md
  assert "| Role-specialised, role policies swapped | 5.0 ± 0.0 | 10.0 ± 0.0 | 6.0 |" in md
  assert "plan_path: MAS + AT-GRPO, shared policy (62.5) > MAS (15.0): holds" in md
  rows = list(csv.DictReader(open(results / "at_grpo.csv")))
  row = next(r for r in rows if r["row"] == "MAS + AT-GRPO, role-specialised"
             and r["metric"] == "sampled_success")
  assert float(row["mean_percent"]) == pytest.approx(95.0) and row["seeds"] == "2"
  assert (results / "at_grpo.png").stat().st_size > 1000


def test_a_run_without_its_final_evaluation_is_not_finished(tmp_path):
  workdir = _fake_run(tmp_path, "mas_shared", 0, _evals(0.1, 0.2), _evals(0.3, 0.4), total=20)
  assert not table.finished(workdir, 40) and table.finished(workdir, 20)


def test_unknown_columns_and_options_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown tasks"):
    table.reproduce(scale="tiny", seeds=1, results_dir=str(tmp_path), runs_dir=str(tmp_path),
                    tasks=("chess",))


def test_missing_runs_are_launched_with_their_cell_and_seed(tmp_path, monkeypatch):
  commands = []
  monkeypatch.setattr(table, "_pretrain_base", lambda task, model: None)
  monkeypatch.setattr(table.subprocess, "run",
                      lambda command, env: commands.append(command) or
                      subprocess.CompletedProcess(command, 0))
  cells = table.run_all("tiny", 2, str(tmp_path), tasks=("sokoban",))
  assert len(commands) == 6 and len(cells) == 6
  want = table.run_dir(str(tmp_path), table.run_config("sokoban", "mas_per_role", "tiny", 1))
  assert [c[3:] for c in commands if c[3].endswith(":sokoban,mas_per_role,tiny")] == [
      [f"--config={table.CONFIG_FILE}:sokoban,mas_per_role,tiny", "--config.seed=0",
       f"--workdir={cells['sokoban', 'mas_per_role', 0]}"],
      [f"--config={table.CONFIG_FILE}:sokoban,mas_per_role,tiny", "--config.seed=1",
       f"--workdir={want}"]]
