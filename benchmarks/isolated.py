"""Measuring in a fresh Python process: each size of a benchmark gets its own peak RSS and
compile cache. The child prints one `RESULT {json}` line; the parent reads it back."""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
from typing import Any

from absl import flags

RESULT = "RESULT "
# Shared by every benchmark that measures in children (defined once: tests import several).
CHILD = flags.DEFINE_string("child", "", "Internal: measure one JSON-encoded spec and print it.")
CHILD_TIMEOUT = flags.DEFINE_integer("child_timeout", 3600, "Seconds per measured size.")


def peak_rss_bytes() -> int:
  """This process's peak resident set so far: `VmHWM` on Linux, the high-water mark of this
  process image alone (`ru_maxrss` keeps the parent's RSS at fork across exec: a child started
  by a 5 GiB test process reports 5 GiB); `ru_maxrss` elsewhere (macOS reports bytes)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(peak if sys.platform == "darwin" else peak * 1024)


def child_result(script: str, spec: Any, timeout: int, *flags: str) -> dict:
  """Runs `script --child=<spec as JSON> *flags` in a fresh Python process (its own peak RSS
  and compile cache) and returns the record it prints after `RESULT `, or an error record."""
  command = [sys.executable, os.path.abspath(script),
             f"--child={json.dumps(dataclasses.asdict(spec))}", *flags]
  try:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"spec": dataclasses.asdict(spec), "error": f"timed out after {timeout} s"}
  for line in reversed(done.stdout.splitlines()):
    if line.startswith(RESULT):
      return json.loads(line[len(RESULT):])
  return {"spec": dataclasses.asdict(spec), "error": error_summary(done.stderr, done.returncode)}


def error_summary(stderr: str, returncode: int) -> str:
  """The child's exception line (`SomeError: message`), shortened for a table cell."""
  lines = [l.strip() for l in stderr.splitlines() if l.strip()]
  errors = [l for l in lines if l.split(":")[0].endswith(("Error", "Exception"))]
  line = (errors or lines or [f"exit {returncode}"])[-1]
  line = line.split(" (https://")[0]
  return line if len(line) <= 120 else line[:117] + "..."

