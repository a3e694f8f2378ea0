"""How busy the machine is while a benchmark runs: other processes' share of the CPUs."""
from __future__ import annotations

import os


def cpu_seconds() -> tuple[float, float] | None:
  """`(busy CPU seconds of the whole machine, CPU seconds of this process)`, or None."""
  try:
    with open("/proc/stat") as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except OSError:
    return None
  busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
  times = os.times()
  return busy / os.sysconf("SC_CLK_TCK"), times.user + times.system


def others_share(start: tuple[float, float] | None, wall: float) -> float | None:
  """Share of all CPUs that other processes used since `start` (over `wall` seconds)."""
  end = cpu_seconds()
  if start is None or end is None:
    return None
  others = (end[0] - start[0]) - (end[1] - start[1])
  return max(0.0, others) / (wall * (os.cpu_count() or 1))
