"""Decoder configuration and the named model shapes (tiny CPU models to real checkpoints)."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# "none": store every activation; "block": recompute each decoder block in the backward pass;
# "dots": recompute each block but keep its matmul outputs (`jax.checkpoint_policies.dots_saveable`).
REMAT_KINDS = ("none", "block", "dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of one Qwen2/Qwen3/Llama-family decoder.

  `model_type` is the Hugging Face family name (`qwen2`, `qwen3`, `llama`) used when saving.
  `rope_scaling` is a tuple of (key, value) pairs (hashable) for Llama-3 style frequency
  scaling, empty for plain RoPE. `dtype` is the activation dtype, `param_dtype` the storage
  dtype; logits and log-probs are always float32. `remat` is what a training forward recomputes
  in the backward pass (see `REMAT_KINDS`); `logprob_chunk > 0` computes next-token log-probs in
  chunks of that many positions, without materialising `[B, T, V]` logits (0: one projection).
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, Any], ...] = ()
  rms_norm_eps: float = 1e-6
  qkv_bias: bool = False
  qk_norm: bool = False
  tie_embeddings: bool = False
  max_position_embeddings: int = 4096
  model_type: str = "qwen2"
  dtype: str = "float32"
  param_dtype: str = "float32"
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = LORA_TARGETS
  remat: str = "none"
  logprob_chunk: int = 0

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    unknown = set(self.lora_targets) - set(LORA_TARGETS)
    if unknown:
      raise ValueError(f"unknown lora_targets {sorted(unknown)}; choose from {LORA_TARGETS}")
    if self.remat not in REMAT_KINDS:
      raise ValueError(f"remat={self.remat!r}: choose from {REMAT_KINDS}")
    if not isinstance(self.logprob_chunk, int) or self.logprob_chunk < 0:
      raise ValueError(f"logprob_chunk={self.logprob_chunk!r} must be a non-negative integer "
                       "(0: unchunked)")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{field}={getattr(self, field)!r}: expected float32, bfloat16 or float16")

  @property
  def activation_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def storage_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes: Any) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Parameter count of the base model (LoRA adapters excluded)."""
    d, h = self.hidden_size, self.head_dim
    attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads)
    if self.qkv_bias:
      attn += h * (self.num_heads + 2 * self.num_kv_heads)
    if self.qk_norm:
      attn += 2 * h
    mlp = 3 * d * self.intermediate_size
    per_layer = attn + mlp + 2 * d
    embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * per_layer + embed + d


# Shapes of the public checkpoints, read from their config.json files.
NAMED_CONFIGS: dict[str, ModelConfig] = {
    # ~1M parameters, character vocabulary: the CPU workhorse.
    "tiny": ModelConfig(vocab_size=128, hidden_size=128, intermediate_size=512, num_layers=4,
                        num_heads=4, num_kv_heads=2, head_dim=32, rope_theta=10000.0,
                        max_position_embeddings=1024, model_type="llama"),
    # ~10M parameters, character vocabulary.
    "small": ModelConfig(vocab_size=128, hidden_size=384, intermediate_size=1536, num_layers=5,
                         num_heads=6, num_kv_heads=2, head_dim=64, rope_theta=10000.0,
                         max_position_embeddings=2048, model_type="llama"),
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64,
                                rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True,
                                tie_embeddings=True, max_position_embeddings=32768,
                                model_type="qwen2", dtype="bfloat16", param_dtype="bfloat16"),
    "qwen2.5-1.5b": ModelConfig(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
                                rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True,
                                tie_embeddings=True, max_position_embeddings=32768,
                                model_type="qwen2", dtype="bfloat16", param_dtype="bfloat16"),
    "qwen3-1.7b": ModelConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                              num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128,
                              rope_theta=1e6, rms_norm_eps=1e-6, qk_norm=True,
                              tie_embeddings=True, max_position_embeddings=40960,
                              model_type="qwen3", dtype="bfloat16", param_dtype="bfloat16"),
    "llama3.2-1b": ModelConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                               num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
                               rope_theta=500000.0,
                               rope_scaling=(("factor", 32.0), ("high_freq_factor", 4.0),
                                             ("low_freq_factor", 1.0),
                                             ("original_max_position_embeddings", 8192),
                                             ("rope_type", "llama3")),
                               rms_norm_eps=1e-5, tie_embeddings=True,
                               max_position_embeddings=131072, model_type="llama",
                               dtype="bfloat16", param_dtype="bfloat16"),
}


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
  """Returns the named shape, with field overrides (e.g. `dtype="bfloat16"`, `lora_rank=8`)."""
  if name not in NAMED_CONFIGS:
    raise ValueError(f"unknown model {name!r}; choose from {sorted(NAMED_CONFIGS)}")
  return NAMED_CONFIGS[name].replace(**overrides)
