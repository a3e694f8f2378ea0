"""`python -m launch.train` end to end: resume after SIGKILL and SIGTERM, config errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_RUN = ["--config=experiments/configs/lm_arithmetic.py", "--config.total_steps=40",
             "--config.checkpoint_every=10", "--config.eval_every=20",
             "--config.log.wandb_mode=disabled", "--config.log.every=1",
             "--config.task.batch_size=32", "--config.task.eval_size=32"]


def _launch(workdir, *extra):
  return subprocess.Popen([sys.executable, "-m", "launch.train", f"--workdir={workdir}",
                           *SMALL_RUN, *extra], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _without_timing(records):
  return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


def _wait_for(path, process, timeout=300):
  deadline = time.time() + timeout
  while not os.path.isdir(path):
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.01)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  out, err = _launch(workdir).communicate(timeout=600)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "40")), err[-3000:]
  return _records(workdir)


@pytest.mark.slow  # by default tests/faults kills an AT-GRPO run and checks the same equality
def test_sigkill_then_resume_gives_identical_metrics(uninterrupted, tmp_path):
  workdir = str(tmp_path)
  process = _launch(workdir)
  _wait_for(os.path.join(workdir, "checkpoints", "20"), process)
  process.send_signal(signal.SIGKILL)
  process.communicate()
  assert process.returncode == -signal.SIGKILL
  assert not os.path.isdir(os.path.join(workdir, "checkpoints", "40")), "run ended before kill"
  resumed = _launch(workdir)
  _, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-3000:]
  got, want = _without_timing(_records(workdir)), _without_timing(uninterrupted)
  assert [r["step"] for r in got] == [r["step"] for r in want]
  assert got == want  # bitwise: floats are written with full repr
  losses = [r["train/loss"] for r in want if "train/loss" in r]
  assert len(losses) == 40 and losses[-1] < losses[0] - 0.5


@pytest.mark.slow  # tests/test_trainer.py checks SIGTERM's checkpoint in-process by default
def test_sigterm_saves_and_resume_matches(uninterrupted, tmp_path):
  workdir = str(tmp_path)
  process = _launch(workdir)
  _wait_for(os.path.join(workdir, "checkpoints", "10"), process)
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=300)
  assert process.returncode == 0, err[-3000:]
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                 if d.isdigit())
  # It stopped early, and the step it stopped at (its last logged step) is checkpointed.
  stopped = max(r["step"] for r in _records(workdir))
  assert 10 <= stopped < 40 and saved[-1] == stopped, (stopped, saved)
  resumed = _launch(workdir)
  _, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-3000:]
  assert _without_timing(_records(workdir)) == _without_timing(uninterrupted)


@pytest.mark.parametrize("flag,message", [
    ("--config.no_such_key=1", "no_such_key"),
    ("--config.total_steps=many", "total_steps"),
    ("--config.log.wandb_mode=cloud", "wandb_mode"),
    ("--config.model.name=gpt5", "model.name"),
])
def test_bad_config_is_one_clear_error_before_compiling(tmp_path, flag, message):
  started = time.time()
  process = _launch(str(tmp_path), flag)
  _, err = process.communicate(timeout=120)
  assert process.returncode != 0
  assert message in err
  assert "Traceback" not in err
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
  assert time.time() - started < 60
