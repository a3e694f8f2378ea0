"""Runs one sharded train step on several mesh shapes of 8 simulated CPU devices.

Started by tests/test_sharding.py in a fresh process (XLA_FLAGS must be set before JAX starts);
prints one JSON object: per mesh, the loss, the max deviation of the gradient from the
one-device run, and the PartitionSpec of a few parameters.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from algorithms import sft  # noqa: E402
from marft.models.config import get_model_config  # noqa: E402
from marft.models.decoder import build_model  # noqa: E402
from marft.policies import stack_policies  # noqa: E402
from marft import sharding  # noqa: E402
from marft.sharding import make_mesh  # noqa: E402
from marft.train_step import init_train_state, make_train_step  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

MESHES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 2, 4)]
PROBES = {
    "embed": ("embed",),
    "q_kernel": ("layers", 0, "attn", "q_proj", "kernel"),
    "down_kernel": ("layers", 0, "mlp", "down_proj", "kernel"),
    "norm": ("final_norm", "weight"),
}


def main():
  config = get_model_config("tiny", num_layers=2)
  policies = 2
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, 100, (policies, 16, 24)).astype(np.int32)
  mask = (rng.random((policies, 16, 24)) < 0.7).astype(np.float32)
  batch = {"tokens": tokens, "loss_mask": mask}
  optimizer = optax.sgd(1.0)  # new = old - grad: the update IS the gradient
  results = {"devices": jax.device_count()}
  for shape in MESHES:
    devices = jax.devices()[: int(np.prod(shape))]
    mesh = make_mesh(*shape, devices=devices)
    graphdef, params, _ = stack_policies(build_model(config, seed=0), policies)
    # Two different policies: perturb the second.
    params = jax.tree.map(lambda x: x.at[1].multiply(1.1), params)
    before = jax.tree.map(np.asarray, params)
    state = init_train_state(params, optimizer, seed=0, mesh=mesh)
    specs = {name: str(_get(state.params, path).get_value().sharding.spec)
             for name, path in PROBES.items()}
    step = make_train_step(sft.loss, optimizer, graphdef, mesh=mesh, state=state)
    state, metrics = step(state, batch)
    grads = jax.tree.map(lambda b, a: b - np.asarray(a), before, state.params)
    flat = np.concatenate([g.ravel() for g in jax.tree.leaves(grads)])
    results[str(shape)] = {"loss": np.asarray(metrics["loss"]).tolist(), "grad": flat,
                           "specs": specs}
  base = results[str(MESHES[0])]["grad"]
  for shape in MESHES:
    entry = results[str(shape)]
    entry["grad_max_abs_diff"] = float(np.abs(entry.pop("grad") - base).max())
    entry["grad_max_abs"] = float(np.abs(base).max())
  results["sharded_generation_matches"] = sharded_generation_matches_one_device()
  print(json.dumps(results))


def _get(state, path):
  node = state
  for key in path:
    node = node[key]
  return node


def sharded_generation_matches_one_device():
  """Greedy and sampled tokens on a (4, 2, 1) mesh equal the one-device tokens."""
  from marft.sampling import generate
  config = get_model_config("tiny", num_layers=2)
  model = build_model(config, seed=1)
  rng = np.random.default_rng(1)
  prompts = rng.integers(4, 100, (6, 12)).astype(np.int32)
  lengths = rng.integers(3, 12, 6).astype(np.int32)
  outs = []
  for shape in [(1, 1, 1), (4, 2, 1)]:
    mesh = make_mesh(*shape, devices=jax.devices()[: int(np.prod(shape))])
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, sharding.state_shardings(state, mesh))
    placed = nnx.merge(graphdef, state)
    for temperature in (0.0, 1.0):
      out = generate(placed, prompts, lengths, jax.random.key(3), max_new_tokens=8,
                     temperature=temperature, mesh=mesh)
      outs.append(np.asarray(out.tokens))
  return bool(np.array_equal(outs[0], outs[2]) and np.array_equal(outs[1], outs[3]))


if __name__ == "__main__":
  main()
