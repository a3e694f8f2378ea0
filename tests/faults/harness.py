"""Kills a `python -m launch.train` run again and again, resumes it each time, and compares it
with the same run left alone.

A kill comes at a random moment: mostly after the attempt has logged a new step (inside a
rollout, an update, an evaluation or a checkpoint write: checkpoints are written every step or
two, so many kills land inside an asynchronous save), sometimes while it is still starting
(restoring, compiling). SIGKILL gives the run no warning; SIGTERM asks it
to save and stop at the next step boundary. After each kill every saved step must read back,
and the finished run's `metrics.jsonl` and `transcripts.jsonl` (all but `perf/*`, the timings
and compile counts of each process) must equal the uninterrupted run's, float for float.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp

from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.models.hf import save_pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMON = ["--config.log.wandb_mode=disabled", "--config.log.every=1"]

# One small job of each family on a randomly initialised 1-layer tiny model (char tokenizer).
JOBS = {
    "at_grpo": ["--config=experiments/configs/at_grpo.py", "--config.task.num_tasks=2",
                "--config.task.eval_tasks=2", "--config.algo.k=2",
              "--config.rollout.max_new_tokens=4"],
    "marft_ppo": ["--config=experiments/configs/marft_ppo.py:dual,action,qmix,tiny",
                  "--config.task.num_tasks=2", "--config.task.eval_tasks=2", "--config.algo.k=2",
                  "--config.task.env.max_turns=2", "--config.rollout.max_new_tokens=4"],
    "matpo": ["--config=experiments/configs/matpo.py:matpo,tiny,0", "--config.task.num_tasks=2",
              "--config.task.eval_tasks=2", "--config.algo.k=2",
              "--config.rollout.max_new_tokens=4"],
    "agentprm": ["--config=experiments/configs/agentprm.py:agentprm,tiny",
                 "--config.rollout.max_new_tokens=4",
                 "--config.prm.questions=2", "--config.prm.rollouts=2",
                 "--config.prm.batch_size=4", "--config.prm.eval_questions=2",
                 "--config.prm.eval_samples=1"],
}


def random_base_model(directory: str) -> str:
  """A randomly initialised 1-layer tiny model in Hugging Face format (written once)."""
  if not os.path.exists(os.path.join(directory, "config.json")):
    config = get_model_config("tiny", num_layers=1)
    save_pretrained(build_model(config, seed=0), config, directory)
  return directory


def command(job: str, model: str, workdir: str, total_steps: int, checkpoint_every: int,
            eval_every: int) -> list[str]:
  return [sys.executable, "-m", "launch.train", f"--workdir={workdir}", *JOBS[job],
          f"--config.model.path={model}", "--config.model.tokenizer=char",
          f"--config.total_steps={total_steps}", f"--config.checkpoint_every={checkpoint_every}",
          f"--config.eval_every={eval_every}", *COMMON]


def _start(cmd: list[str], log_path: str) -> subprocess.Popen:
  log = open(log_path, "a")
  return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _lines(path: str) -> int:
  if not os.path.exists(path):
    return 0
  with open(path, "rb") as f:
    return f.read().count(b"\n")


def _measured_in_seconds(key: str) -> bool:
  """`perf/*` (timings, per-process compile counts) and wall-clock rollout timings."""
  return key.startswith("perf/") or key.endswith(("seconds", "_per_s"))


def records(workdir: str, name: str) -> list[dict]:
  """A run's JSON-lines file without the keys that measure time."""
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if not _measured_in_seconds(k)} for r in rows]


def saved_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def unreadable_steps(workdir: str) -> list[int]:
  """Saved steps whose state does not read back (each restored without a target)."""
  bad = []
  for step in saved_steps(workdir):
    path = os.path.join(workdir, "checkpoints", str(step), "default")
    try:
      ocp.StandardCheckpointer().restore(path)
    except Exception:  # any failure to read is what this counts
      bad.append(step)
  return bad


def _in_flight_saves(workdir: str) -> int:
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return 0
  return sum("tmp" in d for d in os.listdir(directory))


@dataclasses.dataclass
class FaultReport:
  kills: int = 0
  sigkills: int = 0
  sigterms: int = 0
  killed_mid_save: int = 0  # a SIGKILL left an unfinished (temporary) checkpoint behind
  killed_starting: int = 0  # before the attempt logged a step
  attempts: int = 0
  unreadable: list[int] = dataclasses.field(default_factory=list)
  steps_at_kill: list[int] = dataclasses.field(default_factory=list)


def run_to_completion(cmd: list[str], log_path: str, timeout: float = 900) -> None:
  process = _start(cmd, log_path)
  try:
    code = process.wait(timeout=timeout)
  finally:
    process.kill()
  if code != 0:
    with open(log_path) as f:
      raise AssertionError(f"{' '.join(cmd)} exited {code}:\n{f.read()[-3000:]}")


def kill_and_resume(cmd: list[str], workdir: str, kills: int, seed: int, max_delay: float = 1.0,
                    starting: float = 0.0, max_start_delay: float = 15.0) -> FaultReport:
  """Kills the run `kills` times (SIGKILL or SIGTERM at random): with probability `starting`
  at a random moment of its start-up, else up to `max_delay` seconds after the attempt logged a
  new step. Checks after each kill that every saved step reads back, then lets the last attempt
  finish."""
  rng = np.random.default_rng(seed)
  report = FaultReport()
  log_path = os.path.join(os.path.dirname(workdir), os.path.basename(workdir) + ".log")
  metrics = os.path.join(workdir, "metrics.jsonl")
  while report.kills < kills:
    report.attempts += 1
    seen = _lines(metrics)
    process = _start(cmd, log_path)
    if rng.random() < starting:
      time.sleep(rng.uniform(0.0, max_start_delay))
    else:
      deadline = time.time() + 600
      while _lines(metrics) <= seen and process.poll() is None:
        assert time.time() < deadline, "no new step logged in 600 s"
        time.sleep(0.02)
      time.sleep(rng.uniform(0.0, max_delay))
    if process.poll() is not None:  # the run finished before the kill came
      assert process.returncode == 0, open(log_path).read()[-3000:]
      break
    sig = signal.SIGKILL if rng.random() < 0.5 else signal.SIGTERM
    if process.poll() is None:
      process.send_signal(sig)
      report.kills += 1
      if sig == signal.SIGKILL:
        report.sigkills += 1
      else:
        report.sigterms += 1
    code = process.wait(timeout=600)
    started = _lines(metrics) > seen
    # SIGTERM before the training loop (imports, restore, compilation) ends the process as
    # SIGTERM does, with nothing to save; inside the loop it saves and exits cleanly.
    allowed = {signal.SIGKILL: (-signal.SIGKILL,),
               signal.SIGTERM: (0,) if started else (0, -signal.SIGTERM)}[sig]
    assert code in allowed, (sig, code, open(log_path).read()[-3000:])
    report.killed_starting += not started
    if sig == signal.SIGKILL and _in_flight_saves(workdir):
      report.killed_mid_save += 1
    steps = [r["step"] for r in records(workdir, "metrics.jsonl")]
    report.steps_at_kill.append(max(steps or [0]))
    with open(log_path, "a") as log:  # each attempt's signal and logged steps, for diagnosis
      log.write(f"\n[harness] attempt {report.attempts}: {sig.name}, exit {code}, "
                f"checkpoints {saved_steps(workdir)}, logged steps {steps}\n")
    report.unreadable += unreadable_steps(workdir)
  run_to_completion(cmd, log_path)
  report.attempts += 1
  return report
