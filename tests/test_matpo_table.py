"""The MATPO table from hand-made run logs: means, the Welch test (closed form for 2 + 2 seeds),
the noise degradation and the rollout split."""
import json

import numpy as np
import pytest

from experiments.tables import matpo as table


def _run(directory, base, final, noise_replaced=0.0, generate=9.0, seconds=10.0):
  directory.mkdir(parents=True)
  evals = [{"step": 0, "eval/greedy_success": base, "eval/sampled_success": base / 2},
           {"step": 20, "eval/greedy_success": final, "eval/sampled_success": final / 2}]
  train = [{"step": 1, "rollout/generate_seconds": generate, "rollout/seconds": seconds,
            "rollout/generate_calls": 6.0, "rollout/iterations": 6.0, "rollout/rows": 100.0,
            "rollout/search_results": 100.0, "rollout/search_replaced": noise_replaced,
            "rollout/search_seconds": 0.1}]
  (directory / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in evals + train))
  return str(directory)


def test_welch_p_matches_the_closed_form_for_two_degrees_of_freedom():
  # t = 0.4 / sqrt(0.02 / 2 + 0.02 / 2) = 2.828, df = 2: p = 1 - t / sqrt(2 + t^2).
  t = 0.4 / np.sqrt(0.02)
  assert table.welch_p([0.5, 0.7], [0.1, 0.3]) == pytest.approx(1 - t / np.sqrt(2 + t * t))
  assert np.isnan(table.welch_p([0.5], [0.1, 0.3]))


def test_write_table_reports_means_relative_gain_degradation_and_split(tmp_path):
  finals = {("single_grpo", 0.0): [0.30, 0.34], ("matpo", 0.0): [0.40, 0.44],
            ("single_grpo", 0.5): [0.20, 0.24], ("matpo", 0.5): [0.38, 0.38]}  # no spread: Welch's test is undefined
  runs = {}
  for cell, values in finals.items():
    for seed, value in enumerate(values):
      runs[(cell, seed)] = _run(tmp_path / "runs" / f"{cell[0]}{cell[1]}{seed}", 0.25, value,
                                noise_replaced=100 * cell[1], generate=8.0 if cell[0] ==
                                "matpo" else 9.0)
  paths = table.write_table(runs, "tiny", 2, 1, str(tmp_path / "results"))
  md = open(paths[0]).read()
  assert "| 0 | 32.0 ± 2.0 | 42.0 ± 2.0 | +31% |" in md  # 42 / 32 - 1
  assert "| 0.5 | 22.0 ± 2.0 | 38.0 ± 0.0 | +73% |" in md
  assert "single agent, GRPO: noise 0.5: +10.0." in md  # 32 -> 22
  assert "MATPO (planner + worker, one model): noise 0.5: +4.0." in md  # 42 -> 38
  assert "noise 0.5: measured replaced fraction 0.500" in md
  assert "MATPO (planner + worker, one model): 20.0% of rollout time outside generation" in md
  assert "1.00 generate calls per engine iteration" in md
  rows = open(paths[1]).read()
  assert "welch_p" in rows and paths[2].endswith(".png")
