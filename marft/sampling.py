"""Batched generation under `jax.jit`: one prefill, then a `lax.while_loop` decode.

The KV cache is allocated inside the compiled program (`prompt bucket + max_new_tokens` slots)
and updated in place by XLA, so no per-call host buffers exist to donate. Prompts fill slots
`[0, bucket)`; generated token t of every row fills slot `bucket + t`, one uniform in-place
write per step, while each row keeps its own RoPE positions. Prompt lengths and
batch sizes are rounded up to buckets so that varying inputs reuse a few compiled programs.
The loop stops as soon as every row has met a stop token or its length limit.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from marft import sharding
from marft.logprobs import token_logprobs
from marft.models.decoder import EMPTY_POSITION, Decoder, init_cache

_MIN_PROMPT_BUCKET = 16
_BATCH_MULTIPLE = 8


class SampleOutput(NamedTuple):
  """`tokens: int32[B, N]` (generated only, `pad_id` after a stop), `logprobs: float32[B, N]`
  (log-probability of each generated token under the unmodified model distribution, 0 after
  the end), `lengths: int32[B]` (generated count, the stop token included)."""

  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array


def prompt_bucket(length: int) -> int:
  """The padded prompt width used for a longest prompt of `length` tokens (a power of two)."""
  return max(_MIN_PROMPT_BUCKET, 1 << max(0, int(length) - 1).bit_length())


def shape_bucket(size: int, minimum: int = 16) -> int:
  """The padded size of a training array dimension: the smallest `2^e` or `3 * 2^(e-1)` that is
  at least `max(size, minimum)` (16, 24, 32, 48, 64, 96, ...): at most a third of it is padding,
  and sizes repeat, so jitted steps compile for two shapes per doubling."""
  size = max(int(size), minimum, 1)
  power = 1 << (size - 1).bit_length()
  return power * 3 // 4 if power >= 4 and power * 3 // 4 >= size else power


def filter_logits(logits: jax.Array, *, temperature: float, top_k: int, top_p: float
                  ) -> jax.Array:
  """Temperature-scaled logits with everything outside the top-k / nucleus set to -inf."""
  logits = logits.astype(jnp.float32) / temperature
  neg_inf = jnp.finfo(jnp.float32).min
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, neg_inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # Smallest logit whose preceding mass is still below top_p (the top token always stays).
    cutoff = jnp.min(jnp.where(mass_before < top_p, sorted_logits, jnp.inf), axis=-1,
                     keepdims=True)
    logits = jnp.where(logits < cutoff, neg_inf, logits)
  return logits


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature",
                                             "top_k", "top_p", "pad_id"))
def _generate(graphdef, state, prompts, prompt_lengths, max_lengths, stop_ids, key, *,
              max_new_tokens: int, temperature: float, top_k: int, top_p: float, pad_id: int):
  model: Decoder = nnx.merge(graphdef, state)
  batch, width = prompts.shape
  cache = init_cache(model.config, batch, width + max_new_tokens)
  # Prompt slots [0, width): padding gets EMPTY_POSITION, so no query ever attends to it.
  slots = jnp.arange(width, dtype=jnp.int32)[None, :]
  positions = jnp.where(slots < prompt_lengths[:, None], slots, EMPTY_POSITION)
  hidden, cache = model.hidden_states(prompts, positions, cache, cache_index=0)
  last_hidden = jnp.take_along_axis(hidden, (prompt_lengths - 1)[:, None, None], axis=1)[:, 0]
  logits = model.logits(last_hidden)

  def not_finished(carry):
    step, _, _, _, _, done, _ = carry
    return (step < max_new_tokens) & ~jnp.all(done)

  def decode_step(carry):
    step, logits, cache, tokens, logprobs, done, lengths = carry
    if temperature == 0.0:
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
      token = jax.random.categorical(jax.random.fold_in(key, step), filtered).astype(jnp.int32)
    logprob = token_logprobs(logits, token)
    token = jnp.where(done, pad_id, token)
    tokens = tokens.at[:, step].set(token)
    logprobs = logprobs.at[:, step].set(jnp.where(done, 0.0, logprob))
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | jnp.any(token[:, None] == stop_ids, axis=-1) | (lengths >= max_lengths)
    # Generated token `step` of every row goes to slot width + step, at position len + step.
    positions = (prompt_lengths + step)[:, None]
    next_logits, cache = model.decode(token[:, None], positions, cache, width + step)
    return step + 1, next_logits[:, 0], cache, tokens, logprobs, done, lengths

  init = (jnp.int32(0), logits, cache,
          jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
          jnp.zeros((batch, max_new_tokens), jnp.float32),
          max_lengths <= 0, jnp.zeros((batch,), jnp.int32))
  _, _, _, tokens, logprobs, _, lengths = jax.lax.while_loop(not_finished, decode_step, init)
  return SampleOutput(tokens, logprobs, lengths)


def generate(model: Decoder, prompts: jax.Array | np.ndarray,
             prompt_lengths: jax.Array | np.ndarray, key: jax.Array, *, max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             stop_ids: Sequence[int] | np.ndarray = (),
             max_lengths: jax.Array | np.ndarray | None = None, pad_id: int = 0,
             mesh: Mesh | None = None) -> SampleOutput:
  """Samples continuations of right-padded prompts `int32[B, P]` of lengths `int32[B]`.

  `temperature=0` is greedy (argmax); `top_k=0` and `top_p=1` disable truncation. A row ends at
  a token in `stop_ids` (kept in its output) or after `max_lengths[b]` tokens (default
  `max_new_tokens`); `stop_ids` is one list for every row or an `int[B, S]` array per row (-1
  pads). With a `mesh`, rows are split over its batch axes (parameters keep the sharding they
  were placed with). The same `key` and inputs give the same tokens.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
    raise ValueError(f"bad sampling settings: temperature={temperature}, top_k={top_k}, "
                     f"top_p={top_p}")
  prompts = np.asarray(prompts, np.int32)
  prompt_lengths = np.asarray(prompt_lengths, np.int32)
  chex.assert_rank(prompts, 2)
  batch = prompts.shape[0]
  chex.assert_shape(prompt_lengths, (batch,))
  if prompt_lengths.min() < 1 or prompt_lengths.max() > prompts.shape[1]:
    raise ValueError("every prompt needs 1 <= length <= prompts.shape[1]")
  if max_lengths is None:
    max_lengths = np.full((batch,), max_new_tokens, np.int32)
  max_lengths = np.minimum(np.asarray(max_lengths, np.int32), max_new_tokens)
  stops = np.asarray(stop_ids, np.int32)
  if stops.ndim <= 1:
    stops = np.broadcast_to(stops.reshape(1, -1), (batch, stops.size))
  chex.assert_shape(stops, (batch, None))
  if stops.shape[1] == 0:
    stops = np.full((batch, 1), -1, np.int32)

  # Round the batch and the prompt width up to buckets (the batch to a `shape_bucket` that is a
  # multiple of 8 and of the mesh's batch shards); padded rows are finished from the start and,
  # sampled per position, leave the real rows' draws unchanged.
  width = prompt_bucket(prompt_lengths.max())
  multiple = _BATCH_MULTIPLE
  if mesh is not None:
    multiple = int(np.lcm(multiple, sharding.batch_shards(mesh)))
  padded_batch = -(-shape_bucket(batch, multiple) // multiple) * multiple
  rows = {
      "prompts": np.full((padded_batch, width), pad_id, np.int32),
      "lengths": np.ones((padded_batch,), np.int32),
      "limits": np.zeros((padded_batch,), np.int32),
      "stops": np.full((padded_batch, stops.shape[1]), -1, np.int32),
  }
  columns = min(width, prompts.shape[1])
  rows["prompts"][:batch, :columns] = prompts[:, :columns]
  rows["lengths"][:batch] = prompt_lengths
  rows["limits"][:batch] = max_lengths
  rows["stops"][:batch] = stops
  if mesh is not None:
    rows = sharding.put_global(rows, sharding.batch_sharding(mesh, stacked=False))

  graphdef, state = nnx.split(model)
  out = _generate(graphdef, state, rows["prompts"], rows["lengths"], rows["limits"],
                  rows["stops"], key, max_new_tokens=max_new_tokens,
                  temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                  pad_id=int(pad_id))
  # Sliced on the host: an eager slice of a device array would compile once per batch size.
  return SampleOutput(*(np.asarray(x)[:batch] for x in sharding.to_host(out)))
