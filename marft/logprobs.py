"""Token log-probabilities, always in float32."""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """`log softmax(logits)[target]` in float32; `logits: [..., V]`, `targets: int[...]`."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def token_logprobs_and_entropy(logits: jax.Array, targets: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
  """`token_logprobs(logits, targets)` and the entropy `H = -sum_v p_v log p_v` of each
  position's distribution, both float32 `[...]`."""
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  entropy = log_z - jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)
  return picked - log_z, entropy


def chunked_token_logprobs(hidden: jax.Array, targets: jax.Array,
                           project: Callable[[jax.Array], jax.Array], chunk: int,
                           with_entropy: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
  """`token_logprobs(project(hidden), targets)`, `hidden: [B, T, D]`, computed over chunks of
  `chunk` positions (T padded up to a multiple) in a `lax.map`; each chunk is a `jax.checkpoint`,
  so neither pass holds more than one chunk's `[B, chunk, V]` logits. `with_entropy` also
  returns each position's entropy (`token_logprobs_and_entropy`)."""
  b, t, d = hidden.shape
  if chunk <= 0:
    raise ValueError(f"chunk={chunk} must be positive")
  parts = -(-t // chunk)
  pad = parts * chunk - t
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets.astype(jnp.int32), ((0, 0), (0, pad)))
  hidden = hidden.reshape(b, parts, chunk, d).swapaxes(0, 1)
  targets = targets.reshape(b, parts, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one_chunk(inputs):
    h, y = inputs
    if with_entropy:
      return token_logprobs_and_entropy(project(h), y)
    return token_logprobs(project(h), y)

  out = jax.lax.map(one_chunk, (hidden, targets))  # [parts, B, chunk]
  unchunk = lambda x: x.swapaxes(0, 1).reshape(b, parts * chunk)[:, :t]
  return jax.tree.map(unchunk, out)


def next_token_logprobs(model, tokens: jax.Array, with_entropy: bool = False
                        ) -> jax.Array | tuple[jax.Array, jax.Array]:
  """`log p(tokens[:, t+1] | tokens[:, :t+1])`, shape `[B, T-1]`, from one full forward;
  `with_entropy` also returns the entropy of each of those next-token distributions.

  With `model.config.logprob_chunk = c > 0`, the LM head (`model.logits`) is applied to the
  final hidden states in chunks of c positions (`chunked_token_logprobs`)."""
  chunk = getattr(getattr(model, "config", None), "logprob_chunk", 0)
  if not chunk:
    logits = model(tokens[:, :-1])
    if with_entropy:
      return token_logprobs_and_entropy(logits, tokens[:, 1:])
    return token_logprobs(logits, tokens[:, 1:])
  hidden, _ = model.hidden_states(tokens[:, :-1])
  return chunked_token_logprobs(hidden, tokens[:, 1:], model.logits, chunk, with_entropy)
