"""Sharded train steps on 8 simulated CPU devices equal the one-device step."""
import json
import os
import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

from marft.sharding import MESH_AXES, logical_to_spec, make_mesh

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def multidevice():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, os.path.join(HERE, "multidevice_train_step.py")],
                       capture_output=True, text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


MESHES = ["(1, 1, 1)", "(8, 1, 1)", "(2, 4, 1)", "(2, 2, 2)", "(1, 2, 4)"]


@pytest.mark.parametrize("mesh", MESHES)
def test_loss_and_gradients_match_one_device(multidevice, mesh):
  assert multidevice["devices"] == 8
  base, got = multidevice["(1, 1, 1)"], multidevice[mesh]
  assert abs(got["loss"][0] - got["loss"][1]) > 1e-4  # the two policies really differ
  for a, b in zip(got["loss"], base["loss"]):
    assert abs(a - b) < 1e-5
  assert got["grad_max_abs"] > 1e-3
  assert got["grad_max_abs_diff"] < 1e-5


def test_parameters_are_sharded_as_the_rules_say(multidevice):
  # Leading axis: the policy axis (replicated). embed: [vocab, embed] -> (tensor, fsdp).
  specs = multidevice["(2, 2, 2)"]["specs"]
  assert specs["embed"] == "P(None, 'tensor', 'fsdp')"
  assert specs["q_kernel"] == "P(None, 'fsdp', 'tensor')"  # [embed, heads]
  assert specs["down_kernel"] == "P(None, 'tensor', 'fsdp')"  # [mlp, embed]
  assert specs["norm"] == "P(None, 'fsdp')"
  assert multidevice["(2, 4, 1)"]["specs"]["q_kernel"] == "P(None, 'fsdp', None)"
  assert multidevice["(8, 1, 1)"]["specs"]["embed"] == "P(None, None, None)"


def test_sharded_generation_matches_one_device(multidevice):
  assert multidevice["sharded_generation_matches"]


def test_rules_drop_axes_that_do_not_divide_or_repeat():
  mesh = jax.sharding.AbstractMesh((2, 4, 2), MESH_AXES)
  spec = jax.sharding.PartitionSpec
  assert logical_to_spec(("vocab", "embed"), (10, 8), mesh) == spec("tensor", "fsdp")
  assert logical_to_spec(("embed", "heads"), (6, 8), mesh) == spec(None, "tensor")
  assert logical_to_spec(("kv_heads", "heads"), (8, 8), mesh) == spec("tensor", None)
  assert logical_to_spec(("policies", "head_dim"), (2, 8), mesh) == spec(None, None)


def test_mesh_errors_are_clear():
  with pytest.raises(ValueError, match="needs"):
    make_mesh(2, 1, 1, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="at most one"):
    make_mesh(-1, -1, 1)
  assert dict(make_mesh(-1, 1, 1).shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    sizes=st.tuples(*[st.sampled_from([1, 2, 3, 4]) for _ in range(3)]),
    axes=st.lists(st.sampled_from(["vocab", "embed", "mlp", "heads", "kv_heads", "head_dim",
                                   "policies", None]), min_size=1, max_size=4),
    dims=st.lists(st.integers(1, 48), min_size=4, max_size=4))
def test_every_spec_is_valid_for_its_array(sizes, axes, dims):
  """Whatever the mesh and shape: each mesh axis at most once, and every split divides."""
  mesh = jax.sharding.AbstractMesh(sizes, MESH_AXES)
  shape = dims[:len(axes)]
  spec = logical_to_spec(axes, shape, mesh)
  used = [a for entry in spec if entry for a in ((entry,) if isinstance(entry, str) else entry)]
  assert len(used) == len(set(used))
  for entry, dim in zip(spec, shape):
    names = () if entry is None else ((entry,) if isinstance(entry, str) else entry)
    assert dim % int(np.prod([mesh.shape[a] for a in names])) == 0
