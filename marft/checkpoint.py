"""Orbax checkpoints of the whole train state: params, optimizer state, step, RNG, extra state.

Saves are asynchronous (training continues while the files are written, into a temporary
directory that orbax renames when the step is complete, so a killed save leaves no step behind);
`max_to_keep` bounds disk use; `restore_latest` resumes from the newest step that reads back,
placing every array with the sharding of the state it is restored into. A step that does not
read back (truncated or corrupted files) is moved aside to `<directory>.unreadable/<step>`, a
warning says so, and the next older step is tried. `PreemptionGuard` turns SIGTERM into a
request to save and stop at the next step boundary.
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class UnreadableCheckpoint(RuntimeError):
  """No saved step of a run directory reads back into this config's state."""


class Checkpointer:
  """A `CheckpointManager` over `directory` for one pytree (the TrainState)."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                 enable_async_checkpointing=async_save,
                                                 create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)
    self.unreadable: list[int] = []  # steps moved aside by `restore_latest`

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Starts writing `state` as `step` (returns before the write completes when async)."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore_latest(self, like: Any) -> Any | None:
    """The newest saved state that reads back, shaped and sharded like `like`; None if nothing
    is saved. Unreadable newer steps are moved aside (`unreadable` lists them); if no step reads
    back, `UnreadableCheckpoint` names the newest one's error and nothing is moved."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    errors = {}
    for step in steps:
      try:
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # orbax raises many types for mismatched or damaged checkpoints
        errors[step] = e
        continue
      if errors:
        self._move_aside(sorted(errors), restored_step=step)
      return restored
    newest = steps[0]
    raise UnreadableCheckpoint(
        f"cannot restore any checkpoint in {self.directory} (steps {steps}); step {newest}: "
        f"{errors[newest]}. They do not match this config's model/optimizer, or they are "
        "damaged; use a fresh --workdir or delete them.") from errors[newest]

  def _move_aside(self, steps: list[int], restored_step: int) -> None:
    aside = self.directory + ".unreadable"
    os.makedirs(aside, exist_ok=True)
    self._manager.close()
    for step in steps:
      target = os.path.join(aside, str(step))
      if os.path.exists(target):
        shutil.rmtree(target)
      shutil.move(os.path.join(self.directory, str(step)), target)
      logging.warning("checkpoint step %d in %s does not read back; moved it to %s and resumed "
                      "from step %d", step, self.directory, target, restored_step)
    self.unreadable.extend(steps)
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)

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
