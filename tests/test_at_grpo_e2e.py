"""The default job end to end: `python -m launch.train` (AT-GRPO, two-role Plan-Path, tiny model).

Slow (about 5 minutes on 2 cores with the base model cached, 7 without): run with
`pytest -m slow tests/test_at_grpo_e2e.py`.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
PAIRED_TASKS = 256


def _run(*args):
  out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=1800, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]


def _greedy_successes(checkpoint, out):
  _run("launch.evaluate", "--task=plan_path", "--workflow=mas", f"--checkpoint={checkpoint}",
       f"--num_tasks={PAIRED_TASKS}", f"--out={out}")
  return np.asarray(json.load(open(f"{out}.json"))["successes"], bool)


def sign_test_p_value(gained: int, lost: int) -> float:
  """One-sided exact sign test on the discordant pairs: P(X >= gained), X ~ Bin(gained + lost,
  1/2) — the chance of at least this many net flips to success if training changed nothing."""
  n = gained + lost
  return sum(math.comb(n, i) for i in range(gained, n + 1)) / 2**n


def test_sign_test_matches_hand_computed_values():
  assert sign_test_p_value(3, 0) == 1 / 8
  assert sign_test_p_value(2, 1) == 4 / 8  # P(X >= 2) = (3 + 1) / 8
  assert sign_test_p_value(0, 2) == 1.0


@pytest.mark.slow
def test_default_job_improves_plan_path_success(tmp_path):
  _run("launch.train", f"--workdir={tmp_path}", "--config.log.wandb_mode=disabled")
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  evals = [r for r in records if "eval/greedy_success" in r]
  assert [r["step"] for r in evals] == [0, 10, 20, 30]
  config = json.load(open(tmp_path / "config.json"))
  assert config["task"]["name"] == "plan_path" and config["task"]["workflow"] == "mas"
  assert config["task"]["eval_tasks"] == PAIRED_TASKS
  # The exported policy and the base, evaluated apart from the run, reproduce the run's own
  # greedy evaluations at steps 30 and 0 on the same 256 test grids.
  base = _greedy_successes("base", tmp_path / "eval_base")
  trained = _greedy_successes(tmp_path / "hf_policy0", tmp_path / "eval_trained")
  assert base.mean() == evals[0]["eval/greedy_success"]
  assert trained.mean() == evals[-1]["eval/greedy_success"]
  # Paired, greedy: seeds 0 and 1 measured 13 grids gained / 5 lost (sign test p = 0.048) and
  # 11 / 7 (p = 0.24). The gain is not significant at tiny scale (README, "AT-GRPO table"), so
  # this asserts only that training does not lose grids on balance.
  gained, lost = int((trained & ~base).sum()), int((base & ~trained).sum())
  assert gained >= lost, (gained, lost, sign_test_p_value(gained, lost))
