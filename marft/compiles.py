"""Counting XLA compilations, for the compile budget of a run.

Every backend compilation (a `jax.jit` cache miss, or an eager op on a new shape) reports its
duration on jax's monitoring event `/jax/core/compile/backend_compile_duration`; `CompileCounter`
listens to it once per process and `delta()` gives what happened inside a block. The trainer logs
`perf/rollout_compiles`, `perf/train_compiles`, `perf/eval_compiles` and `perf/compile_seconds`
(totals since the process started: a resumed run compiles again, so they sit under `perf/` with
the other process-dependent numbers).
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass
class Compiles:
  """Compilations counted inside a block, and the seconds XLA spent on them."""

  count: int = 0
  seconds: float = 0.0


class CompileCounter:
  """Process-wide totals of backend compilations (installed once, on first use)."""

  _lock = threading.Lock()
  _installed = False
  count = 0
  seconds = 0.0

  @classmethod
  def install(cls) -> None:
    with cls._lock:
      if not cls._installed:
        jax.monitoring.register_event_duration_secs_listener(cls._listen)
        cls._installed = True

  @classmethod
  def _listen(cls, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event == _EVENT:
      with cls._lock:
        cls.count += 1
        cls.seconds += duration

  @classmethod
  @contextlib.contextmanager
  def delta(cls) -> Iterator[Compiles]:
    """`with CompileCounter.delta() as c: ...` fills `c` with the block's compilations."""
    cls.install()
    out = Compiles()
    count, seconds = cls.count, cls.seconds
    try:
      yield out
    finally:
      out.count, out.seconds = cls.count - count, cls.seconds - seconds
