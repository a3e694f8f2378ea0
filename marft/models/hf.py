"""Hugging Face checkpoint I/O: `config.json` + `*.safetensors` (single file or sharded index).

The table below maps each checkpoint tensor name to our parameter path, with the transposes
spelled out in one place: PyTorch stores `nn.Linear` weights `[out, in]`, we store `[in, out]`.
Loading builds abstract shapes first, then reads one tensor at a time, so host memory holds one
tensor beyond the model.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from marft.models.config import ModelConfig
from marft.models.decoder import Decoder, Linear
from marft.models.heads import ScoredLM

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama")
_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                  "llama": "LlamaForCausalLM"}
_SAFE_INDEX = "model.safetensors.index.json"
_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be read as this model family."""


def parameter_table(config: ModelConfig) -> list[tuple[str, tuple[str | int, ...], bool]]:
  """`(hf_name, our_path, transpose)` for every base parameter of `config`'s model."""
  table: list[tuple[str, tuple[str | int, ...], bool]] = [
      ("model.embed_tokens.weight", ("embed",), False),
      ("model.norm.weight", ("final_norm", "weight"), False),
  ]
  if not config.tie_embeddings:
    table.append(("lm_head.weight", ("lm_head",), True))
  for i in range(config.num_layers):
    hf, ours = f"model.layers.{i}.", ("layers", i)
    table += [
        (hf + "input_layernorm.weight", ours + ("input_norm", "weight"), False),
        (hf + "post_attention_layernorm.weight", ours + ("post_attention_norm", "weight"), False),
    ]
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
      table.append((hf + f"self_attn.{proj}.weight", ours + ("attn", proj, "kernel"), True))
    if config.qkv_bias:
      for proj in ("q_proj", "k_proj", "v_proj"):
        table.append((hf + f"self_attn.{proj}.bias", ours + ("attn", proj, "bias"), False))
    if config.qk_norm:
      for norm in ("q_norm", "k_norm"):
        table.append((hf + f"self_attn.{norm}.weight", ours + ("attn", norm, "weight"), False))
    for proj in ("gate_proj", "up_proj", "down_proj"):
      table.append((hf + f"mlp.{proj}.weight", ours + ("mlp", proj, "kernel"), True))
  return table


# ----------------------------------------------------------------------------- config.json


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> ModelConfig:
  """Reads a Hugging Face `config.json` dict (transformers 4 and 5 keys) into a ModelConfig."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise CheckpointError(f"model_type {model_type!r} is not supported; "
                          f"supported: {SUPPORTED_MODEL_TYPES}")
  if hf.get("attention_bias") or hf.get("mlp_bias"):
    raise CheckpointError("attention_bias/mlp_bias on output projections is not supported")
  # transformers 5 nests RoPE settings in `rope_parameters`; 4.x has `rope_theta`/`rope_scaling`.
  rope = dict(hf.get("rope_parameters") or {})
  legacy_scaling = dict(hf.get("rope_scaling") or {})
  if "type" in legacy_scaling:
    legacy_scaling.setdefault("rope_type", legacy_scaling.pop("type"))
  rope = {**legacy_scaling, **rope}
  theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
  if rope.get("rope_type", "default") == "default":
    rope = {}
  dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
  if dtype not in _NP_DTYPES:
    dtype = "float32"
  heads = hf["num_attention_heads"]
  fields = dict(
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      rope_theta=float(theta),
      rope_scaling=tuple(sorted(rope.items())),
      rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
      qkv_bias=model_type == "qwen2",
      qk_norm=model_type == "qwen3",
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_position_embeddings=hf.get("max_position_embeddings", 4096),
      model_type=model_type,
      dtype=dtype,
      param_dtype=dtype,
  )
  fields.update(overrides)
  return ModelConfig(**fields)


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
  """The `config.json` dict for `config`, readable by transformers 4 and 5."""
  if config.model_type == "qwen2" and not config.qkv_bias:
    raise CheckpointError("a qwen2 checkpoint always has QKV bias; set qkv_bias=True")
  if config.model_type != "qwen2" and config.qkv_bias:
    raise CheckpointError(f"{config.model_type} has no QKV-only bias; use model_type='qwen2'")
  if config.qk_norm != (config.model_type == "qwen3"):
    raise CheckpointError("qk_norm is exactly the qwen3 family")
  rope_parameters = {"rope_type": "default", **dict(config.rope_scaling),
                     "rope_theta": config.rope_theta}
  hf = {
      "architectures": [_ARCHITECTURES[config.model_type]],
      "model_type": config.model_type,
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": config.rms_norm_eps,
      "max_position_embeddings": config.max_position_embeddings,
      "tie_word_embeddings": config.tie_embeddings,
      "rope_parameters": rope_parameters,
      "rope_theta": config.rope_theta,
      "rope_scaling": dict(config.rope_scaling) or None,
      "attention_bias": False,
      "attention_dropout": 0.0,
      "dtype": config.param_dtype,
      "torch_dtype": config.param_dtype,
  }
  if config.model_type == "llama":
    hf["mlp_bias"] = False
  return hf


# ----------------------------------------------------------------------------- tensors


def _checkpoint_files(path: str) -> list[str]:
  index = os.path.join(path, _SAFE_INDEX)
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    return sorted({os.path.join(path, name) for name in weight_map.values()})
  single = os.path.join(path, "model.safetensors")
  if os.path.exists(single):
    return [single]
  found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".safetensors"))
  if not found:
    raise CheckpointError(f"no *.safetensors files in {path}")
  return found


def _read_tensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
  for file in _checkpoint_files(path):
    try:
      with safe_open(file, framework="numpy") as f:
        for name in f.keys():
          yield name, f.get_tensor(name)
    except Exception as e:  # safetensors raises its own types for truncated/corrupt files
      raise CheckpointError(f"cannot read {file}: {e}") from e


def _get(state_dict: dict, path: tuple) -> Any:
  node = state_dict
  for key in path:
    node = node[key]
  return node


def load_pretrained(path: str, **overrides: Any) -> tuple[Decoder, ModelConfig]:
  """Loads a Hugging Face checkpoint directory into a Decoder.

  `overrides` change config fields, e.g. `dtype="float32"` to compute in float32 from a
  bfloat16 checkpoint, or `lora_rank=8` to add fresh LoRA adapters. Raises CheckpointError on a
  missing, unexpected, mis-shaped or unreadable tensor.
  """
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise CheckpointError(f"{path} has no config.json")
  with open(config_path) as f:
    config = config_from_hf(json.load(f), **overrides)

  abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(params=0)))
  graphdef, abstract_state = nnx.split(abstract)
  values = nnx.to_pure_dict(abstract_state)
  table = {hf_name: (ours, transpose) for hf_name, ours, transpose in parameter_table(config)}
  pending = set(table)
  for name, tensor in _read_tensors(path):
    if name not in table:
      if name == "lm_head.weight" and config.tie_embeddings:
        continue  # some tied checkpoints store the head anyway
      if name.endswith("rotary_emb.inv_freq"):
        continue
      raise CheckpointError(f"unexpected tensor {name!r} in {path}")
    ours, transpose = table[name]
    expected = _get(values, ours)
    array = tensor.T if transpose else tensor
    if array.shape != expected.shape:
      raise CheckpointError(f"{name}: shape {tensor.shape} does not fit {expected.shape}")
    _set(values, ours, jnp.asarray(array, dtype=expected.dtype))
    pending.discard(name)
  if pending:
    raise CheckpointError(f"{path} is missing tensors: {sorted(pending)[:5]} ...")

  # LoRA adapters (not part of a HF base checkpoint) get their fresh initialisation.
  if config.lora_rank:
    # Under jit, XLA drops the unused base-weight initialisation and builds only the adapters.
    fresh = jax.jit(lambda: nnx.to_pure_dict(
        nnx.state(Decoder(config, rngs=nnx.Rngs(params=0)), nnx.LoRAParam)))()
    _merge_into(values, fresh)
  nnx.replace_by_pure_dict(abstract_state, values)
  return nnx.merge(graphdef, abstract_state), config


def _set(state_dict: dict, path: tuple, value: Any) -> None:
  _get(state_dict, path[:-1])[path[-1]] = value


def _merge_into(target: dict, source: dict) -> None:
  for key, value in source.items():
    if isinstance(value, dict):
      _merge_into(target[key], value)
    else:
      target[key] = value


def _merged_kernel(linear: Linear) -> jax.Array:
  """`W + (alpha / r) A B` in float32: the LoRA adapter folded into the base weight."""
  kernel = linear.kernel[...].astype(jnp.float32)
  if linear.lora_a is not None:
    kernel = kernel + linear.lora_scale * (linear.lora_a[...].astype(jnp.float32)
                                           @ linear.lora_b[...].astype(jnp.float32))
  return kernel


def save_pretrained(model: Decoder, config: ModelConfig, path: str, *,
                    max_shard_bytes: int = 4 * 1024**3) -> None:
  """Writes `config.json` and safetensors (sharded with an index past `max_shard_bytes`).

  LoRA adapters are merged into the base weights, so the result is a plain checkpoint that
  transformers, vLLM and other tools load as is. Tensors are stored in `config.param_dtype`.
  """
  os.makedirs(path, exist_ok=True)
  np_dtype = _NP_DTYPES[config.param_dtype]
  tensors: dict[str, np.ndarray] = {}
  for hf_name, ours, transpose in parameter_table(config):
    node = model
    for key in ours[:-1]:
      node = node[key] if isinstance(key, int) else getattr(node, key)
    if isinstance(node, Linear) and ours[-1] == "kernel":
      value = _merged_kernel(node)
    else:
      value = getattr(node, ours[-1])[...]
    array = np.asarray(jax.device_get(value).astype(jnp.float32))
    tensors[hf_name] = np.ascontiguousarray(array.T if transpose else array).astype(np_dtype)

  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, array in tensors.items():
    if shards[-1] and size + array.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = array
    size += array.nbytes
  for stale in os.listdir(path):
    if stale.endswith(".safetensors") or stale == _SAFE_INDEX:
      os.remove(os.path.join(path, stale))
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  else:
    weight_map = {}
    for i, shard in enumerate(shards):
      file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(shard, os.path.join(path, file), metadata={"format": "pt"})
      weight_map.update({name: file for name in shard})
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
             "weight_map": weight_map}
    with open(os.path.join(path, _SAFE_INDEX), "w") as f:
      json.dump(index, f, indent=2)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config_to_hf(config), f, indent=2)


_HEAD_DIR = "score_head"  # a ScoredLM's head, beside its trunk's checkpoint


def save_scored_lm(model: ScoredLM, config: ModelConfig, path: str) -> None:
  """A `marft.models.heads.ScoredLM`: its trunk as a Hugging Face checkpoint in `path`, its head
  in `path/score_head/` (`head.safetensors`, `head.json` with the hidden sizes)."""
  save_pretrained(model.trunk, config, path)
  head_dir = os.path.join(path, _HEAD_DIR)
  os.makedirs(head_dir, exist_ok=True)
  flat = nnx.to_flat_state(nnx.state(model.head))
  tensors = {".".join(str(k) for k in key): np.asarray(jax.device_get(v[...]), np.float32)
             for key, v in flat}
  save_file(tensors, os.path.join(head_dir, "head.safetensors"))
  with open(os.path.join(head_dir, "head.json"), "w") as f:
    json.dump({"hidden_dims": list(model.hidden_dims)}, f)


def load_scored_lm(path: str, **overrides: Any) -> tuple[ScoredLM, ModelConfig]:
  """A `ScoredLM` saved by `save_scored_lm`; CheckpointError when the head is missing or does
  not fit the trunk."""
  trunk, config = load_pretrained(path, **overrides)
  head_dir = os.path.join(path, _HEAD_DIR)
  try:
    with open(os.path.join(head_dir, "head.json")) as f:
      hidden_dims = json.load(f)["hidden_dims"]
    with safe_open(os.path.join(head_dir, "head.safetensors"), framework="numpy") as f:
      tensors = {name: f.get_tensor(name) for name in f.keys()}
  except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path} has no readable score head ({head_dir}): {e}") from e
  except Exception as e:  # safetensors' own error types for a corrupt file
    raise CheckpointError(f"cannot read the score head in {head_dir}: {e}") from e
  model = ScoredLM(trunk, hidden_dims, rngs=nnx.Rngs(0))
  state = nnx.state(model.head)
  flat = dict(nnx.to_flat_state(state))
  names = {".".join(str(k) for k in key): key for key in flat}
  if set(names) != set(tensors):
    raise CheckpointError(f"score head in {head_dir} has tensors {sorted(tensors)}, expected "
                          f"{sorted(names)}")
  for name, key in names.items():
    if tensors[name].shape != flat[key][...].shape:
      raise CheckpointError(f"score head tensor {name}: shape {tensors[name].shape} does not "
                            f"fit {flat[key][...].shape}")
    flat[key][...] = jnp.asarray(tensors[name])
  return model, config
