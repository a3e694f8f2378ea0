"""Processes left behind by sandboxed programs, found by a token in their command line."""
import os
import time


def survivors(token: str) -> list[int]:
  """Live (non-zombie) processes whose command line contains `token`."""
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
      with open(f"/proc/{pid}/stat") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
      continue
    if token.encode() in cmdline and state != "Z":
      found.append(int(pid))
  return found


def wait_gone(token: str, seconds: float = 2.0) -> list[int]:
  deadline = time.monotonic() + seconds
  while (left := survivors(token)) and time.monotonic() < deadline:
    time.sleep(0.05)
  return left
