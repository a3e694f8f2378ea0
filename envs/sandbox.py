"""Runs model-written Python in a separate, unprivileged, resource-limited process.

Code never runs in the caller's process. `run_python` starts a fresh interpreter that
- runs as a fresh unprivileged uid per call when the caller is root (otherwise as the
  caller), in its own session and process group, with a minimal environment, in isolated mode
  without `site` (`-I -S -B`);
- under "bwrap" isolation (Debian's `bubblewrap`, used when it works here): in new user, pid,
  network, ipc, uts and cgroup namespaces; it sees only the system's directories (`/usr`,
  `/etc`, `/bin`, `/lib`...) and the interpreter's installation, read-only, not the caller's
  files (the checkout, home directories, data), plus a private, size-capped tmpfs at `/tmp`
  that is also the working directory; no network (only a loopback of its own); no further user
  namespaces; killed with its whole pid namespace when it ends;
- under "rlimits" isolation (the fall-back where bubblewrap is missing or cannot create
  namespaces): only the unprivileged user, a private working directory and the limits below.
  Network access is NOT blocked, every world-readable file (the checkout too) can be read,
  world-writable directories (`/tmp`) stay writable to it, and other processes are visible
  in `/proc`; a process that leaves the process group (`setsid`) can outlive the run, bounded
  by its CPU limit.
- in both: `RLIMIT_AS` (memory), `RLIMIT_CPU`, `RLIMIT_NPROC`, `RLIMIT_FSIZE` (which is also
  the cap on stdout/stderr: they go to files), `RLIMIT_NOFILE`, no core dumps, and a wall-clock
  timeout after which the whole process group is killed. A file over its size limit or a full
  `/tmp` reads as "output_limit", too many processes or open files as "forbidden".

The isolation used is chosen once per process by running a probe, and logged once; the reason
of every failed run is logged at INFO.
"""
from __future__ import annotations

import dataclasses
import secrets
import functools
import math
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from absl import logging

OUTPUT_LIMIT_BYTES = 1 << 20  # per file, also stdout and stderr (RLIMIT_FSIZE)
TMPFS_BYTES = 16 << 20  # size of the private /tmp under bwrap
MAX_PROCESSES = 32  # RLIMIT_NPROC
MAX_OPEN_FILES = 64  # RLIMIT_NOFILE
ISOLATIONS = ("bwrap", "rlimits")
_REAP_WAIT_S = 3.0

# Sets the limits, then runs main.py in this interpreter as `__main__`.
_BOOTSTRAP = """\
import resource as R, sys
for k, v in {limits}:
  R.setrlimit(k, (v, v))
del R, k, v
sys.argv = ["main.py"]
with open("main.py", "rb") as s:
  c = compile(s.read(), "main.py", "exec")
del s
exec(c, {{"__name__": "__main__", "__builtins__": __builtins__}})
"""
# The only host directories visible under bwrap (read-only; those missing here are skipped).
_SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_BWRAP_FLAGS = ("--dev", "/dev", "--remount-ro", "/dev", "--proc", "/proc",
                "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp", "--remount-ro", "/",
                "--chdir", "/tmp", "--unshare-all", "--unshare-user", "--disable-userns",
                "--die-with-parent", "--new-session")
_FORBIDDEN = ("PermissionError", "Permission denied", "Read-only file system",
              "Operation not permitted", "Network is unreachable", "gaierror",
              "Temporary failure in name resolution", "BlockingIOError",
              "Resource temporarily unavailable", "ConnectionRefusedError", "Too many open files")
_DISK_FULL = ("File too large", "No space left on device", "Disk quota exceeded")
_MEMORY = ("MemoryError", "Cannot allocate memory", "out of memory")


@dataclasses.dataclass(frozen=True)
class SandboxResult:
  """The outcome of one run. `reason` is one of "ok", "timeout", "memory", "forbidden",
  "error", "output_limit"; `ok` is `reason == "ok"` (exit status 0 within every limit)."""

  ok: bool
  reason: str
  stdout: str
  stderr: str
  returncode: int


# Unassigned high ids, one drawn per sandboxed call when running as root.
_CALL_UIDS = range(2_000_000, 2_100_000)


@dataclasses.dataclass(frozen=True)
class _Setup:
  isolation: str
  python: str
  user: int | None  # the uid/gid to drop to (None: not root, keep the caller's)
  group: int | None


def run_python(source: str, *, timeout_s: float = 2.0, memory_mb: int = 256, stdin: str = "",
               isolation: str | None = None) -> SandboxResult:
  """Runs `source` as `__main__` of a fresh sandboxed interpreter; never raises for bad code.

  `timeout_s` is wall-clock (the CPU limit is its ceiling plus one second); `memory_mb` caps the
  address space. `isolation` forces "bwrap" or "rlimits" (default: the best one that works).
  """
  setup = _setup(isolation)
  if setup.user is not None:
    # A uid of its own per call: the process limit (RLIMIT_NPROC counts per uid) then bounds
    # this call alone, so concurrent calls and a previous call's dying processes do not count.
    uid = _CALL_UIDS.start + secrets.randbelow(len(_CALL_UIDS))
    setup = dataclasses.replace(setup, user=uid, group=uid)
  result = _execute(setup, source, timeout_s, memory_mb, stdin)
  if not result.ok:
    logging.info("Sandbox run failed: %s (exit status %d)", result.reason, result.returncode)
  return result


def available_isolations() -> tuple[str, ...]:
  """The isolations that work on this machine, best first."""
  return tuple(name for name in ISOLATIONS if _probe(name) is not None)


def _execute(setup: _Setup, source: str, timeout_s: float, memory_mb: int,
             stdin: str) -> SandboxResult:
  limits = {"AS": int(memory_mb) << 20, "CPU": math.ceil(timeout_s) + 1, "NPROC": MAX_PROCESSES,
            "FSIZE": OUTPUT_LIMIT_BYTES, "NOFILE": MAX_OPEN_FILES, "CORE": 0}
  bootstrap = _BOOTSTRAP.format(
      limits="(" + "".join(f"(R.RLIMIT_{k}, {v}), " for k, v in limits.items()) + ")")
  interpreter = [setup.python, "-I", "-S", "-B", "-c", bootstrap]
  code = source.encode("utf-8", "replace")
  workdir = None
  with (tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as inp,
        tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err):
    inp.write(stdin.encode("utf-8", "replace"))
    inp.seek(0)
    if setup.isolation == "bwrap":
      src.write(code)
      src.seek(0)
      argv = ["bwrap", *_bwrap_mounts(setup.python), *_BWRAP_FLAGS, "--ro-bind-data",
              str(src.fileno()), "/tmp/main.py", *interpreter]
      cwd, pass_fds = "/", (src.fileno(),)
    else:
      workdir = tempfile.mkdtemp(prefix="sandbox-")
      if setup.user is not None:
        os.chown(workdir, setup.user, setup.group)
      with open(os.path.join(workdir, "main.py"), "wb") as f:
        f.write(code)
      argv, cwd, pass_fds = interpreter, workdir, ()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8",
           "HOME": "/tmp" if workdir is None else workdir,
           "TMPDIR": "/tmp" if workdir is None else workdir}
    try:
      timed_out, returncode = _run_process(argv, cwd, env, inp, out, err, pass_fds, setup,
                                           timeout_s)
    finally:
      if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
    if setup.isolation == "bwrap" and 128 < returncode < 128 + signal.NSIG:
      returncode = 128 - returncode  # bwrap exits with 128 + N when the program died of signal N
    stdout, out_full = _read_capped(out)
    stderr, err_full = _read_capped(err)
  reason = _classify(timed_out, returncode, out_full or err_full, stderr)
  return SandboxResult(ok=reason == "ok", reason=reason, stdout=stdout, stderr=stderr,
                       returncode=returncode)


def _bwrap_mounts(python: str) -> list[str]:
  """Read-only binds of the system's directories and of the interpreter's installation."""
  prefix = os.path.dirname(os.path.dirname(python))  # <prefix>/bin/python3
  inside = prefix == "/" or any(os.path.commonpath((prefix, d)) == d for d in _SYSTEM_DIRS)
  mounts = [a for d in _SYSTEM_DIRS for a in ("--ro-bind-try", d, d)]
  return mounts if inside else [*mounts, "--ro-bind", prefix, prefix]


def _run_process(argv, cwd, env, inp, out, err, pass_fds, setup: _Setup,
                 timeout_s: float) -> tuple[bool, int]:
  """Runs the child, kills its process group when it ends or times out; (timed_out, status)."""
  proc = subprocess.Popen(argv, stdin=inp, stdout=out, stderr=err, cwd=cwd, env=env,
                          pass_fds=pass_fds, start_new_session=True, user=setup.user,
                          group=setup.group, extra_groups=[] if setup.user is not None else None)
  try:
    # Waits without reaping, so the group id cannot be reused before it is killed.
    pidfd = os.pidfd_open(proc.pid)
  except OSError:  # no pidfds (Linux < 5.3): poll
    try:
      proc.wait(timeout_s)
      timed_out = False
    except subprocess.TimeoutExpired:
      timed_out = True
  else:
    try:
      timed_out = not select.select([pidfd], [], [], max(timeout_s, 0.0))[0]
    finally:
      os.close(pidfd)
  _kill_group(proc.pid)
  returncode = proc.wait()
  # Killed members linger as zombies until init reaps them, and they still count against
  # RLIMIT_NPROC of the user: wait (bounded) until the group is gone.
  deadline = time.monotonic() + _REAP_WAIT_S
  while _kill_group(proc.pid) and time.monotonic() < deadline:
    time.sleep(0.01)
  return timed_out, returncode


def _kill_group(pgid: int) -> bool:
  """SIGKILLs the process group; whether it still existed."""
  try:
    os.killpg(pgid, signal.SIGKILL)
    return True
  except ProcessLookupError:
    return False


def _read_capped(f) -> tuple[str, bool]:
  """The file's text (at most the output limit) and whether it reached the limit."""
  f.seek(0)
  data = f.read(OUTPUT_LIMIT_BYTES)
  return data.decode("utf-8", "replace"), len(data) >= OUTPUT_LIMIT_BYTES


def _classify(timed_out: bool, returncode: int, output_full: bool, stderr: str) -> str:
  if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
    return "timeout"
  last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
  if output_full or returncode == -signal.SIGXFSZ or any(m in last for m in _DISK_FULL):
    return "output_limit"
  if returncode == 0:
    return "ok"
  if any(m in last for m in _MEMORY) or (
      returncode in (-signal.SIGSEGV, -signal.SIGABRT) and "memory" in stderr.lower()):
    return "memory"
  if any(m in last for m in _FORBIDDEN):
    return "forbidden"
  return "error"


def _drop_to() -> tuple[int | None, int | None]:
  if os.geteuid() != 0:
    return None, None
  try:
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid
  except KeyError:
    return 65534, 65534


def _pythons() -> list[str]:
  """Interpreters to try: this one, then the system's."""
  found = [os.path.realpath(sys.executable)]
  for name in ("python3",):
    path = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
    if path and os.path.realpath(path) not in found:
      found.append(os.path.realpath(path))
  return found


@functools.cache
def _probe(isolation: str) -> _Setup | None:
  """A working set-up for `isolation`, or None."""
  if isolation == "bwrap" and shutil.which("bwrap") is None:
    return None
  user, group = _drop_to()
  for python in _pythons():
    setup = _Setup(isolation, python, user, group)
    try:
      result = _execute(setup, "print(6 * 7)", 10.0, 256, "")
    except OSError:
      continue
    if result.ok and result.stdout == "42\n":
      return setup
  return None


_log_lock = threading.Lock()
_logged: set[str] = set()


def _setup(isolation: str | None) -> _Setup:
  if isolation is not None and isolation not in ISOLATIONS:
    raise ValueError(f"unknown isolation {isolation!r}; choose from {ISOLATIONS}")
  for name in (isolation,) if isolation else ISOLATIONS:
    setup = _probe(name)
    if setup is not None:
      with _log_lock:
        if name not in _logged:
          _logged.add(name)
          who = "as nobody" if setup.user is not None else "as the calling user (not root)"
          if name == "bwrap":
            logging.info("Sandbox: bubblewrap namespaces + rlimits, %s, %s", who, setup.python)
          else:
            logging.warning("Sandbox: rlimits only, no namespaces (network NOT isolated; "
                            "bubblewrap missing, failing or not chosen), %s, %s", who,
                            setup.python)
      return setup
  raise RuntimeError(f"cannot run sandboxed Python here (isolation {isolation or 'any'}); "
                     "install bubblewrap (apt-get install bubblewrap)")
