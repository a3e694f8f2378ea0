"""Orbax checkpoints of the whole train state: params, optimizer state, step, RNG, extra state.

Saves are asynchronous (training continues while the files are written); `max_to_keep`
bounds disk use; `restore_latest` resumes from the newest complete step, placing every array
with the sharding of the state it is restored into. `PreemptionGuard` turns SIGTERM into a
request to save and stop at the next step boundary.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """A `CheckpointManager` over `directory` for one pytree (the TrainState)."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=async_save,
                                           create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Starts writing `state` as `step` (returns before the write completes when async)."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore_latest(self, like: Any) -> Any | None:
    """The newest saved state, shaped and sharded like `like`, or None if nothing is saved."""
    step = self.latest_step
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types for mismatched or damaged checkpoints
      raise RuntimeError(f"cannot restore checkpoint step {step} from {self.directory}: {e}. "
                         "It does not match this config's model/optimizer, or it is damaged; "
                         "use a fresh --workdir or delete that step.") from e

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


class PreemptionGuard:
  """Records SIGTERM (and SIGINT) so the loop can save and exit cleanly at a step boundary."""

  def __init__(self):
    self._event = threading.Event()
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "PreemptionGuard":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc: Any) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    logging.warning("received signal %d: saving a checkpoint and stopping", signum)
    self._event.set()

  @property
  def requested(self) -> bool:
    return self._event.is_set()
