"""Hostile programs against `envs.sandbox.run_python`, one case each: every attack is checked on
the host (no file appeared, no connection arrived, no signal landed, no process outlived the
run, no secret leaked) and must end with its expected, documented reason, logged when not "ok".
The last test checks that this process is unaffected by the whole suite (memory, children,
open files, threads).

Cases run under the best isolation that works here (what the trainer uses); under root, the
cases that the rlimits fall-back claims to contain also run under it, as slow tests."""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

from envs import sandbox
from tests.envs.processes import wait_gone

REASONS = ("ok", "timeout", "memory", "forbidden", "error", "output_limit")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ISOLATIONS = sandbox.available_isolations()
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _status(pid: int | str, field: str) -> str:
  with open(f"/proc/{pid}/status") as f:
    return next(line.split()[1] for line in f if line.startswith(field + ":"))


def _children() -> set[int]:
  """This process's child processes, zombies included."""
  found = set()
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
      continue
    if ppid == os.getpid():
      found.add(int(pid))
  return found


class Host:
  """The host side of one attack: a token for its names, this process, and lazily opened
  targets (listening sockets, a pipe) whose far end the attack must not reach."""

  def __init__(self, token: str, canary: int, canary_token: str):
    self.token = token
    self.pid = os.getpid()
    self.pgid = os.getpgid(0)
    self.canary = canary
    self.canary_token = canary_token
    self.home = os.path.expanduser("~")
    self.secret = f"secret-{token}"
    self.repo = REPO
    self._closers: list[Callable[[], None]] = []

  def path(self, directory: str) -> str:
    return os.path.join(directory, f"pwned-{self.token}")

  def _keep(self, sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    self._closers.append(sock.close)
    return sock

  @functools.cached_property
  def tcp(self) -> socket.socket:
    server = self._keep(socket.socket())
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server

  @functools.cached_property
  def udp(self) -> socket.socket:
    server = self._keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    server.bind(("127.0.0.1", 0))
    return server

  @functools.cached_property
  def abstract(self) -> socket.socket:
    server = self._keep(socket.socket(socket.AF_UNIX))
    server.bind(f"\0marft-{self.token}")
    server.listen(8)
    return server

  @functools.cached_property
  def unix(self) -> socket.socket:
    """A world-connectable socket file in a world-readable directory outside /tmp."""
    directory = f"/var/tmp/marft-{uuid.uuid4().hex}"
    os.mkdir(directory, 0o755)
    server = self._keep(socket.socket(socket.AF_UNIX))
    server.bind(f"{directory}/sock")
    os.chmod(f"{directory}/sock", 0o777)
    server.listen(8)
    self._closers += [lambda: os.unlink(f"{directory}/sock"), lambda: os.rmdir(directory)]
    return server

  @functools.cached_property
  def pipe(self) -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    self._closers += [lambda: os.close(read), lambda: os.close(write)]
    return read, write

  def close(self) -> None:
    for close in self._closers:
      close()

  def watched_dirs(self) -> list[str]:
    return sorted({REPO, os.path.dirname(REPO), os.getcwd(), self.home, "/root", "/tmp",
                   "/var/tmp", "/dev/shm", "/etc", "/"})


Check = Callable[[Host, sandbox.SandboxResult], None]


def _printed_nothing(host: Host, result: sandbox.SandboxResult) -> None:
  assert result.stdout == "", result.stdout[:300]


def _nothing_arrived(target: str) -> Check:
  def check(host: Host, result: sandbox.SandboxResult) -> None:
    sock = getattr(host, target)
    with pytest.raises(BlockingIOError):  # no pending connection or datagram
      sock.accept() if sock.type == socket.SOCK_STREAM else sock.recv(1)
  return check


@dataclasses.dataclass(frozen=True)
class Attack:
  """A hostile program (its source from the host's names), the reason it must end with (under
  rlimits where that differs), and checks on the host that it had no effect."""

  name: str
  source: Callable[[Host], str]
  reason: str
  contained: tuple[Check, ...] = (_printed_nothing,)
  rlimits_reason: str | None = None  # None: as under bwrap
  namespaces_only: bool = False  # not contained by the rlimits fall-back (documented)
  timeout_s: float = 2.0
  memory_mb: int = 256
  max_seconds: float = 5.0


def _no_file(*dirs: str) -> Check:
  def check(host: Host, result: sandbox.SandboxResult) -> None:
    for directory in dirs:
      assert not os.path.lexists(host.path(directory.format(h=host))), directory
  return check


def _absent(*texts: str) -> Check:
  def check(host: Host, result: sandbox.SandboxResult) -> None:
    for text in texts:
      text = text.format(h=host)
      assert text not in result.stdout and text not in result.stderr, text
  return check


def _write(path: str) -> str:
  return f"with open({path!r}, 'w') as f:\n  f.write('pwned')\nprint('wrote', {path!r})\n"


def _fork_bomb(h: Host) -> str:
  bomb = "import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n"
  return f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {bomb!r}, {h.token!r}])"


def _daemon(program: list[str]) -> str:
  """Double fork, new session, terminal signals ignored, then `program` (stays 30 s)."""
  return f"""import os, signal
if os.fork() == 0:
  os.setsid()
  if os.fork() == 0:
    for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
      signal.signal(s, signal.SIG_IGN)
    os.execvp({program[0]!r}, {program!r})
  os._exit(0)
os.wait()
print('daemon started')
"""


_SPIN = "import time\nend = time.time() + 30\nwhile time.time() < end:\n  pass\n"


def _ptrace(h: Host) -> str:
  return f"""import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for pid in ({h.pid}, {h.canary}):
  if libc.ptrace(16, pid, 0, 0) != 0:  # PTRACE_ATTACH
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e))
  print('attached', pid)
"""


def _not_traced(host: Host, result: sandbox.SandboxResult) -> None:
  assert _status(host.pid, "TracerPid") == "0" and _status(host.canary, "TracerPid") == "0"


def _hostname_kept(host: Host, result: sandbox.SandboxResult) -> None:
  assert host.token not in socket.gethostname()


def _capped(stream: str) -> Check:
  def check(host: Host, result: sandbox.SandboxResult) -> None:
    assert 0 < len(getattr(result, stream)) <= sandbox.OUTPUT_LIMIT_BYTES
  return check


def _died_of(signum: int) -> Check:
  def check(host: Host, result: sandbox.SandboxResult) -> None:
    assert result.returncode == -signum  # also under bwrap, which exits with 128 + signum
  return check


def _no_stderr(host: Host, result: sandbox.SandboxResult) -> None:
  assert result.stderr == ""


def _tcp(h: Host) -> str:
  port = h.tcp.getsockname()[1]
  return f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('in')"


def _udp(h: Host) -> str:
  port = h.udp.getsockname()[1]
  return (f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
          f"s.sendto(b'pwned', ('127.0.0.1', {port}))\nprint('sent')")


def _unix(address: str) -> str:
  return (f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({address!r})\n"
          "print('in')")


def _pipe_into_host(h: Host) -> str:
  return f"""import os
os.close(0)
os.close(1)
fd = os.open('/proc/{h.pid}/fd/{h.pipe[1]}', os.O_WRONLY)
os.write(fd, b'pwned')
"""


def _pipe_empty(host: Host, result: sandbox.SandboxResult) -> None:
  with pytest.raises(BlockingIOError):
    os.read(host.pipe[0], 1)


_WORK = os.path.dirname(REPO)

ATTACKS = (
    # Reading what is not its own.
    Attack("read_etc_shadow", lambda h: "print(open('/etc/shadow').read())", "forbidden",
           (_printed_nothing, _absent("root:"))),
    Attack("read_repo_sources",
           lambda h: f"import os\nprint(os.listdir({h.repo!r}))\n"
                     f"print(open({h.repo + '/envs/sandbox.py'!r}).read())",
           "error", (_printed_nothing, _absent("_CALL_UIDS")), namespaces_only=True),
    Attack("read_home_ssh_keys",
           lambda h: f"import os\nprint(os.listdir({h.home!r}))\n"
                     f"print(open({h.home + '/.ssh/id_rsa'!r}).read())",
           "error", rlimits_reason="forbidden"),
    Attack("read_parent_environ",
           lambda h: f"""import os
print(dict(os.environ))
for pid in ['self', '1', str(os.getppid()), '{h.pid}'] + os.listdir('/proc'):
  try:
    print(pid, open(f'/proc/{{pid}}/environ', 'rb').read())
  except OSError:
    pass
print(os.popen('env; cat /proc/{h.pid}/environ').read())
""", "ok", (_absent("{h.secret}"),)),
    Attack("read_other_processes_cmdlines",
           lambda h: """import os
for pid in os.listdir('/proc'):
  try:
    print(pid, open(f'/proc/{pid}/cmdline', 'rb').read(), open(f'/proc/{pid}/status').read())
  except OSError:
    pass
""", "ok", (_absent("{h.canary_token}", "pytest"),), namespaces_only=True),
    Attack("read_parent_memory",
           lambda h: f"print(open('/proc/{h.pid}/maps').read())\n"
                     f"print(open('/proc/{h.pid}/mem', 'rb').read(64))",
           "error", rlimits_reason="forbidden"),
    # Writing anywhere but its private working directory.
    Attack("write_into_repo", lambda h: _write(h.path(h.repo)), "error",
           (_printed_nothing, _no_file(REPO)), rlimits_reason="forbidden"),
    Attack("write_into_root_home", lambda h: _write(h.path("/root")), "error",
           (_printed_nothing, _no_file("/root")), rlimits_reason="forbidden"),
    Attack("write_into_work_dir", lambda h: _write(h.path(_WORK)), "error",
           (_printed_nothing, _no_file(_WORK)), rlimits_reason="forbidden"),
    Attack("write_into_etc", lambda h: _write(h.path("/etc")), "forbidden",
           (_printed_nothing, _no_file("/etc"))),
    Attack("write_into_host_tmp",
           lambda h: _write(h.path("/tmp")) + f"print(open({h.path('/tmp')!r}).read())",
           "ok", (_no_file("/tmp"),), namespaces_only=True),
    Attack("write_into_shared_dirs",
           lambda h: "".join(f"try:\n  open({h.path(d)!r}, 'w').write('x')\n  print({d!r})\n"
                             "except OSError:\n  pass\n"
                             for d in ("/var/tmp", "/dev/shm", "/dev", "/run", "/", h.home)),
           "ok", (_printed_nothing, _no_file("/var/tmp", "/dev/shm", "/dev", "/run", "/",
                                             "{h.home}")),
           namespaces_only=True),
    Attack("symlink_out_of_tmp",
           lambda h: f"import os\nos.symlink({h.path(h.repo)!r}, 'link')\n" + _write("link"),
           "error", (_printed_nothing, _no_file(REPO)), rlimits_reason="forbidden"),
    # The environment.
    Attack("print_environment_secret", lambda h: "import os\nprint(os.environ)\nos.system('env')",
           "ok", (_absent("{h.secret}", "MARFT_TEST_SECRET"),)),
    # Processes.
    Attack("shell_commands",
           lambda h: "import subprocess\nsubprocess.run(['/bin/sh', '-c', "
                     f"'cat /etc/shadow; touch {h.path(h.repo)}'], check=True)",
           "error", (_printed_nothing, _no_file(REPO))),
    Attack("fork_bomb", _fork_bomb, "timeout", timeout_s=1.0),
    Attack("daemon_sleeper_outlives_run",
           lambda h: _daemon(["/bin/sh", "-c", f"sleep 30; : {h.token}"]), "ok",
           namespaces_only=True, contained=()),
    Attack("daemon_spinner_outlives_run",
           lambda h: _daemon(["python3", "-c", _SPIN, h.token]), "ok", namespaces_only=True,
           contained=()),
    Attack("new_user_namespace_as_root",
           lambda h: "import subprocess\nsubprocess.run(['unshare', '-r', 'id'], check=True)",
           "error", (_printed_nothing, _absent("uid=0")), namespaces_only=True),
    Attack("become_root", lambda h: "import os\nos.setgid(0)\nos.setuid(0)\nprint(os.getuid())",
           "error", rlimits_reason="forbidden"),  # bwrap: uid 0 is not mapped (EINVAL)
    Attack("raise_own_limits",
           lambda h: "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
                     "b = bytearray(10**9)\nprint('raised')",
           "error"),
    # Signals (the test process would die of SIGKILL, and records the catchable ones).
    Attack("kill_parent_and_host_pids",
           lambda h: f"import os, signal\nfor s in (signal.SIGTERM, signal.SIGKILL):\n"
                     f"  os.kill(os.getppid(), s)\nos.kill({h.pid}, signal.SIGTERM)\n"
                     f"os.kill({h.pid}, signal.SIGKILL)\nos.kill({h.canary}, signal.SIGKILL)",
           "error", rlimits_reason="forbidden"),
    Attack("kill_every_process",
           lambda h: "import os, signal, subprocess\nsubprocess.Popen(['sleep', '30'])\n"
                     "for s in (signal.SIGTERM, signal.SIGKILL):\n  os.kill(-1, s)\n",
           "ok"),
    Attack("kill_host_process_group",
           lambda h: f"import os, signal\nos.killpg({h.pgid}, signal.SIGKILL)\n"
                     f"os.killpg(os.getpgid({h.pid}), signal.SIGKILL)",
           "error", rlimits_reason="forbidden"),
    Attack("kill_own_group", lambda h: "import os, signal\nos.killpg(0, signal.SIGKILL)",
           "timeout", (_died_of(signal.SIGKILL),)),  # SIGKILL reads as the kill of a timeout
    Attack("ptrace_host_processes", _ptrace, "error", (_printed_nothing, _not_traced),
           rlimits_reason="forbidden"),
    Attack("set_host_name",
           lambda h: f"open('/proc/sys/kernel/hostname', 'w').write('{h.token}')\nprint('set')",
           "forbidden", (_printed_nothing, _hostname_kept)),
    # The network.
    Attack("connect_to_host_tcp_listener", _tcp, "forbidden",
           (_printed_nothing, _nothing_arrived("tcp")), namespaces_only=True),
    Attack("send_udp_to_host", _udp, "ok", (_nothing_arrived("udp"),),  # to its own loopback
           namespaces_only=True),
    Attack("connect_to_host_abstract_unix_socket", lambda h: _unix(h.abstract.getsockname()),
           "forbidden", (_printed_nothing, _nothing_arrived("abstract")), namespaces_only=True),
    Attack("connect_to_host_unix_socket_file", lambda h: _unix(h.unix.getsockname()), "error",
           (_printed_nothing, _nothing_arrived("unix")), namespaces_only=True),
    Attack("dns_lookup", lambda h: "import socket\nprint(socket.getaddrinfo('example.com', 80))",
           "forbidden", namespaces_only=True),
    # Resources.
    Attack("memory_exhaustion",
           lambda h: "x = []\nwhile True:\n  x.append(bytearray(10**7))", "memory", memory_mb=64),
    Attack("huge_mmap",
           lambda h: "import mmap\nm = mmap.mmap(-1, 10**11)\nm[-1] = 1", "memory", memory_mb=64),
    Attack("disk_exhaustion",  # under rlimits it would fill the host's disk until its timeout
           lambda h: f"i = 0\nwhile True:\n  open(f'{h.token}-{{i}}', 'wb').write(b'x' * (1 << 19))"
                     "\n  i += 1",
           "output_limit", namespaces_only=True),
    Attack("one_huge_file", lambda h: "open('big', 'wb').write(b'x' * (64 << 20))",
           "output_limit"),
    Attack("huge_stdout", lambda h: "while True:\n  print('x' * 10000)", "output_limit",
           (_capped("stdout"),)),
    Attack("huge_stderr", lambda h: "import sys\nwhile True:\n  sys.stderr.write('x' * 10000)",
           "output_limit", (_capped("stderr"),)),
    Attack("infinite_loop", lambda h: "while True:\n  pass", "timeout", timeout_s=0.5,
           max_seconds=3.0),
    Attack("spinning_threads_ignoring_signals",
           lambda h: "import signal, threading\n"
                     "for s in (signal.SIGXCPU, signal.SIGTERM, signal.SIGINT):\n"
                     "  signal.signal(s, signal.SIG_IGN)\n"
                     "def spin():\n  while True:\n    pass\n"
                     "for _ in range(8):\n  threading.Thread(target=spin).start()\n",
           "timeout", timeout_s=0.5, max_seconds=3.0),
    Attack("open_file_exhaustion", lambda h: "fs = [open('/dev/null') for _ in range(10**6)]",
           "forbidden"),
    Attack("deep_recursion_past_the_c_stack",
           lambda h: "import sys\nsys.setrecursionlimit(10**9)\nx = []\n"
                     "for _ in range(10**5):\n  x = [x]\nprint(len(repr(x)))",
           "error", timeout_s=4.0, max_seconds=6.0),  # SIGSEGV
    Attack("ctypes_libc_system",
           lambda h: f"import ctypes, sys\nrc = ctypes.CDLL(None).system(b'touch {h.path(h.repo)}')"
                     "\nsys.exit(rc >> 8)",
           "error", (_printed_nothing, _no_file(REPO)), rlimits_reason="forbidden"),
    Attack("ctypes_write_raw_address",
           lambda h: "import ctypes\nctypes.memmove(0x1000, b'pwned', 5)\nprint('written')",
           "error", (_printed_nothing, _died_of(signal.SIGSEGV))),
    Attack("write_into_host_pipe_by_fd", _pipe_into_host, "error", (_pipe_empty,),
           rlimits_reason="forbidden"),
    Attack("terminal_injection",
           lambda h: "import fcntl, termios\nfd = open('/dev/tty', 'wb')\n"
                     "fcntl.ioctl(fd, termios.TIOCSTI, b'x')", "error"),
    Attack("close_std_fds_then_crash", lambda h: "import os\nos.close(1)\nos.close(2)\n1/0",
           "error", (_printed_nothing, _no_stderr)),
)


def _cases():
  for i, isolation in enumerate(ISOLATIONS):
    for attack in ATTACKS:
      marks = [pytest.mark.slow] if i > 0 else []
      if isolation == "rlimits" and attack.namespaces_only:
        marks.append(pytest.mark.skip(reason="the rlimits fall-back does not contain this"))
      elif isolation == "rlimits" and os.geteuid() != 0:
        marks.append(pytest.mark.skip(reason="rlimits as the calling user contain little"))
      yield pytest.param(isolation, attack, id=f"{isolation}-{attack.name}", marks=marks)


@pytest.fixture(scope="module")
def baseline():
  """This process before the suite, a canary process (of this user) that the attacks aim at,
  and the signals that reach this process."""
  sandbox.run_python("print(1)")  # the probe and its imports, before measuring
  token = uuid.uuid4().hex
  canary = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", token])
  received = []
  previous = {s: signal.signal(s, lambda sig, frame: received.append(sig)) for s in _SIGNALS}
  yield {"rss_kb": int(_status("self", "VmRSS")), "children": _children() - {canary.pid},
         "fds": len(os.listdir("/proc/self/fd")), "threads": len(os.listdir("/proc/self/task")),
         "canary": canary, "canary_token": token, "received": received}
  for s, handler in previous.items():
    signal.signal(s, handler)
  canary.kill()
  canary.wait()


def test_there_are_enough_attacks():
  assert ISOLATIONS, "no sandbox works on this machine"
  assert len(ATTACKS) >= 20 and len({a.name for a in ATTACKS}) == len(ATTACKS)
  assert all(a.reason in REASONS and a.rlimits_reason in (None, *REASONS) for a in ATTACKS)


def test_bwrap_shows_only_the_system_and_the_interpreter():
  if "bwrap" not in ISOLATIONS:
    pytest.skip("needs bubblewrap")
  result = sandbox.run_python("import os\nprint(*sorted(os.listdir('/')))", isolation="bwrap")
  interpreter = sandbox._probe("bwrap").python.split("/")[1]  # "usr", or where it is installed
  assert result.ok and set(result.stdout.split()) <= {
      *(d[1:] for d in sandbox._SYSTEM_DIRS), "dev", "proc", "tmp", interpreter}, result
  system = sandbox._bwrap_mounts("/usr/local/bin/python3")
  assert "--ro-bind" not in system and ["--ro-bind-try", "/usr", "/usr"] == system[:3]
  assert sandbox._bwrap_mounts("/opt/py/bin/python3") == [*system, "--ro-bind", "/opt/py",
                                                           "/opt/py"]


@pytest.mark.parametrize("isolation,attack", _cases())
def test_attack_is_contained(isolation, attack, baseline, monkeypatch, caplog):
  host = Host(uuid.uuid4().hex, baseline["canary"].pid, baseline["canary_token"])
  monkeypatch.setenv("MARFT_TEST_SECRET", host.secret)
  try:
    source = attack.source(host)
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="absl"):
      result = sandbox.run_python(source, timeout_s=attack.timeout_s, memory_mb=attack.memory_mb,
                                  isolation=isolation)
    seconds = time.monotonic() - start
    expected = attack.reason if isolation == "bwrap" else attack.rlimits_reason or attack.reason
    assert result.reason in REASONS
    assert (result.ok, result.reason) == (expected == "ok", expected), result
    assert seconds < attack.max_seconds
    logged = [r.getMessage() for r in caplog.records if "Sandbox run failed" in r.getMessage()]
    assert logged == ([] if result.ok else
                      [f"Sandbox run failed: {result.reason} (exit status {result.returncode})"])
    # Contained on the host: the attack's own checks, then what holds for every attack.
    for check in attack.contained:
      check(host, result)
    assert host.secret not in result.stdout + result.stderr
    assert wait_gone(host.token) == []
    for directory in host.watched_dirs():
      assert not [n for n in _listdir(directory) if host.token in n], directory
    assert baseline["received"] == [] and baseline["canary"].poll() is None
  finally:
    host.close()


def test_this_process_is_unaffected(baseline):
  """After the attacks: no new child (zombies count), file descriptor or thread, little memory
  growth, no signal received, no file of a sandbox user in the checkout or working directory."""
  assert _children() - {baseline["canary"].pid} == baseline["children"]
  assert len(os.listdir("/proc/self/fd")) == baseline["fds"]
  assert len(os.listdir("/proc/self/task")) <= baseline["threads"]
  assert int(_status("self", "VmRSS")) - baseline["rss_kb"] < 64 << 10
  assert baseline["received"] == [] and baseline["canary"].poll() is None
  if os.geteuid() == 0:  # sandboxed code runs as a uid of its own only under root
    assert _sandbox_owned(REPO) + _sandbox_owned(os.getcwd()) == []


def _sandbox_owned(top: str) -> list[str]:
  found = []
  for root, dirs, files in os.walk(top):
    dirs[:] = [d for d in dirs if d != ".git"]
    for name in dirs + files:
      try:
        uid = os.lstat(os.path.join(root, name)).st_uid
      except FileNotFoundError:  # removed meanwhile by someone else
        continue
      if uid in sandbox._CALL_UIDS or uid == 65534:
        found.append(os.path.join(root, name))
  return found


def _listdir(directory: str) -> list[str]:
  try:
    return os.listdir(directory)
  except (FileNotFoundError, PermissionError):
    return []
