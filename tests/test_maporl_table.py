"""`launch.reproduce --table=maporl` on finished runs: cells, per-turn means, alone vs team,
the paired test, reuse of finished runs."""
import json
import os

import numpy as np
import pytest

from experiments.tables import maporl as table


def _fake_run(runs_dir, alpha, seed, first, last):
  """A finished run whose step-0 / last evaluations give greedy turn accuracies `first` /
  `last` (sampled: half of greedy; agent p alone: the final greedy turn minus 0.1 (p + 1))."""
  config = table.run_config(alpha, "tiny", seed)
  workdir = table.run_dir(str(runs_dir), config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step, turns in ((0, first), (config.total_steps, last)):
      record = {"step": step, "eval/greedy_success": turns[-1]}
      for mode, scale in (("greedy", 1.0), ("sampled", 0.5)):
        for prefix, minus in (("", 0.0), ("alone0/", 0.1), ("alone1/", 0.2)):
          for k, value in enumerate(turns):
            record[f"eval/{prefix}{mode}_turn{k + 1}_accuracy"] = scale * value - minus
          record[f"eval/{prefix}{mode}_accuracy"] = scale * turns[-1] - minus
      f.write(json.dumps(record) + "\n")
  return workdir


def test_table_from_finished_runs(tmp_path, monkeypatch):
  base = (0.25, 0.25, 0.25)
  for seed, last in enumerate(((0.3, 0.4, 0.5), (0.3, 0.4, 0.3))):
    _fake_run(tmp_path, 0.0, seed, base, last)
  for alpha in table.ALPHAS[1:]:
    _fake_run(tmp_path, alpha, 0, base, (0.25, 0.25, 0.26))
  monkeypatch.setattr(table, "_train", lambda *a: pytest.fail(f"reran a finished run {a}"))
  runs = table.run_all("tiny", 2, 1, str(tmp_path))
  assert sorted(runs) == [(0.0, 0), (0.0, 1), (0.5, 0), (1.0, 0), (2.0, 0)]

  # 256 questions: the base is right on the first 64; a trained team on the first 100 and
  # wrong on 4 of the base's (gained 40, lost 4).
  base_acc = np.zeros(256)
  base_acc[:64] = 1.0
  trained_acc = np.zeros(256)
  trained_acc[4:104] = 1.0
  monkeypatch.setattr(table, "final_turn_accuracy", lambda config, directories: (
      base_acc if len(directories) == 1 else trained_acc))
  monkeypatch.setattr(table, "_verifier_evals", lambda config: {
      "eval/auc": 0.7, "eval/examples": 3072, "eval/correct_fraction": 0.1,
      "eval/score_correct": 0.6, "eval/score_wrong": 0.4})
  md_path, csv_path, png_path = table.write_table(runs, "tiny", 2, 1, str(tmp_path / "out"))
  md = open(md_path).read()
  lines = md.splitlines()
  row = next(line for line in lines if line.startswith("| MAPoRL, alpha 0 |"))
  # Greedy turns: 30 ± 0, 40 ± 0, (50 + 30) / 2 = 40 ± 10; sampled: half of those.
  assert "| 30.0 ± 0.0 | 40.0 ± 0.0 | 40.0 ± 10.0 | 15.0 ± 0.0 | 20.0 ± 0.0 | 20.0 ± 5.0 |" in row
  p = table.sign_test_p_value(40, 4)
  assert row.endswith(f"| 40 / 4, p = {p:.2g}; 40 / 4, p = {p:.2g} |") and p < 1e-7
  base_row = next(line for line in lines if line.startswith("| Base model (both agents)"))
  assert "| 25.0 ± 0.0 | 25.0 ± 0.0 | 25.0 ± 0.0 | 12.5 ± 0.0 |" in base_row
  alone = next(line for line in lines if line.startswith("| MAPoRL, alpha 0 |")
               and line != row)
  # Team 40 ± 10; agent 1 alone 30 ± 10; agent 2 alone 20 ± 10 (greedy).
  assert alone.startswith("| MAPoRL, alpha 0 | 40.0 ± 10.0 | 30.0 ± 10.0 | 20.0 ± 10.0 |")
  assert "- alpha 0: trained team (40.0) > base team (25.0), greedy final turn: holds" in md
  assert "- alpha 2: trained team (26.0) > base team (25.0), greedy final turn: holds only " \
         "within noise" in md
  assert "**0.700**" in md
  assert os.path.getsize(png_path) > 0 and "paired_p_seed1" in open(csv_path).read()
