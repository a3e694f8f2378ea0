"""One Qwen2/Qwen3/Llama-family decoder in Flax NNX.

RMSNorm, rotary position embeddings (optionally Llama-3 frequency scaling), grouped-query
attention (optional QKV bias, optional per-head QK RMSNorm as in Qwen3), SwiGLU MLP, optional
tied embeddings, LoRA adapters on chosen projections, and a preallocated KV cache for decoding.

Every parameter carries `logical_axes` metadata (`vocab, embed, mlp, heads, kv_heads,
head_dim`) that the sharding rules map to mesh axes. Logits are float32 whatever the
activation dtype.
"""
from __future__ import annotations

import math
from typing import Any

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from marft.models.config import ModelConfig

_INIT_STD = 0.02
_FUSE_MIN_ROWS = 256  # below this many rows, separate matmuls beat one concatenated matmul


# Position of an empty cache slot (or of a padding token): never visible to any query.
EMPTY_POSITION = np.iinfo(np.int32).max


@flax.struct.dataclass
class KVCache:
  """Per-layer key/value buffers `[B, S, kv_heads, head_dim]` and each slot's position `[B, S]`.

  A chunk is written at slots `[index, index + T)` (the same for every row, so the write is one
  in-place `dynamic_update_slice`); a query at position p sees the slots whose position is <= p.
  Slots and positions are independent, so right-padded prompts and per-row lengths need no
  per-row scatter: padding slots carry `EMPTY_POSITION`.
  """

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  positions: jax.Array

  @property
  def max_length(self) -> int:
    return self.positions.shape[1]


def init_cache(config: ModelConfig, batch_size: int, max_length: int) -> KVCache:
  """An empty KV cache able to hold `max_length` slots per row."""
  shape = (batch_size, max_length, config.num_kv_heads, config.head_dim)
  zeros = tuple(jnp.zeros(shape, config.activation_dtype) for _ in range(config.num_layers))
  return KVCache(keys=zeros, values=tuple(jnp.zeros_like(z) for z in zeros),
                 positions=jnp.full((batch_size, max_length), EMPTY_POSITION, jnp.int32))


def rope_inverse_frequencies(config: ModelConfig) -> np.ndarray:
  """`theta^(-2i/d)`, with Llama-3 smooth frequency scaling when `config.rope_scaling` asks."""
  dim = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  scaling = dict(config.rope_scaling)
  rope_type = scaling.get("rope_type", "default")
  if rope_type == "default":
    return inv_freq.astype(np.float32)
  if rope_type != "llama3":
    raise NotImplementedError(f"rope_type {rope_type!r} is not supported (default, llama3)")
  factor = scaling["factor"]
  low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
  old_context = scaling["original_max_position_embeddings"]
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
  smooth = (old_context / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  is_medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates `x: [B, T, N, D]` by its positions `[B, T]` (rotate-half convention)."""
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


class RMSNorm(nnx.Module):
  """`y = w * x / sqrt(mean(x^2) + eps)`, normalised in float32."""

  def __init__(self, dim: int, eps: float, param_dtype: jnp.dtype, axis_name: str):
    self.eps = eps
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=(axis_name,))

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)


class Linear(nnx.Module):
  """`y = x W (+ b) (+ (alpha / r) x A B)`: a dense projection with an optional LoRA adapter.

  `kernel` is stored `[in, out]` (the transpose of a PyTorch weight). The adapter's `B` starts
  at zero so a fresh adapter leaves the model unchanged.
  """

  def __init__(self, in_features: int, out_features: int, *, axes: tuple[str, str],
               use_bias: bool, lora_rank: int, lora_alpha: float, config: ModelConfig,
               rngs: nnx.Rngs):
    self.dtype = config.activation_dtype
    pdtype = config.storage_dtype
    self.kernel = nnx.Param(
        (jax.random.normal(rngs.params(), (in_features, out_features)) * _INIT_STD).astype(pdtype),
        logical_axes=axes)
    self.bias = (nnx.Param(jnp.zeros((out_features,), pdtype), logical_axes=axes[1:])
                 if use_bias else None)
    if lora_rank > 0:
      bound = 1.0 / math.sqrt(in_features)
      self.lora_scale = lora_alpha / lora_rank
      self.lora_a = nnx.LoRAParam(
          jax.random.uniform(rngs.params(), (in_features, lora_rank), pdtype, -bound, bound),
          logical_axes=(axes[0], None))
      self.lora_b = nnx.LoRAParam(jnp.zeros((lora_rank, out_features), pdtype),
                                  logical_axes=(None, axes[1]))
    else:
      self.lora_a = self.lora_b = None

  def __call__(self, x: jax.Array) -> jax.Array:
    return fused_linear(x, (self,))[0]

  def adapter(self, x2d: jax.Array) -> jax.Array:
    """The LoRA term `(alpha / r) x A B` of a flattened input (0 without an adapter)."""
    if self.lora_a is None:
      return jnp.zeros((), self.dtype)
    low_rank = (x2d @ self.lora_a[...].astype(self.dtype)) @ self.lora_b[...].astype(self.dtype)
    return self.lora_scale * low_rank


def _project(x2d: jax.Array, linear: Linear) -> jax.Array:
  y = x2d @ linear.kernel[...].astype(linear.dtype)
  if linear.bias is not None:
    y = y + linear.bias[...].astype(linear.dtype)
  return y + linear.adapter(x2d)


def fused_linear(x: jax.Array, linears: tuple[Linear, ...]) -> list[jax.Array]:
  """Applies several projections of the same input as ONE matmul with concatenated kernels.

  Leading dims are flattened to a 2-D matmul; on XLA:CPU both changes speed up the backward
  pass (about 2x for 2-D, and one large matmul beats three small ones). Parameters stay
  separate, so checkpoints and LoRA targets are unchanged.
  """
  dtype = linears[0].dtype
  leading = x.shape[:-1]
  x2d = x.astype(dtype).reshape(-1, x.shape[-1])
  if x2d.shape[0] < _FUSE_MIN_ROWS:  # decoding: concatenating kernels costs more than it saves
    return [_project(x2d, l).reshape(*leading, -1) for l in linears]
  kernel = jnp.concatenate([l.kernel[...].astype(dtype) for l in linears], axis=1)
  y = x2d @ kernel
  if any(l.bias is not None for l in linears):
    y = y + jnp.concatenate([
        l.bias[...].astype(dtype) if l.bias is not None else jnp.zeros(l.kernel.shape[1], dtype)
        for l in linears])
  sizes = np.cumsum([l.kernel.shape[1] for l in linears])[:-1]
  outs = jnp.split(y, sizes, axis=1)
  return [(out + l.adapter(x2d)).reshape(*leading, out.shape[-1])
          for out, l in zip(outs, linears)]


def _linear(config: ModelConfig, name: str, in_features: int, out_features: int,
            axes: tuple[str, str], rngs: nnx.Rngs, use_bias: bool = False) -> Linear:
  rank = config.lora_rank if name in config.lora_targets else 0
  return Linear(in_features, out_features, axes=axes, use_bias=use_bias, lora_rank=rank,
                lora_alpha=config.lora_alpha, config=config, rngs=rngs)


class Attention(nnx.Module):
  """Grouped-query self-attention with RoPE and an optional KV cache."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    d, hd = config.hidden_size, config.head_dim
    self.config = config
    self.q_proj = _linear(config, "q_proj", d, config.num_heads * hd, ("embed", "heads"), rngs,
                          use_bias=config.qkv_bias)
    self.k_proj = _linear(config, "k_proj", d, config.num_kv_heads * hd, ("embed", "kv_heads"),
                          rngs, use_bias=config.qkv_bias)
    self.v_proj = _linear(config, "v_proj", d, config.num_kv_heads * hd, ("embed", "kv_heads"),
                          rngs, use_bias=config.qkv_bias)
    self.o_proj = _linear(config, "o_proj", config.num_heads * hd, d, ("heads", "embed"), rngs)
    if config.qk_norm:
      self.q_norm = RMSNorm(hd, config.rms_norm_eps, config.storage_dtype, "head_dim")
      self.k_norm = RMSNorm(hd, config.rms_norm_eps, config.storage_dtype, "head_dim")
    else:
      self.q_norm = self.k_norm = None

  def __call__(self, x: jax.Array, positions: jax.Array, key_positions: jax.Array,
               cache: tuple[jax.Array, jax.Array] | None, cache_index: int | jax.Array
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """`key_positions: [B, S']` are the positions of the keys attended to: the chunk's own
    (no cache) or the cache's first S' slots after this chunk is written at `cache_index`."""
    cfg = self.config
    b, t, _ = x.shape
    q, k, v = fused_linear(x, (self.q_proj, self.k_proj, self.v_proj))
    q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)
    k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    inv_freq = rope_inverse_frequencies(cfg)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)

    if cache is not None:
      start = (0, cache_index, 0, 0)
      cache = (jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), start),
               jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), start))
      k, v = cache[0][:, :key_positions.shape[1]], cache[1][:, :key_positions.shape[1]]
    # A key is visible from a query iff its position is not after the query's (causal; empty
    # and padding slots carry EMPTY_POSITION and are never visible).
    mask = key_positions[:, None, :] <= positions[:, :, None]  # [B, T, S']

    groups = cfg.num_heads // cfg.num_kv_heads
    q = q.reshape(b, t, cfg.num_kv_heads, groups, cfg.head_dim)
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    neg_inf = jnp.finfo(jnp.float32).min
    if t == 1:
      # One query (decoding): broadcast-multiply-sum reads the cache in place, where an einsum
      # would transpose the whole cache every step.
      scores = (q[:, 0, None].astype(jnp.float32) * k[:, :, :, None, :]).sum(-1)  # [B,S,K,G]
      scores = jnp.where(mask[:, 0, :, None, None], scores / math.sqrt(cfg.head_dim), neg_inf)
      probs = jax.nn.softmax(scores, axis=1).astype(x.dtype)
      out = (probs[..., None] * v[:, :, :, None, :]).sum(1)[:, None]  # [B,1,K,G,D]
    else:
      scores = jnp.einsum("btkgd,bskd->bkgts", q, k,
                          preferred_element_type=jnp.float32) / math.sqrt(cfg.head_dim)
      scores = jnp.where(mask[:, None, None], scores, neg_inf)
      probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
      out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return self.o_proj(out.reshape(b, t, cfg.num_heads * cfg.head_dim)), cache


class MLP(nnx.Module):
  """SwiGLU: `down(silu(gate(x)) * up(x))`."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    d, m = config.hidden_size, config.intermediate_size
    self.gate_proj = _linear(config, "gate_proj", d, m, ("embed", "mlp"), rngs)
    self.up_proj = _linear(config, "up_proj", d, m, ("embed", "mlp"), rngs)
    self.down_proj = _linear(config, "down_proj", m, d, ("mlp", "embed"), rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    gate, up = fused_linear(x, (self.gate_proj, self.up_proj))
    return self.down_proj(jax.nn.silu(gate) * up)


class Block(nnx.Module):
  """Pre-norm transformer block: `x + attn(norm(x))`, then `x + mlp(norm(x))`."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.storage_dtype,
                              "embed")
    self.attn = Attention(config, rngs)
    self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                                       config.storage_dtype, "embed")
    self.mlp = MLP(config, rngs)

  def __call__(self, x, positions, key_positions, cache, cache_index):
    attn_out, cache = self.attn(self.input_norm(x), positions, key_positions, cache, cache_index)
    x = x + attn_out
    return x + self.mlp(self.post_attention_norm(x)), cache


def _remat_block(layer: Block, x: jax.Array, positions: jax.Array, key_positions: jax.Array,
                 policy: Any) -> jax.Array:
  """`layer` without a cache under `jax.checkpoint`: its activations are recomputed in the
  backward pass (`policy` None saves nothing; `dots_saveable` keeps the matmul outputs). The
  layer goes in as a pure function of its state, so parameters from an outer trace (a frozen
  base under per-policy LoRA adapters) are read, never written back."""
  graphdef, state = nnx.split(layer)

  def block(state, x):
    return nnx.merge(graphdef, state)(x, positions, key_positions, None, 0)[0]

  return jax.checkpoint(block, policy=policy)(state, x)


class Decoder(nnx.Module):
  """Causal decoder LM. `model(tokens: int32[B, T]) -> logits: float32[B, T, V]`."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed = nnx.Param(
        (jax.random.normal(rngs.params(), (config.vocab_size, config.hidden_size)) * _INIT_STD
         ).astype(config.storage_dtype), logical_axes=("vocab", "embed"))
    self.layers = nnx.List([Block(config, rngs) for _ in range(config.num_layers)])
    self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.storage_dtype,
                              "embed")
    if config.tie_embeddings:
      self.lm_head = None
    else:
      self.lm_head = nnx.Param(
          (jax.random.normal(rngs.params(), (config.hidden_size, config.vocab_size)) * _INIT_STD
           ).astype(config.storage_dtype), logical_axes=("embed", "vocab"))

  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    hidden, _ = self.hidden_states(tokens, positions)
    return self.logits(hidden)

  def hidden_states(self, tokens: jax.Array, positions: jax.Array | None = None,
                    cache: KVCache | None = None, cache_index: int | jax.Array = 0
                    ) -> tuple[jax.Array, KVCache | None]:
    """Final-norm hidden states `[B, T, D]`; with a cache, also writes the chunk into it.

    `positions: int32[B, T]` (RoPE positions) default to `0..T-1`. With a cache the chunk goes
    to slots `[cache_index, cache_index + T)` and attends to every cache slot at a position not
    after its own, so decoding token by token equals the full forward. A static (Python int)
    `cache_index` limits attention to the slots before the chunk's end (a prefill at 0 attends
    only within itself); a traced one attends over the whole cache.
    """
    chex.assert_rank(tokens, 2)
    b, t = tokens.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    chex.assert_shape(positions, (b, t))
    if cache is None:
      key_positions = positions
    else:
      cache_positions = jax.lax.dynamic_update_slice(cache.positions,
                                                     positions.astype(jnp.int32),
                                                     (0, cache_index))
      visible = cache_index + t if isinstance(cache_index, int) else cache.max_length
      key_positions = cache_positions[:, :visible]
    x = jnp.take(self.embed[...], tokens, axis=0).astype(self.config.activation_dtype)
    new_keys, new_values = [], []
    remat = self.config.remat
    for i, layer in enumerate(self.layers):
      if cache is None and remat != "none":
        policy = jax.checkpoint_policies.dots_saveable if remat == "dots" else None
        x = _remat_block(layer, x, positions, key_positions, policy)
        continue
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      x, layer_cache = layer(x, positions, key_positions, layer_cache, cache_index)
      if cache is not None:
        new_keys.append(layer_cache[0])
        new_values.append(layer_cache[1])
    if cache is not None:
      cache = KVCache(keys=tuple(new_keys), values=tuple(new_values), positions=cache_positions)
    return self.final_norm(x), cache

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Projects hidden states `[..., D]` to float32 logits `[..., V]`."""
    if self.lm_head is None:
      return jnp.einsum("...d,vd->...v", hidden, self.embed[...].astype(hidden.dtype),
                        preferred_element_type=jnp.float32)
    return jnp.einsum("...d,dv->...v", hidden, self.lm_head[...].astype(hidden.dtype),
                      preferred_element_type=jnp.float32)

  def decode(self, tokens: jax.Array, positions: jax.Array, cache: KVCache,
             cache_index: int | jax.Array) -> tuple[jax.Array, KVCache]:
    """Logits of a chunk written at `cache_index` given what `cache` holds, and the new cache."""
    hidden, cache = self.hidden_states(tokens, positions, cache, cache_index)
    return self.logits(hidden), cache


def build_model(config: ModelConfig, seed: int = 0) -> Decoder:
  """A randomly initialised decoder of the given shape."""
  return Decoder(config, rngs=nnx.Rngs(params=seed))
