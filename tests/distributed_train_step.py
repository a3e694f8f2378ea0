"""One sharded train step of a tiny two-policy model, in one process or as one of several.

Started by tests/test_distributed.py in fresh processes (XLA_FLAGS must be set before JAX
starts): `python tests/distributed_train_step.py OUT.npz MESH...` with MESH like `2x2x2`
(data x fsdp x tensor over the first data*fsdp*tensor global devices). With
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` set it joins that job
through `sharding.maybe_initialize_distributed`, as `--config.distributed=True` does. Each
process passes the same host batch; process 0 writes, per mesh, the loss and the updated
parameters gathered from every process, and the largest parameter change.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from algorithms import sft  # noqa: E402
from marft import sharding  # noqa: E402
from marft.models.config import get_model_config  # noqa: E402
from marft.models.decoder import build_model  # noqa: E402
from marft.policies import stack_policies  # noqa: E402
from marft.train_step import init_train_state, make_train_step  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def one_step(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
  """Loss `[P]` and updated parameters (full arrays, by path) after one step on `shape`."""
  config = get_model_config("tiny", num_layers=2)
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(4, 100, (2, 16, 24)).astype(np.int32),
           "loss_mask": (rng.random((2, 16, 24)) < 0.7).astype(np.float32)}
  # First step of SGD with momentum: new = old - grad, and the momentum is sharded state too.
  optimizer = optax.sgd(1.0, momentum=0.9)
  mesh = sharding.make_mesh(*shape, devices=jax.devices()[: int(np.prod(shape))])
  graphdef, params, _ = stack_policies(build_model(config, seed=0), 2)
  params = jax.tree.map(lambda x: x.at[1].multiply(1.1), params)  # two different policies
  before = jax.tree.map(np.asarray, params)
  state = init_train_state(params, optimizer, seed=0, mesh=mesh)
  step = make_train_step(sft.loss, optimizer, graphdef, mesh=mesh, state=state)
  state, metrics = step(state, batch)
  embed = state.params["embed"].get_value()
  gathered = multihost_utils.process_allgather(state.params, tiled=True)
  flat = {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(gathered)}
  update = max(float(np.abs(np.asarray(a) - b).max())
               for a, b in zip(jax.tree.leaves(gathered), jax.tree.leaves(before)))
  return {"loss": np.asarray(metrics["loss"]), **flat, "update_max_abs": np.asarray(update),
          "local_devices_in_mesh": np.asarray(len(mesh.local_devices)),
          "embed_fully_addressable": np.asarray(embed.is_fully_addressable)}


def main() -> None:
  out_path, meshes = sys.argv[1], [tuple(map(int, m.split("x"))) for m in sys.argv[2:]]
  sharding.maybe_initialize_distributed("JAX_COORDINATOR_ADDRESS" in os.environ)
  results, seconds = {}, {}
  for shape in meshes:
    start = time.perf_counter()
    for key, value in one_step(shape).items():
      results[f"{'x'.join(map(str, shape))}/{key}"] = value
    seconds["x".join(map(str, shape))] = round(time.perf_counter() - start, 2)
  if jax.process_index() == 0:
    np.savez(out_path, **results)
  print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                    "devices": jax.device_count(), "local_devices": jax.local_device_count(),
                    "seconds": seconds}))


if __name__ == "__main__":
  main()
