"""Token log-probabilities, always in float32."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """`log softmax(logits)[target]` in float32; `logits: [..., V]`, `targets: int[...]`."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def next_token_logprobs(model, tokens: jax.Array) -> jax.Array:
  """`log p(tokens[:, t+1] | tokens[:, :t+1])`, shape `[B, T-1]`, from one full forward."""
  logits = model(tokens[:, :-1])
  return token_logprobs(logits, tokens[:, 1:])
