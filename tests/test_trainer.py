"""The outer loop in process: a SIGTERM mid-run saves the step it arrived at, then stops; a
non-finite update is skipped and a streak of them stops the run; a damaged latest checkpoint
falls back to the previous one; a fresh start drops what an unfinished attempt logged."""
import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from marft import trainer
from marft.checkpoint import Checkpointer, UnreadableCheckpoint
from marft.train_step import TrainState


def _counting_job(signal_at_step):
  """A job whose update adds the batch (the step number) to a parameter; `batch_fn` sends this
  process SIGTERM when the state is at `signal_at_step`."""
  state = TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.zeros((3,), jnp.float32)},
                     opt_state={"count": jnp.zeros((), jnp.int32)},
                     rng=jax.random.key_data(jax.random.key(0)),
                     skipped_steps=jnp.zeros((1,), jnp.int32))

  @jax.jit
  def train_step(state, batch):
    params = {"w": state.params["w"] + batch}
    return (state.replace(step=state.step + 1, params=params,
                          opt_state={"count": state.opt_state["count"] + 1}),
            {"loss": params["w"].sum()[None]})

  def batch_fn(state):
    step = int(state.step)
    if step == signal_at_step:
      os.kill(os.getpid(), signal.SIGTERM)
    return jnp.float32(step + 1), {}

  return trainer.Job(state=state, train_step=train_step, batch_fn=batch_fn)


def test_sigterm_saves_a_checkpoint_at_the_step_it_arrived_and_stops(tmp_path):
  config = ml_collections.ConfigDict(dict(
      total_steps=10, eval_every=0, checkpoint_every=100,
      log=dict(every=1, wandb_mode="disabled", max_to_keep=3)))
  # The signal comes while the state is at step 3; the update in flight completes (step 4),
  # which is saved, and the loop stops there.
  job = _counting_job(signal_at_step=3)
  previous = signal.getsignal(signal.SIGTERM)
  state = trainer.run(config, str(tmp_path), job)
  assert signal.getsignal(signal.SIGTERM) is previous  # the handler is restored
  assert int(state.step) == 4
  np.testing.assert_array_equal(state.params["w"], np.full(3, 1 + 2 + 3 + 4, np.float32))
  saved = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert saved == [4]
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4]
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  restored = checkpointer.restore_latest(job.state)
  checkpointer.close()
  assert int(restored.step) == 4 and int(restored.opt_state["count"]) == 4
  np.testing.assert_array_equal(restored.params["w"], state.params["w"])

  # Rerunning resumes at step 4 and finishes without another signal.
  resumed = trainer.run(config, str(tmp_path), _counting_job(signal_at_step=-1))
  assert int(resumed.step) == 10
  np.testing.assert_array_equal(resumed.params["w"], np.full(3, sum(range(1, 11)), np.float32))


def _config(total_steps, checkpoint_every, max_nonfinite_in_a_row=0):
  return ml_collections.ConfigDict(dict(
      total_steps=total_steps, eval_every=0, checkpoint_every=checkpoint_every,
      max_nonfinite_in_a_row=max_nonfinite_in_a_row,
      log=dict(every=1, wandb_mode="disabled", max_to_keep=5)))


def _nan_job(bad_steps):
  """The counting job, whose batch is NaN while the state is at one of `bad_steps`; like
  `marft.train_step`, a non-finite update keeps the parameters and counts a skipped step."""
  job = _counting_job(signal_at_step=-1)

  @jax.jit
  def train_step(state, batch):
    finite = jnp.isfinite(batch)
    params = {"w": jnp.where(finite, state.params["w"] + batch, state.params["w"])}
    return (state.replace(step=state.step + 1, params=params,
                          skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32)),
            {"loss": jnp.where(finite, params["w"].sum(), jnp.nan)[None],
             "finite": finite.astype(jnp.float32)[None]})

  def batch_fn(state):
    step = int(state.step)
    return jnp.float32(np.nan if step in bad_steps else step + 1), {}

  return job._replace(train_step=train_step, batch_fn=batch_fn)


def test_non_finite_updates_are_skipped_and_a_streak_stops_the_run(tmp_path):
  # Two in a row, then a good one: skipped and counted, the run goes on (limit 3).
  state = trainer.run(_config(8, 100, 3), str(tmp_path / "ok"), _nan_job({2, 3, 5}))
  assert int(state.step) == 8 and int(state.skipped_steps[0]) == 3
  np.testing.assert_array_equal(state.params["w"], np.full(3, 1 + 2 + 5 + 7 + 8, np.float32))
  with open(tmp_path / "ok" / "metrics.jsonl") as f:
    assert [json.loads(line)["train/skipped_steps"] for line in f] == [0, 0, 1, 2, 2, 3, 3, 3]
  # Three in a row (updates 5, 6, 7) stop it at step 7 with the message; the checkpoint written
  # inside the streak (6) holds the last good parameters (updates 1-4).
  workdir = tmp_path / "stop"
  with pytest.raises(trainer.NonFiniteLoss, match=r"3 updates in a row \(steps 5-7\)"):
    trainer.run(_config(20, 2, 3), str(workdir), _nan_job(set(range(4, 20))))
  saved = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert saved == [2, 4, 6]
  checkpointer = Checkpointer(str(workdir / "checkpoints"))
  restored = checkpointer.restore_latest(_counting_job(-1).state)
  checkpointer.close()
  np.testing.assert_array_equal(restored.params["w"], np.full(3, 1 + 2 + 3 + 4, np.float32))
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert records[-1]["step"] == 7 and records[-1]["train/skipped_steps"] == 3


def _damage(step_dir, how):
  """Truncates (or overwrites with noise) every file of a saved step."""
  rng = np.random.default_rng(0)
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      with open(path, "r+b") as f:
        if how == "truncated":
          f.truncate(size // 2)
        else:
          f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, how, caplog):
  config = _config(6, 2)
  trainer.run(config, str(tmp_path), _counting_job(-1))
  _damage(tmp_path / "checkpoints" / "6", how)
  config.total_steps = 10
  with caplog.at_level("WARNING"):
    state = trainer.run(config, str(tmp_path), _counting_job(-1))
  assert "checkpoint step 6" in caplog.text and "resumed from step 4" in caplog.text
  np.testing.assert_array_equal(state.params["w"], np.full(3, sum(range(1, 11)), np.float32))
  assert os.path.isdir(tmp_path / "checkpoints.unreadable" / "6")
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == list(range(1, 11))
  # Every step damaged: one error, and nothing is moved.
  for step in (8, 10):
    _damage(tmp_path / "checkpoints" / str(step), how)
  for step in sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()):
    _damage(tmp_path / "checkpoints" / str(step), how)
  with pytest.raises(UnreadableCheckpoint, match="cannot restore any checkpoint"):
    trainer.run(config, str(tmp_path), _counting_job(-1))


def test_a_fresh_start_drops_what_an_unfinished_attempt_logged(tmp_path):
  # An attempt killed before its first checkpoint left metrics and transcripts behind.
  for name in ("metrics.jsonl", "transcripts.jsonl"):
    with open(tmp_path / name, "w") as f:
      f.write('{"step": 0, "eval/x": 1}\n{"step": 1, "train/loss": 9}\n{"step": 2, "tr')
  job = _counting_job(-1)
  job = job._replace(batch_fn=lambda s: (jnp.float32(int(s.step) + 1),
                                         {"transcripts": [{"turn": int(s.step)}]}))
  trainer.run(_config(3, 100), str(tmp_path), job)
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2, 3]
  with open(tmp_path / "transcripts.jsonl") as f:
    assert [json.loads(line) for line in f] == [{"step": s + 1, "turn": s} for s in range(3)]


def test_a_second_process_in_the_same_run_directory_is_refused(tmp_path):
  with trainer.exclusive(str(tmp_path)):
    with pytest.raises(trainer.RunDirectoryBusy, match=f"pid {os.getpid()}"):
      trainer.run(_config(2, 1), str(tmp_path), _counting_job(-1))
    assert not os.path.exists(tmp_path / "checkpoints")
  # Released: the run goes ahead.
  assert int(trainer.run(_config(2, 1), str(tmp_path), _counting_job(-1)).step) == 2
