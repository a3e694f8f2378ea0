"""Two processes x 4 simulated CPU devices (`jax.distributed`, gloo) train like one process.

Both sides run tests/distributed_train_step.py: one train step of a tiny two-policy model on a
fixed batch, on a (data, fsdp, tensor) mesh over 8 global devices. The two-process job must
give the loss and updated parameters of one process with 8 devices on the same mesh, and (slow
variant) of one device. Not bitwise: gloo's cross-process all-reduce sums partial gradients in
another order than XLA's in-process one, so float32 results move by an ulp or two (measured: loss
4.8e-7 = 1 ulp at 4.87, parameters 1.2e-7 = 1 ulp at 1). Bounds: 2e-6 on the loss, 1e-6 on
parameters, against updates of order 1e-1; 1e-5 on the loss against one device, as in
tests/test_sharding.py.
"""
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_train_step.py")


def _env(devices: int, **extra: str) -> dict[str, str]:
  # Proxy variables can make the coordinator's gRPC connection to localhost hang.
  env = {k: v for k, v in os.environ.items() if "_proxy" not in k.lower()}
  return {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "JAX_PLATFORMS": "cpu", **extra}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run(tmp_path, meshes: list[str], reference_meshes: list[str]):
  """Starts the two-process job and the one-process reference at once; their results."""
  port = _free_port()
  start = time.perf_counter()
  procs = [subprocess.Popen(
      [sys.executable, SCRIPT, str(tmp_path / "two.npz"), *meshes],
      env=_env(4, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  procs.append(subprocess.Popen([sys.executable, SCRIPT, str(tmp_path / "one.npz"),
                                 *reference_meshes], env=_env(8), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True))
  try:
    outs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  print(f"two processes + reference: {time.perf_counter() - start:.1f}s;",
        *(out.strip().splitlines()[-1] for out, _ in outs))
  return np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")


def _compare(two, one, mesh: str, reference: str, loss_tol: float) -> None:
  assert int(two[f"{mesh}/local_devices_in_mesh"]) == 4  # each process holds half the mesh
  assert not two[f"{mesh}/embed_fully_addressable"]  # parameters are global arrays
  loss, ref_loss = two[f"{mesh}/loss"], one[f"{reference}/loss"]
  assert abs(loss[0] - loss[1]) > 1e-4  # the two policies really differ
  assert np.abs(loss - ref_loss).max() <= loss_tol
  assert float(two[f"{mesh}/update_max_abs"]) > 1e-2  # the step moved the parameters
  params = [k.split("/", 1)[1] for k in two.files if k.startswith(f"{mesh}/[")]
  assert len(params) > 10
  diff = max(np.abs(two[f"{mesh}/{k}"] - one[f"{reference}/{k}"]).max() for k in params)
  assert diff <= 1e-6, f"{mesh} vs {reference}: parameters differ by {diff}"


def test_two_processes_match_one_process(tmp_path):
  two, one = _run(tmp_path, ["2x2x2"], ["2x2x2"])
  _compare(two, one, "2x2x2", "2x2x2", loss_tol=2e-6)


@pytest.mark.slow
def test_two_processes_match_one_device_and_fsdp_across_processes(tmp_path):
  # 1x4x2: the fsdp axis spans both processes (parameters gathered, gradients reduce-scattered
  # through gloo); 2x2x2: the data axis does.
  two, one = _run(tmp_path, ["2x2x2", "1x4x2"], ["1x1x1", "2x2x2", "1x4x2"])
  for mesh in ("2x2x2", "1x4x2"):
    _compare(two, one, mesh, mesh, loss_tol=2e-6)
    _compare(two, one, mesh, "1x1x1", loss_tol=1e-5)
