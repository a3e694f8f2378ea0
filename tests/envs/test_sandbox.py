"""The sandbox contains hostile code (loops, allocation, fork bombs, writes, network, shell) and
reports it as a failure, under every isolation that works here."""
import concurrent.futures
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from envs import sandbox
from tests.envs.processes import wait_gone

ISOLATIONS = sandbox.available_isolations()


@pytest.fixture(params=ISOLATIONS)
def isolation(request):
  return request.param


def test_some_isolation_works():
  assert ISOLATIONS, "no sandbox works on this machine"
  if "bwrap" not in ISOLATIONS:
    pytest.skip("bubblewrap missing: only the rlimits fall-back is tested")


def test_normal_code_returns_stdout(isolation):
  result = sandbox.run_python("import sys\nprint(input()[::-1], file=sys.stdout)\nprint(6*7)",
                              stdin="abc\n", isolation=isolation)
  assert result == sandbox.SandboxResult(True, "ok", "cba\n42\n", "", 0)


def test_errors_are_failures(isolation):
  for source in ("1/0", "def f(:", "\x00", "raise SystemExit(3)", "\ud800"):
    result = sandbox.run_python(source, isolation=isolation)
    assert not result.ok and result.reason == "error", (source, result)


def test_runs_as_unprivileged_user_in_a_private_directory(isolation):
  source = "import os\nopen('out.txt', 'w').write('hi')\nprint(os.getuid(), open('out.txt').read())"
  result = sandbox.run_python(source, isolation=isolation)
  assert result.ok, result
  uid, text = result.stdout.split()
  assert text == "hi"
  if os.geteuid() == 0:
    assert uid != "0"


def test_infinite_loop_times_out(isolation):
  start = time.monotonic()
  result = sandbox.run_python("while True:\n  pass", timeout_s=0.5, isolation=isolation)
  assert (result.ok, result.reason) == (False, "timeout")
  assert time.monotonic() - start < 3.0


def test_sleeping_process_times_out(isolation):
  result = sandbox.run_python("import time\ntime.sleep(60)", timeout_s=0.3, isolation=isolation)
  assert result.reason == "timeout"


def test_unbounded_allocation_is_contained(isolation):
  for source in ("x = []\nwhile True:\n  x.append(' ' * 10**6)", "b = bytearray(10**11)"):
    result = sandbox.run_python(source, memory_mb=64, isolation=isolation)
    assert (result.ok, result.reason) == (False, "memory"), result


def test_output_is_capped(isolation):
  result = sandbox.run_python("while True:\n  print('x' * 1000)", isolation=isolation)
  assert (result.ok, result.reason) == (False, "output_limit")
  assert len(result.stdout) <= sandbox.OUTPUT_LIMIT_BYTES


def test_fork_bomb_is_contained(isolation):
  token = uuid.uuid4().hex
  bomb = "import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n"
  source = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {bomb!r}, {token!r}])"
  result = sandbox.run_python(source, timeout_s=1.0, isolation=isolation)
  assert not result.ok and result.reason == "timeout"
  assert wait_gone(token) == []
  # This process is unaffected: it can still start processes and run sandboxes.
  assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).stdout == b"1\n"
  assert sandbox.run_python("print(1)", isolation=isolation).ok


def test_background_processes_are_killed(isolation):
  token = uuid.uuid4().hex
  source = f"import subprocess\nsubprocess.Popen(['/bin/sh', '-c', 'sleep 30; : {token}'])"
  if isolation == "bwrap":  # a new session leaves the process group: only namespaces catch it
    source += f"\nsubprocess.Popen(['setsid', '/bin/sh', '-c', 'sleep 30; : {token}'])"
  result = sandbox.run_python(source, isolation=isolation)
  assert result.ok, result
  assert wait_gone(token) == []


def test_writing_outside_the_working_directory_fails(isolation, tmp_path):
  target = tmp_path / "pwned"  # under bwrap its directory is not even there
  assert not sandbox.run_python(f"open({str(target)!r}, 'w')", isolation=isolation).ok
  assert not target.exists()
  assert sandbox.run_python("open('/etc/pwned', 'w')", isolation=isolation).reason == "forbidden"
  assert not os.path.exists("/etc/pwned")
  # The checkout: read-only, or (a checkout under /tmp, as in CI) absent behind bwrap's /tmp.
  path = os.path.abspath("pwned")
  result = sandbox.run_python(f"open({path!r}, 'w')", isolation=isolation)
  assert not result.ok and result.reason in ("forbidden", "error")
  assert not os.path.exists(path)


def test_bwrap_tmp_is_private():
  if "bwrap" not in ISOLATIONS:
    pytest.skip("needs bubblewrap")
  name = f"/tmp/{uuid.uuid4().hex}"
  for path in (name, "/var/tmp/x", "/dev/shm/x", "/dev/x", "/run/x"):
    source = f"open({path!r}, 'w').write('x')\nprint(open({path!r}).read())"
    result = sandbox.run_python(source, isolation="bwrap")
    assert result.ok == (path == name), (path, result)
  assert not os.path.exists(name)


def _listener():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  return server


def test_network_is_unreachable():
  if "bwrap" not in ISOLATIONS:
    pytest.skip("the rlimits fall-back does not isolate the network")
  with _listener() as server:
    port = server.getsockname()[1]
    for address in (f"('127.0.0.1', {port})", "('1.1.1.1', 53)"):
      source = f"import socket\nsocket.create_connection({address}, timeout=1)"
      result = sandbox.run_python(source, isolation="bwrap")
      assert (result.ok, result.reason) == (False, "forbidden"), result
    result = sandbox.run_python("import socket\nsocket.getaddrinfo('example.com', 80)",
                                isolation="bwrap")
    assert (result.ok, result.reason) == (False, "forbidden"), result


def test_shell_is_contained(isolation, tmp_path):
  target = tmp_path / "pwned"
  commands = [f"touch {target}", "touch /etc/pwned"]
  if isolation == "bwrap":
    commands.append("python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 53), 1)'")
  source = "import os\n" + "".join(f"print(os.system({c!r}) != 0)\n" for c in commands)
  result = sandbox.run_python(source, isolation=isolation)
  assert result.ok and result.stdout == "True\n" * len(commands), result
  assert not target.exists() and not os.path.exists("/etc/pwned")


def test_concurrent_calls_and_overhead():
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(lambda i: sandbox.run_python(f"print({i})"), range(16)))
  assert [r.stdout for r in results] == [f"{i}\n" for i in range(16)]
  start = time.monotonic()
  for _ in range(10):
    sandbox.run_python("print(1)")
  assert (time.monotonic() - start) / 10 < 1.0  # ~15 ms here; loose for loaded machines


def test_unknown_isolation_is_an_error():
  with pytest.raises(ValueError):
    sandbox.run_python("print(1)", isolation="docker")
