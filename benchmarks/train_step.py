"""Train-step achieved FLOP/s as a fraction of this machine's float32 matmul peak, same run.

  python benchmarks/train_step.py [--models=tiny,small] [--batch=16] [--seq=256]

The peak is the best of several large square `jnp.dot`s (2n^3 FLOPs each). A train step's FLOPs
are counted two ways: the model formula (6 x non-embedding params x tokens for the matmuls,
plus 12 x layers x seq x hidden x tokens for attention, plus 6 x hidden x vocab x tokens for the
LM head), and XLA's own cost analysis of the compiled step. Prints a markdown table.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402

from algorithms import sft  # noqa: E402
from marft.models.config import get_model_config  # noqa: E402
from marft.models.decoder import build_model  # noqa: E402
from marft.policies import stack_policies  # noqa: E402
from marft.train_step import init_train_state, make_train_step  # noqa: E402

_MODELS = flags.DEFINE_list("models", ["tiny", "small"], "Named model shapes.")
_BATCH = flags.DEFINE_integer("batch", 16, "Sequences per step.")
_SEQ = flags.DEFINE_integer("seq", 256, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed steps (median reported).")


def _median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def matmul_peak() -> tuple[float, int]:
  """Best float32 FLOP/s of a square matmul over a few sizes, and the size that gave it."""
  best, best_n = 0.0, 0
  for n in (512, 1024, 2048):
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    flops = 2 * n**3 / _median_seconds(lambda: dot(a, b), 5)
    if flops > best:
      best, best_n = flops, n
  return best, best_n


def model_flops(config, batch: int, seq: int) -> float:
  """Training FLOPs (forward + backward) of one step by the standard formula."""
  tokens = batch * seq
  embed = config.vocab_size * config.hidden_size * (1 if config.tie_embeddings else 2)
  non_embedding = config.num_params() - embed
  attention = 12 * config.num_layers * seq * config.num_heads * config.head_dim
  head = 6 * config.hidden_size * config.vocab_size
  return tokens * (6 * non_embedding + attention + head)


def bench_model(name: str, batch: int, seq: int, repeats: int) -> dict:
  config = get_model_config(name)
  graphdef, params, _ = stack_policies(build_model(config), 1)
  optimizer = optax.adamw(1e-4)
  state = init_train_state(params, optimizer, seed=0)
  step = make_train_step(sft.loss, optimizer, graphdef)
  rng = np.random.default_rng(0)
  batch_data = {"tokens": rng.integers(4, config.vocab_size, (1, batch, seq + 1)).astype(np.int32),
                "loss_mask": np.ones((1, batch, seq + 1), np.float32)}
  batch_data = jax.device_put(batch_data)
  start = time.perf_counter()
  state, metrics = step(state, batch_data)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start

  holder = {"state": state}

  def one_step():
    holder["state"], m = step(holder["state"], batch_data)
    return m

  seconds = _median_seconds(one_step, repeats)
  return dict(name=name, params=config.num_params(), tokens=batch * seq, seconds=seconds,
              compile_s=compile_s, flops=model_flops(config, batch, seq))


def main(argv):
  del argv
  peak, peak_n = matmul_peak()
  rows = [bench_model(name, _BATCH.value, _SEQ.value, _REPEATS.value) for name in _MODELS.value]
  print(f"\n{jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} cores; "
        f"float32 matmul peak {peak / 1e9:.1f} GFLOP/s ({peak_n}x{peak_n})\n")
  print("| model | params | tokens/step | step (ms) | tokens/s | model GFLOP/s | "
        "fraction of matmul peak |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    achieved = r["flops"] / r["seconds"]
    print(f"| {r['name']} | {r['params'] / 1e6:.1f}M | {r['tokens']} | "
          f"{r['seconds'] * 1e3:.1f} | {r['tokens'] / r['seconds']:.0f} | "
          f"{achieved / 1e9:.1f} | {achieved / peak:.0%} |")


if __name__ == "__main__":
  app.run(main)
