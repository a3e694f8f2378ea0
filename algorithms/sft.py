"""Supervised fine-tuning: the language-model loss on masked target tokens."""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from marft.logprobs import next_token_logprobs


def loss_denominators(batch: dict[str, jax.Array], cfg: Any = None) -> dict[str, jax.Array]:
  """The batch-wide normaliser of `loss`: max(sum_{b,t} m_{b,t+1}, 1)."""
  del cfg
  return {"tokens": jnp.maximum(batch["loss_mask"].astype(jnp.float32)[:, 1:].sum(), 1.0)}


def loss(model: nnx.Module, batch: dict[str, jax.Array], cfg: Any = None,
         denominators: dict[str, jax.Array] | None = None
         ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Token-mean negative log-likelihood of the masked tokens.

  L = - sum_{b,t} m_{b,t+1} log p(x_{b,t+1} | x_{b,<=t}) / max(sum_{b,t} m_{b,t+1}, 1)
  (standard maximum-likelihood pretraining; `batch["loss_mask"]` marks the target tokens). The
  denominator is `denominators["tokens"]` (`loss_denominators` of the whole batch) when given,
  so that the loss over any partition of the rows sums to the loss over the batch.
  """
  del cfg
  tokens, mask = batch["tokens"], batch["loss_mask"].astype(jnp.float32)
  chex.assert_equal_shape([tokens, mask])
  logp = next_token_logprobs(model, tokens)
  target_mask = mask[:, 1:]
  count = (jnp.maximum(target_mask.sum(), 1.0) if denominators is None
           else denominators["tokens"])
  nll = -(logp * target_mask).sum() / count
  return nll, {"tokens": target_mask.sum()}
