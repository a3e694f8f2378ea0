"""Device mesh and the one table that maps logical parameter axes to mesh axes.

Every parameter carries `logical_axes` metadata (see `marft.models.decoder`). `LOGICAL_RULES`
maps each logical name to a mesh axis (or a tuple of them, or None for replicated); a mesh axis
is used at most once per array, and an axis whose size does not divide the dimension is
dropped for that array (replicated) rather than failing. The same code runs on one CPU, one
GPU box, or a multi-host slice after `jax.distributed.initialize()`.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. `policies` (the stacked-policy axis) stays replicated by default;
# map it to "data" to spread role-specialised policies over devices.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("policies", None),
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
)


def maybe_initialize_distributed(enabled: bool) -> None:
  """Joins a multi-process job when `enabled` (`--config.distributed=True`); else a no-op.

  Call it before anything touches a device. `jax.distributed.initialize()` finds the
  coordinator, process count and process id itself under SLURM, Open MPI, Kubernetes and on
  Cloud TPU VMs. For a launch by hand set `JAX_COORDINATOR_ADDRESS=host:port` (read by JAX) and
  `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` (read here); whatever is unset comes from the cluster.
  Afterwards `jax.devices()`, and so `make_mesh`, spans every process's devices.
  """
  if not enabled or jax.distributed.is_initialized():
    return
  env_int = lambda name: int(os.environ[name]) if os.environ.get(name) else None
  jax.distributed.initialize(num_processes=env_int("JAX_NUM_PROCESSES"),
                             process_id=env_int("JAX_PROCESS_ID"))


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `(data, fsdp, tensor)` mesh over all devices of all processes; `-1` takes what is left."""
  devices = list(devices if devices is not None else jax.devices())
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {shape}")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot be split into mesh {shape}")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                     f"have {len(devices)}")
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=devices)


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Sequence[tuple[str, Any]] = LOGICAL_RULES) -> PartitionSpec:
  """The PartitionSpec for an array of `shape` whose dimensions have these logical names."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name, dim in zip(logical_axes, shape):
    mesh_axes = _as_tuple(table.get(name) if name is not None else None)
    mesh_axes = tuple(a for a in mesh_axes if a not in used and mesh.shape[a] > 1)
    size = math.prod(mesh.shape[a] for a in mesh_axes)
    if not mesh_axes or dim % size:
      spec.append(None)
      continue
    used.update(mesh_axes)
    spec.append(mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
  return PartitionSpec(*spec)


def state_shardings(state: nnx.State, mesh: Mesh, *, stacked: bool = False,
                    rules: Sequence[tuple[str, Any]] = LOGICAL_RULES) -> nnx.State:
  """NamedShardings for every Variable of `state`, from its `logical_axes` metadata.

  `stacked=True` means each array has a leading policy axis beyond its metadata. Variables
  without metadata are replicated.
  """
  def sharding_of(variable: nnx.Variable) -> nnx.Variable:
    value = variable.get_value()
    axes = tuple(variable.get_metadata().get("logical_axes") or (None,) * (
        value.ndim - int(stacked)))
    if stacked:
      axes = ("policies",) + axes
    return variable.replace(NamedSharding(mesh, logical_to_spec(axes, value.shape, mesh, rules)))

  return jax.tree.map(sharding_of, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, *, stacked: bool = True,
                   rules: Sequence[tuple[str, Any]] = LOGICAL_RULES) -> NamedSharding:
  """Sharding for batch arrays `[P, B, ...]` (or `[B, ...]` unstacked): rows over `batch`'s axes.

  One sharding serves every leaf of a batch pytree, whatever its rank; B must divide by the
  product of those mesh axes.
  """
  table = dict(rules)
  rows = tuple(a for a in _as_tuple(table.get("batch")) if mesh.shape[a] > 1) or None
  spec = ((table.get("policies"),) if stacked else ()) + (rows,)
  return NamedSharding(mesh, PartitionSpec(*spec))


def batch_shards(mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_RULES) -> int:
  """How many ways batch rows are split on `mesh` (batch sizes must be a multiple of it)."""
  return math.prod(mesh.shape[a] for a in _as_tuple(dict(rules).get("batch")))


def _as_tuple(target: str | tuple[str, ...] | None) -> tuple[str, ...]:
  return (target,) if isinstance(target, str) else tuple(target or ())


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def put_global(tree: Any, shardings: Any) -> Any:
  """`jax.device_put` of host values that every process holds in full (same seed, same data).

  With one process it is `jax.device_put`. With several, each numpy or single-process leaf
  becomes a global array of which this process places only its own shards
  (`jax.make_array_from_process_local_data` with the full shape); leaves already spanning
  processes are resharded. A numpy batch cannot go straight into a sharded `jit` there.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)

  def place(x: Any, target: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, target)
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(target, x, x.shape)

  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: place(x, shardings), tree)
  return jax.tree.map(place, tree, shardings)


def to_host(tree: Any) -> Any:
  """`jax.device_get` that also works for arrays spread over processes: each gets them whole."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def describe(mesh: Mesh) -> str:
  """One line: mesh shape and devices, for logs."""
  kinds = sorted({d.platform for d in np.ravel(mesh.devices)})
  return f"mesh {dict(mesh.shape)} over {mesh.devices.size} {'/'.join(kinds)} devices"
