"""Greedy generation throughput on CPU: marft's sampler vs Hugging Face `generate`.

One random tiny Qwen2 (about the size of marft's `tiny` config) is built in transformers,
saved as a Hugging Face checkpoint and loaded by marft, so both libraries decode the same
weights from the same prompts. Every prompt has the same length (transformers needs no
padding) and both sides generate exactly `--new_tokens` tokens greedily (no stop token).

Each side gets one warm-up call (for marft this includes the `jax.jit` compile, reported
separately), then the median of `--repeats` timed calls. Tokens/s counts generated tokens of
real rows only: `batch * new_tokens / seconds`.

Run from the repository root:

  .venv/bin/python benchmarks/generate.py
  .venv/bin/python benchmarks/generate.py --batch_sizes=1,8,32,64 --hf_attn=sdpa
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# Run as `python benchmarks/generate.py`: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from benchmarks.cpu_load import cpu_seconds, others_share  # noqa: E402
from marft import sampling  # noqa: E402
from marft.models import hf  # noqa: E402
from marft.models.config import NAMED_CONFIGS  # noqa: E402

_MAX_OTHERS_SHARE = 0.1  # CPU share of other processes above which timings are flagged

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8", "32"], "Batch sizes, one row each.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 32, "Tokens per prompt (all prompts equal).")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 64, "Generated tokens per row.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per side; the median is reported.")
_HF_ATTN = flags.DEFINE_enum("hf_attn", "auto", ["auto", "eager", "sdpa"],
                             "transformers attention; `auto` times both, reports the faster.")
_INIT_STD = flags.DEFINE_float(
    "init_std", 0.1, "Weight init std of the random model. transformers' default 0.02 gives "
    "near-uniform logits and so many near-ties that greedy parity says little.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the weights and the prompts.")
_TARGET_BATCH = flags.DEFINE_integer("target_batch", 32, "Batch size of the target row.")
_TARGET_SPEEDUP = flags.DEFINE_float("target_speedup", 5.0,
                                     "Speedup over transformers the target row should reach.")


def _build_checkpoint(path: str) -> None:
  """Saves a random Qwen2 checkpoint shaped like marft's `tiny` config to `path`."""
  tiny = NAMED_CONFIGS["tiny"]
  config = transformers.Qwen2Config(
      vocab_size=tiny.vocab_size, hidden_size=tiny.hidden_size,
      intermediate_size=tiny.intermediate_size, num_hidden_layers=tiny.num_layers,
      num_attention_heads=tiny.num_heads, num_key_value_heads=tiny.num_kv_heads,
      head_dim=tiny.head_dim, rope_theta=tiny.rope_theta, rms_norm_eps=tiny.rms_norm_eps,
      max_position_embeddings=tiny.max_position_embeddings, tie_word_embeddings=False,
      initializer_range=_INIT_STD.value)
  torch.manual_seed(_SEED.value)
  model = transformers.Qwen2ForCausalLM(config)
  with torch.no_grad():  # non-zero QKV biases so that their mapping matters too
    for name, p in model.named_parameters():
      if name.endswith("bias"):
        p.copy_(torch.randn_like(p) * _INIT_STD.value)
  model.save_pretrained(path)


def _load_hf(path: str, attn: str) -> Any:
  return transformers.Qwen2ForCausalLM.from_pretrained(
      path, attn_implementation=attn, dtype=torch.float32).eval()


def _time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, float, np.ndarray]:
  """`(first-call seconds, median seconds of `repeats` more calls, last output)`."""
  start = time.perf_counter()
  out = fn()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return first, statistics.median(times), out


def _hf_runner(model: Any, prompts: np.ndarray, new_tokens: int) -> Callable[[], np.ndarray]:
  input_ids = torch.tensor(prompts, dtype=torch.long)
  attention_mask = torch.ones_like(input_ids)
  config = transformers.GenerationConfig(
      max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1,
      pad_token_id=0, eos_token_id=None, bos_token_id=None)

  def run() -> np.ndarray:
    with torch.inference_mode():
      out = model.generate(input_ids, attention_mask=attention_mask, generation_config=config)
    return out[:, prompts.shape[1]:].numpy()

  return run


def _marft_runner(model: Any, prompts: np.ndarray, new_tokens: int
                  ) -> Callable[[], np.ndarray]:
  lengths = np.full((prompts.shape[0],), prompts.shape[1], np.int32)
  key = jax.random.key(0)

  def run() -> np.ndarray:
    out = sampling.generate(model, prompts, lengths, key, max_new_tokens=new_tokens,
                            temperature=0.0)
    return np.asarray(jax.block_until_ready(out).tokens)

  return run




def _environment() -> list[str]:
  start, began = cpu_seconds(), time.perf_counter()
  time.sleep(1.0)
  share = others_share(start, time.perf_counter() - began)
  load = "unknown" if share is None else f"{share:.0%}"
  return [
      f"host: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
      f"CPU share used by other processes just before the run: {load}",
      f"torch {torch.__version__}: torch.get_num_threads()={torch.get_num_threads()}, "
      f"interop threads={torch.get_num_interop_threads()}",
      f"transformers {transformers.__version__}",
      f"jax {jax.__version__}: backend={jax.default_backend()}, devices={jax.devices()}, "
      f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} (JAX threading left at defaults)",
  ]


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  transformers.utils.logging.disable_progress_bar()
  torch.set_num_threads(os.cpu_count() or 1)
  environment = _environment()
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  prompt_len, new_tokens, repeats = _PROMPT_LEN.value, _NEW_TOKENS.value, _REPEATS.value
  tiny = NAMED_CONFIGS["tiny"]
  rng = np.random.default_rng(_SEED.value)
  attns = ["eager", "sdpa"] if _HF_ATTN.value == "auto" else [_HF_ATTN.value]

  with tempfile.TemporaryDirectory() as path:
    _build_checkpoint(path)
    hf_models = {attn: _load_hf(path, attn) for attn in attns}
    marft_model, marft_config = hf.load_pretrained(path)
  print("\n".join(environment))
  print(f"model: random Qwen2, {marft_config.num_params():,} params, float32, shaped like "
        f"marft `tiny` (init std {_INIT_STD.value}); prompts: random ids, length {prompt_len}, "
        f"{new_tokens} greedy new tokens, no stop token; median of {repeats} calls after one "
        "warm-up call", flush=True)

  rows, notes, speedups, contended = [], [], {}, []
  for batch in batch_sizes:
    cpu_start, began = cpu_seconds(), time.perf_counter()
    prompts = rng.integers(0, tiny.vocab_size, (batch, prompt_len)).astype(np.int32)
    hf_results = {attn: _time(_hf_runner(m, prompts, new_tokens), repeats)
                  for attn, m in hf_models.items()}
    attn = min(hf_results, key=lambda a: hf_results[a][1])
    hf_first, hf_median, hf_tokens = hf_results[attn]
    jax.clear_caches()  # so that every row's first call includes its own compile
    mx_first, mx_median, mx_tokens = _time(_marft_runner(marft_model, prompts, new_tokens),
                                           repeats)
    assert hf_tokens.shape == mx_tokens.shape == (batch, new_tokens), (hf_tokens.shape,
                                                                       mx_tokens.shape)
    same_rows = np.mean(np.all(hf_tokens == mx_tokens, axis=1))
    same_tokens = np.mean(hf_tokens == mx_tokens)
    others = others_share(cpu_start, time.perf_counter() - began)
    if others is not None and others > _MAX_OTHERS_SHARE:
      contended.append(f"batch {batch}: {others:.0%}")
    generated = batch * new_tokens
    speedups[batch] = hf_median / mx_median
    rows.append([
        batch, prompt_len, new_tokens, f"{attn}",
        f"{generated / hf_median:,.0f}", f"{generated / mx_median:,.0f}",
        f"{hf_median / mx_median:.1f}", f"{same_rows:.2f} ({same_tokens:.3f} of tokens)",
        f"{mx_first:.2f}", f"{hf_first:.2f}",
    ])
    timings = ", ".join(f"{a} {r[1] * 1e3:.0f} ms" for a, r in hf_results.items())
    notes.append(f"batch {batch}: transformers median {timings}; marft median "
                 f"{mx_median * 1e3:.0f} ms; distinct generated ids {len(np.unique(mx_tokens))}; "
                 f"CPU share used by other processes meanwhile "
                 f"{'unknown' if others is None else f'{others:.0%}'}")
    print(f"measured batch {batch}", flush=True)

  header = ["batch", "prompt len", "new tokens", "hf attn", "transformers tok/s", "marft tok/s",
            "speedup (x)", "same greedy rows", "marft first call s (incl. jit)",
            "transformers first call s"]
  print()
  print("| " + " | ".join(header) + " |")
  print("|" + "|".join("---" for _ in header) + "|")
  for row in rows:
    print("| " + " | ".join(str(x) for x in row) + " |")
  print()
  for note in notes:
    print(f"- {note}")
  print(f"- marft pads the batch to a multiple of {sampling._BATCH_MULTIPLE} and the prompt to "
        f"{sampling.prompt_bucket(prompt_len)} slots; tok/s counts real rows only.")
  print("- hf attn: the faster transformers attention at that batch (both are timed when "
        "--hf_attn=auto); its speed is the one reported.")
  if contended:
    print(f"- WARNING: other processes used the CPUs during the run ({', '.join(contended)} "
          "of all CPU time); torch's threads slow down badly on shared cores, so these numbers "
          "are unreliable. Rerun on an idle machine.")
  target = _TARGET_BATCH.value
  if target in speedups:
    met = "met" if speedups[target] >= _TARGET_SPEEDUP.value else "NOT met"
    unreliable = " (unreliable, see the warning above)" if contended else ""
    print(f"- target: batch {target} speedup >= {_TARGET_SPEEDUP.value:g}x: {met} "
          f"({speedups[target]:.1f}x){unreliable}")


if __name__ == "__main__":
  app.run(main)
