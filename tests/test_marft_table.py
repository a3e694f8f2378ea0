"""`launch.reproduce --table=marft` on finished runs: cells, means, the paired test, reuse."""
import json
import math
import os

import numpy as np
import pytest

from experiments.tables import marft as table


def _fake_run(runs_dir, cell, seed, first, last):
  config = table.run_config(cell, "tiny", seed)
  workdir = table.run_dir(str(runs_dir), config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step, (greedy, sampled) in ((0, first), (config.total_steps, last)):
      f.write(json.dumps({"step": step, "eval/greedy_success": greedy,
                          "eval/sampled_success": sampled, "eval/greedy_return": greedy}) + "\n")
  return workdir


def test_table_from_finished_runs(tmp_path, monkeypatch):
  for cell in table.PROFILE_CELLS:
    for seed, last in enumerate((0.30, 0.40)):
      _fake_run(tmp_path, cell, seed, (0.20, 0.25), (last, 0.5))
  for cell in table.ABLATION_CELLS:
    _fake_run(tmp_path, cell, 0, (0.20, 0.25), (0.21, 0.3))
  monkeypatch.setattr(table, "_train", lambda *a: pytest.fail(f"reran a finished run {a}"))
  runs = table.run_all("tiny", 2, 1, str(tmp_path))
  assert len(runs) == 3 * 2 + len(table.ABLATION_CELLS)
  monkeypatch.setattr(table, "paired", lambda config, workdir: {
      "base": 0.2, "trained": 0.35, "gained": 12, "lost": 3, "p": table.sign_test_p_value(12, 3)})
  monkeypatch.setattr(table.credit_toy, "credit_share", lambda key, kind, decider: {
      "credit_share": np.float32(1.0 if kind in ("vdn", "qmix") else 0.5),
      "credit_corr": np.float32(1.0)})
  md_path, csv_path, png_path = table.write_table(runs, "tiny", 2, 1, str(tmp_path / "out"))
  md = open(md_path).read()
  row = next(line for line in md.splitlines() if line.startswith("| Dual (reasoner"))
  # Base 20.0; trained greedy (30 + 40) / 2 = 35.0 ± 5.0; sampled 50; 12 gained / 3 lost.
  assert "| 20.0 ± 0.0 | 35.0 ± 5.0 | 25.0 ± 0.0 | 50.0 ± 0.0 | 35.0 ± 5.0 |" in row
  assert "12 / 3, p = 0.018" in row  # P(X >= 12), X ~ Bin(15, 1/2) = 576 / 32768
  assert "holds" in row
  ablation = next(line for line in md.splitlines() if line.startswith("| Dual, QMIX"))
  assert "within noise" in ablation  # 21 vs 20 on 256 problems
  assert "20.0 -> 35.0, +75.0% relative" in md
  assert "| vdn | first | 1.000 ± 0.000 |" in md and "| shared | second | 0.500 ± 0.000 |" in md
  assert os.path.getsize(png_path) > 0 and "paired_p" in open(csv_path).read()


def test_sign_test_p_value():
  assert table.sign_test_p_value(12, 3) == sum(math.comb(15, i) for i in range(12, 16)) / 2**15
  assert table.sign_test_p_value(0, 0) == 1.0
