"""The outer loop shared by every run: batch, update, log, evaluate, checkpoint, resume.

It knows nothing of algorithms or environments: `batch_fn(state) -> (batch, metrics)` makes the
next batch (a corpus slice, or a rollout scored by an algorithm's credit assignment) and
`train_step(state, batch)` is the jitted update from `marft.train_step`. A run is a function of
(config, seed): batches depend only on the state (its step and RNG), so resuming from a
checkpoint continues exactly as if uninterrupted. Compilations are counted per phase
(`perf/rollout_compiles`, `perf/train_compiles`, `perf/eval_compiles`, `perf/compile_seconds`:
totals since the process started), so a run shows whether its shapes stay inside a bounded set.

Faults: an update whose loss or gradient is not finite is skipped by the train step and counted
(`train/skipped_steps`); `max_nonfinite_in_a_row` such updates in a row (0: never) stop the run
with `NonFiniteLoss`, saving nothing more, so the last checkpoint holds the last good state. A
batch function may return a `transcripts` entry in its metrics (one JSON-able record per sampled
action); it goes to `transcripts.jsonl`, not to the metrics.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging

from marft.checkpoint import Checkpointer, PreemptionGuard
from marft.compiles import CompileCounter
from marft.logging import MetricsLogger
from marft.transcripts import wanted as transcripts_wanted
from marft.train_step import TrainState

BatchFn = Callable[[TrainState], tuple[Any, Mapping[str, Any]]]
EvalFn = Callable[[TrainState], Mapping[str, Any]]
TrainStepFn = Callable[[TrainState, Any], tuple[TrainState, Any]]


class Job(NamedTuple):
  """What an experiment hands the loop: initial state, jitted update, batches, evaluation;
  `export(state, workdir)`, which writes the final model(s) once the run reaches its last step
  (e.g. Hugging Face checkpoints for `launch.evaluate`); and `provenance`, what the run depends on
  beyond its config (the base model it starts from, the task's resolved settings), JSON-able."""

  state: TrainState
  train_step: TrainStepFn
  batch_fn: BatchFn
  eval_fn: EvalFn | None = None
  progress_keys: tuple[str, ...] = ("train/loss",)
  export: Callable[[TrainState, str], Any] | None = None
  provenance: Mapping[str, Any] | None = None


class RunDirectoryBusy(RuntimeError):
  """Another live process is training in the same run directory."""


@contextlib.contextmanager
def exclusive(workdir: str):
  """Holds `workdir/run.lock` (an advisory `flock`, released by the kernel when the holder dies,
  even by SIGKILL) for the block; a second process raises `RunDirectoryBusy` naming the
  holder's pid (two writers would interleave each other's checkpoints and logs). Only process 0
  of a multi-process run takes it."""
  if jax.process_index() != 0:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "run.lock"), "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "unknown"
      raise RunDirectoryBusy(f"{workdir} is in use by another process (pid {holder}); wait for "
                             "it to finish or stop it, or pass another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


class NonFiniteLoss(RuntimeError):
  """Too many updates in a row had a non-finite loss or gradient."""


class ProvenanceMismatch(ValueError):
  """A run directory holds checkpoints of a run that started from something else."""


def check_provenance(workdir: str, provenance: Mapping[str, Any] | None, resuming: bool) -> None:
  """Records `provenance` in `workdir/provenance.json`; refuses to resume a run recorded with a
  different one (e.g. the same config over a re-pretrained base model), which would silently mix
  two experiments."""
  if provenance is None:
    return
  path = os.path.join(workdir, "provenance.json")
  current = json.loads(json.dumps(provenance, sort_keys=True, default=str))
  if resuming and os.path.exists(path):
    with open(path) as f:
      recorded = json.load(f)
    if recorded != current:
      changed = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
      raise ProvenanceMismatch(
          f"{workdir} holds a run that started from a different {', '.join(changed)} "
          f"({[recorded.get(k) for k in changed]} there, {[current.get(k) for k in changed]} now); "
          "pass another --workdir or remove that directory")
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w") as f:
    json.dump(current, f, indent=2, sort_keys=True)


def summarize_step_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Per-policy `[P]` train-step metrics -> `train/<name>` (mean) and `train/<name>/p<i>`."""
  out = {}
  for name, values in metrics.items():
    values = np.asarray(values, np.float64)
    if name == "finite":
      continue
    out[f"train/{name}"] = float(values.mean())
    if values.size > 1 and name == "loss":
      out.update({f"train/{name}/p{i}": float(v) for i, v in enumerate(values)})
  return out


def run(config: Any, workdir: str, job: Job) -> TrainState:
  """Trains until `config.total_steps`, resuming from `workdir/checkpoints` when it has any.

  Calls `job.export` when the run has reached `total_steps` (also when resumed already there).
  Reads the common keys `total_steps`, `eval_every`, `checkpoint_every`, `log.every`,
  `log.wandb_mode`, `log.max_to_keep`, `log.transcripts` (default True) and
  `max_nonfinite_in_a_row` (default 0: never stop). Returns the final state (all saves finished).
  Raises `NonFiniteLoss` when that many updates in a row were skipped (the streak counts from
  the start of this process), `RunDirectoryBusy` when another process trains in `workdir`.
  """
  with exclusive(workdir):
    return _run(config, workdir, job)


def _run(config: Any, workdir: str, job: Job) -> TrainState:
  state, train_step, batch_fn, eval_fn, progress_keys, export, provenance = job
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.log.get("max_to_keep", 3))
  try:
    check_provenance(workdir, provenance, resuming=checkpointer.latest_step is not None)
  except ProvenanceMismatch:
    checkpointer.close()
    raise
  restored = checkpointer.restore_latest(state)
  fresh = restored is None
  if not fresh:
    state = restored
    logging.info("resumed from step %d in %s", int(state.step), checkpointer.directory)
  start = int(state.step)
  total = int(config.total_steps)
  logger = MetricsLogger(workdir, config.to_dict(), total_steps=total, start_step=start,
                         wandb_mode=config.log.wandb_mode,
                         project=config.log.get("project", "marft"),
                         progress_keys=progress_keys, primary=jax.process_index() == 0)
  log_every = max(1, int(config.log.get("every", 1)))
  keep_transcripts = transcripts_wanted(config)
  max_nonfinite = int(config.get("max_nonfinite_in_a_row", 0))
  nonfinite_streak = 0
  compiles = {"rollout": 0, "train": 0, "eval": 0, "seconds": 0.0}

  def counted(phase: str, fn: Callable[..., Any], *args: Any) -> Any:
    with CompileCounter.delta() as delta:
      out = fn(*args)
    compiles[phase] += delta.count
    compiles["seconds"] += delta.seconds
    return out

  def compile_metrics() -> dict[str, float]:
    return {"perf/rollout_compiles": compiles["rollout"],
            "perf/train_compiles": compiles["train"], "perf/eval_compiles": compiles["eval"],
            "perf/compile_seconds": compiles["seconds"]}

  def evaluate() -> dict[str, Any]:
    metrics = counted("eval", eval_fn, state)
    return {**metrics, **compile_metrics()}

  try:
    if fresh and eval_fn is not None and config.eval_every:
      logger.log(0, evaluate())
    with PreemptionGuard() as guard:
      while int(state.step) < total:
        started = time.perf_counter()
        batch, batch_metrics = counted("rollout", batch_fn, state)
        batch_metrics = dict(batch_metrics)
        transcripts = batch_metrics.pop("transcripts", None)
        state, step_metrics = counted("train", train_step, state, batch)
        step = int(state.step)
        if transcripts is not None and keep_transcripts:
          logger.log_transcripts(step, transcripts)
        if max_nonfinite and "finite" in step_metrics:
          finite = bool(np.asarray(jax.device_get(step_metrics["finite"])).min() > 0)
          nonfinite_streak = 0 if finite else nonfinite_streak + 1
          if nonfinite_streak >= max_nonfinite:
            logger.log(step, {**summarize_step_metrics(jax.device_get(step_metrics)),
                              "train/skipped_steps": int(np.asarray(state.skipped_steps).sum())})
            last = checkpointer.latest_step
            raise NonFiniteLoss(
                f"{nonfinite_streak} updates in a row (steps {step - nonfinite_streak + 1}-"
                f"{step}) had a non-finite loss or gradient and were skipped; stopped. The last "
                f"checkpoint ({'step ' + str(last) if last is not None else 'none'} in "
                f"{checkpointer.directory}) is intact. Lower optimizer.lr, check the rewards "
                "and inputs, or raise max_nonfinite_in_a_row.")
        if step % log_every == 0 or step == total:
          record = {**batch_metrics, **summarize_step_metrics(jax.device_get(step_metrics)),
                    "train/skipped_steps": int(np.asarray(state.skipped_steps).sum()),
                    "perf/step_seconds": time.perf_counter() - started, **compile_metrics()}
          logger.log(step, record)
        if eval_fn is not None and config.eval_every and (
            step % config.eval_every == 0 or step == total):
          logger.log(step, evaluate())
        logger.advance()
        if step % config.checkpoint_every == 0 or step == total or guard.requested:
          checkpointer.save(step, state)
        if guard.requested:
          logging.warning("stopped at step %d after a signal; rerun to resume", step)
          break
  finally:
    checkpointer.wait()
    checkpointer.close()
    logger.close()
  if export is not None and int(state.step) >= total:
    export(state, workdir)
  return state
