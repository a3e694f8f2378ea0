"""The outer loop in process: a SIGTERM mid-run saves the step it arrived at, then stops."""
import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from marft import trainer
from marft.checkpoint import Checkpointer
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
