"""Decoder building blocks against formulas written out in numpy."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from marft.models.config import NAMED_CONFIGS, get_model_config
from marft.models.decoder import Decoder, RMSNorm, apply_rope, build_model, rope_inverse_frequencies
from marft.models.heads import ValueHead


def test_rms_norm_matches_numpy():
  x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
  norm = RMSNorm(8, 1e-6, jnp.float32, "embed")
  norm.weight[...] = jnp.arange(1.0, 9.0)
  expected = np.arange(1.0, 9.0) * x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(norm(jnp.asarray(x)), expected, rtol=1e-5)


def test_rope_rotates_pairs_by_position_times_frequency():
  config = get_model_config("tiny", head_dim=8, rope_theta=100.0)
  inv_freq = rope_inverse_frequencies(config)
  np.testing.assert_allclose(inv_freq, 100.0 ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)
  x = np.random.default_rng(1).normal(size=(1, 3, 1, 8)).astype(np.float32)
  positions = np.array([[0, 1, 5]])
  got = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(positions), inv_freq))
  for t, p in enumerate(positions[0]):
    for i, w in enumerate(inv_freq):  # dims (i, i + 4) rotate by angle p * w
      c, s = math.cos(p * w), math.sin(p * w)
      a, b = x[0, t, 0, i], x[0, t, 0, i + 4]
      np.testing.assert_allclose(got[0, t, 0, [i, i + 4]], [a * c - b * s, b * c + a * s],
                                 rtol=1e-5, atol=1e-6)


def test_llama3_rope_scaling_bands():
  scaling = (("factor", 8.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
             ("original_max_position_embeddings", 64), ("rope_type", "llama3"))
  base = get_model_config("tiny", head_dim=16, rope_theta=10000.0)
  plain = rope_inverse_frequencies(base)
  scaled = rope_inverse_frequencies(base.replace(rope_scaling=scaling))
  wavelen = 2 * np.pi / plain
  high = wavelen < 64 / 4  # short wavelengths are kept
  low = wavelen > 64 / 1  # long wavelengths are divided by the factor
  np.testing.assert_allclose(scaled[high], plain[high], rtol=1e-6)
  np.testing.assert_allclose(scaled[low], plain[low] / 8.0, rtol=1e-6)
  mid = ~high & ~low
  smooth = (64 / wavelen[mid] - 1.0) / (4.0 - 1.0)
  np.testing.assert_allclose(scaled[mid], (1 - smooth) * plain[mid] / 8 + smooth * plain[mid],
                             rtol=1e-6)


def test_named_configs_match_public_parameter_counts():
  # Counts published for the Hugging Face checkpoints (tied embeddings counted once).
  assert NAMED_CONFIGS["qwen2.5-0.5b"].num_params() == 494_032_768
  assert NAMED_CONFIGS["qwen2.5-1.5b"].num_params() == 1_543_714_304
  assert NAMED_CONFIGS["llama3.2-1b"].num_params() == 1_235_814_400
  for name in ("tiny", "small", "qwen3-1.7b"):
    config = NAMED_CONFIGS[name]
    abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    counted = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert counted == config.num_params()
  assert 0.8e6 < NAMED_CONFIGS["tiny"].num_params() < 1.3e6
  assert 8e6 < NAMED_CONFIGS["small"].num_params() < 13e6


def test_every_parameter_has_logical_axes_of_its_rank():
  config = get_model_config("tiny", qkv_bias=True, qk_norm=True, lora_rank=2)
  model = build_model(config)
  known = {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", None}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    axes = var.get_metadata()["logical_axes"]
    assert len(axes) == var[...].ndim, path
    assert set(axes) <= known, path


def test_fresh_lora_is_identity_and_its_delta_is_scaled_low_rank_product():
  config = get_model_config("tiny", num_layers=1, lora_rank=4, lora_alpha=8.0,
                            lora_targets=("q_proj", "up_proj"))
  with_lora = build_model(config, seed=0)
  without = build_model(config.replace(lora_rank=0), seed=0)
  nnx.update(without, nnx.state(with_lora, nnx.Not(nnx.LoRAParam)))
  tokens = jnp.asarray([[3, 17, 40, 41, 99]])
  np.testing.assert_allclose(with_lora(tokens), without(tokens), atol=1e-6)
  proj = with_lora.layers[0].mlp.up_proj
  assert with_lora.layers[0].mlp.gate_proj.lora_a is None
  proj.lora_b[...] = jax.random.normal(jax.random.key(1), proj.lora_b[...].shape)
  x = np.random.default_rng(2).normal(size=(3, config.hidden_size)).astype(np.float32)
  a, b, w = (np.asarray(v[...]) for v in (proj.lora_a, proj.lora_b, proj.kernel))
  np.testing.assert_allclose(proj(jnp.asarray(x)), x @ w + (8.0 / 4) * (x @ a) @ b,
                             rtol=1e-4, atol=1e-5)


def test_bfloat16_option_keeps_float32_logits_close_to_float32():
  config = get_model_config("tiny")
  f32 = build_model(config, seed=0)
  bf16 = build_model(config.replace(dtype="bfloat16", param_dtype="bfloat16"), seed=0)
  assert bf16.layers[0].attn.q_proj.kernel[...].dtype == jnp.bfloat16
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 128, (2, 20)), jnp.int32)
  logits = bf16(tokens)
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, f32(tokens), atol=0.05)


def test_value_head_is_mlp_on_hidden_states():
  head = ValueHead(8, (16,), rngs=nnx.Rngs(0))
  hidden = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
  np.testing.assert_array_equal(head(jnp.asarray(hidden)), np.zeros((2, 5)))  # zero-init output
  head.out.kernel[...] = jnp.ones((16, 1))
  w1, b1 = np.asarray(head.hidden[0].kernel[...]), np.asarray(head.hidden[0].bias[...])
  expected = np.maximum(hidden @ w1 + b1, 0).sum(-1)
  np.testing.assert_allclose(head(jnp.asarray(hidden)), expected, rtol=1e-5)


def test_config_errors_are_clear():
  with pytest.raises(ValueError, match="unknown model"):
    get_model_config("gpt5")
  with pytest.raises(ValueError, match="multiple"):
    get_model_config("tiny", num_kv_heads=3)
  with pytest.raises(ValueError, match="lora_targets"):
    get_model_config("tiny", lora_targets=("qproj",))
