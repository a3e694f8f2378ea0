"""MAPoRL end to end (slow): the default job (`launch.train --config=experiments/configs/
maporl.py`, tiny, alpha 0, the trained verifier), its compile budget, and its evaluations
reproduced apart from the run: the base and the exported agents discuss the fixed test
questions again with the verifier, and their final-turn accuracies are the run's own step-0 and
final greedy evaluations. About 4 minutes on 2 cores with the base model and the verifier
cached (10 without): `pytest -m slow tests/test_maporl_e2e.py`. The default run checks the
job's pieces in `tests/algorithms/test_maporl_job.py` (one iteration, an update that follows
the advantages, resuming).
"""
import json
import os
import subprocess
import sys

import pytest

from experiments import rl
from experiments.tables import maporl as table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_default_job_and_its_evaluations_reproduced(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config=experiments/configs/maporl.py",
       f"--workdir={tmp_path}", "--config.log.wandb_mode=disabled"],
      cwd=ROOT, capture_output=True, text=True, timeout=1800,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  evals = [r for r in records if "eval/greedy_accuracy" in r]
  assert [r["step"] for r in evals] == [0, 10, 20, 30]
  for phase in ("rollout", "eval"):  # shapes are closed by the first evaluation after step 0
    assert evals[1][f"perf/{phase}_compiles"] == evals[-1][f"perf/{phase}_compiles"], phase
  config = table.run_config(table.SWEEP_CELLS[0], "tiny", 0)
  cwd = os.getcwd()
  os.chdir(ROOT)  # the cached base model and verifier live under the repository's runs/
  try:
    base = table.final_turn_accuracy(config, [rl.base_model_path(config)])
    trained = table.final_turn_accuracy(config, [str(tmp_path / "hf_policy0"),
                                                 str(tmp_path / "hf_policy1")])
  finally:
    os.chdir(cwd)
  assert base.mean() == pytest.approx(evals[0]["eval/greedy_accuracy"], abs=1e-9)
  assert trained.mean() == pytest.approx(evals[-1]["eval/greedy_accuracy"], abs=1e-9)
  # No direction is asserted: at this scale the paper's gain does not appear (results/maporl.md).
