"""P policies of one architecture as one stacked parameter tree (the leading axis is the policy)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def stack_policies(model: nnx.Module, num_policies: int, *, lora_only: bool = False
                   ) -> tuple[nnx.GraphDef, nnx.State, nnx.State | None]:
  """Splits `model` into `(graphdef, trainable stacked [P, ...], frozen or None)`.

  Every policy starts from `model`'s weights. With `lora_only`, only the LoRA adapters are
  trainable and stacked; the base weights are one frozen copy shared by all policies.
  `nnx.merge(graphdef, trainable[p], *([frozen] if frozen else []))` rebuilds policy p.
  """
  if num_policies < 1:
    raise ValueError(f"num_policies must be >= 1, got {num_policies}")
  if lora_only:
    graphdef, trainable, frozen = nnx.split(model, nnx.LoRAParam, ...)
    if not jax.tree.leaves(trainable):
      raise ValueError("lora_only=True but the model has no LoRA adapters (set lora_rank > 0)")
  else:
    graphdef, trainable = nnx.split(model)
    frozen = None
  stacked = jax.tree.map(lambda x: jnp.repeat(x[None], num_policies, axis=0), trainable)
  return graphdef, stacked, frozen


def policy_params(stacked: nnx.State, index: int) -> nnx.State:
  """The parameters of policy `index` (no copy of the others)."""
  return jax.tree.map(lambda x: x[index], stacked)
