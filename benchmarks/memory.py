"""Peak memory of one AT-GRPO update under remat, chunked log-probs and gradient accumulation.

  python benchmarks/memory.py                               # compile-time analysis only
  python benchmarks/memory.py --models=small --run          # also run each update once
  python benchmarks/memory.py --models=qwen2.5-0.5b --layers=8 --tokens=512

One update is `marft.train_step.make_train_step` over `experiments.rl.loss` with the AT-GRPO
algorithm settings (clip 0.2, dual clip 3.0, token-mean aggregation, no KL term), AdamW with
global-norm clipping, one policy, on a random batch of R rows x (T + 1) token ids, so that the
forward sees exactly T positions: `loss_mask` on the last half of each row, `behavior_logp`
zeros, random advantages, `row_weight` ones. Each row of the table is one configuration of
`remat` (none | block | dots), `logprob_chunk` (0: `[B, T, V]` logits in one projection) and
`micro_batch_rows` (0: no gradient accumulation):

- `small` (10.9M parameters, all trained) at 8 x 256 by default;
- a `qwen2.5-0.5b`-shaped decoder (the real layer shapes, all 24 layers unless `--layers`, the
  151,936-token vocabulary, tied embeddings; random weights in `--dtype`, float32 by default)
  with LoRA adapters of rank 16 on every projection, only the adapters trained
  (`stack_policies(..., lora_only=True)`, the base weights one frozen argument), at 8 x 1024.

Every configuration is measured in a fresh subprocess, so neither compilations nor peaks mix:

- "compiled" is XLA's buffer assignment of the jitted update
  (`jax.jit(...).lower(...).compile().memory_analysis()`): argument bytes (train state, batch,
  frozen base) + output bytes (new state, metrics) - alias bytes (outputs written into the
  donated state's buffers) + temp bytes (the peak of everything live inside the step:
  activations saved for the backward pass, logits, gradients, optimizer temporaries, as the
  heap simulation of XLA's buffer assignment packs them). It is what the step needs beyond the
  executable itself, and is computed from shapes alone: without `--run` the model is built with
  `nnx.eval_shape` and the inputs are `jax.ShapeDtypeStruct`s, so nothing of the size of the
  parameters or the activations is allocated.
- "measured" (`--run`): on CPU, the subprocess's peak resident set (`VmHWM`) after building
  the real parameters, compiling and running the update once (so it also counts the Python
  process, XLA's compiler and the parameters the host keeps); on a GPU, the device allocator's
  `peak_bytes_in_use` after the update.

The target line checks that the best 0.5B-shaped configuration's peak (measured where run,
else compiled) is under 16 GiB. `--only=none/256/1` keeps just the listed
`remat/logprob_chunk/micro_batch_rows` rows.

Measured on 2 CPU cores (x86_64, jax 0.10.2, flax 0.12.8, float32; GiB; peak RSS with `--run`):

| model | rows x tokens | remat | chunk | micro | compiled peak | peak RSS | ratio compiled |
|---|---|---|---|---|---|---|---|
| small | 8 x 256 | none | 0 | 0 | 0.84 | 1.61 | 1.00 |
| small | 8 x 256 | block | 0 | 0 | 0.79 | 1.57 | 0.94 |
| small | 8 x 256 | dots | 0 | 0 | 0.79 | 1.53 | 0.94 |
| small | 8 x 256 | none | 128 | 0 | 0.84 | 1.58 | 1.00 |
| small | 8 x 256 | none | 0 | 2 | 0.39 | 1.11 | 0.46 |
| small | 8 x 256 | block | 128 | 2 | 0.40 | 1.16 | 0.48 |
| qwen2.5-0.5b, LoRA 16 | 8 x 1024 | none | 0 | 0 | 72.80 | - | 1.00 |
| qwen2.5-0.5b, LoRA 16 | 8 x 1024 | none | 256 | 0 | 65.90 | - | 0.91 |
| qwen2.5-0.5b, LoRA 16 | 8 x 1024 | none | 0 | 2 | 20.38 | - | 0.28 |
| qwen2.5-0.5b, LoRA 16 | 8 x 1024 | none | 256 | 2 | 18.65 | - | 0.26 |
| qwen2.5-0.5b, LoRA 16 | 8 x 1024 | none | 256 | 1 | 10.78 | 12.17 | 0.15 |

Target (under 16 GiB): PASS with logprob_chunk 256 and micro_batch_rows 1 (12.17 GiB peak RSS;
the run took 464 s). Three things stand out:

- On XLA:CPU `remat` barely changes the peak (0.94x on `small`). The decoder's layers are an
  unrolled Python loop, and XLA:CPU expands the optimization barriers of `jax.checkpoint`
  early, so the recomputed forward is merged back into (or scheduled alongside) the original
  one: the compiled step has as many dots with remat as without. A `jax.checkpoint` inside a
  `lax.scan` over layers does cut the temp memory on CPU (8x on a toy stack).
- With LoRA (`lora_only=True`, frozen base), `remat=block|dots` used to fail to trace
  (`nnx.remat` wrote the layer's state back, and the frozen Params belong to the outer jit
  trace); the decoder now remats a pure function of the layer's split state, which traces and
  gives the same update.
- `logprob_chunk` does remove the `[B, T, V]` logits (the chunked step holds `[B, chunk, V]`
  only), but at 8 x 1024 they are ~7 GiB of 73: the 24 layers' saved activations dominate, about
  2.6 GiB a layer, mostly the float32 attention scores and probabilities `[B, heads, T, T]`
  (448 MiB each). Gradient accumulation is what brings the 0.5B update under 16 GiB here.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time

# Run as `python benchmarks/memory.py`: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from benchmarks import isolated  # noqa: E402

_MODELS = flags.DEFINE_list("models", ["small", "qwen2.5-0.5b"], "Model shapes (see CONFIGS).")
_RUN = flags.DEFINE_bool("run", False, "Also run each update once and measure its peak memory "
                         "(on CPU the 0.5B update at 8 x 1024 takes minutes).")
_ROWS = flags.DEFINE_integer("rows", 0, "Rows per update (0: the model's default, 8).")
_TOKENS = flags.DEFINE_integer("tokens", 0, "Positions per row (0: the model's default).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Activation and parameter dtype of every model.")
_LAYERS = flags.DEFINE_integer("layers", 0, "Override the number of decoder layers (0: keep).")
_LORA_RANK = flags.DEFINE_integer("lora_rank", 16, "LoRA rank of the LoRA-trained models.")
_TARGET_GIB = flags.DEFINE_float("target_gib", 16.0, "Peak the best 0.5B update must stay under.")
_ONLY = flags.DEFINE_list("only", [], "Only these configurations, as remat/logprob_chunk/"
                          "micro_batch_rows (e.g. none/0/0,none/256/1); ratios then divide by "
                          "the first one listed in CONFIGS order.")

_GIB = 2**30
_TARGET_MODEL = "qwen2.5-0.5b"
_ALGO = {"clip_eps": 0.2, "dual_clip": 3.0, "aggregation": "token-mean", "kl_coef": 0.0}
_OPTIMIZER = {"lr": 1e-6, "total_steps": 1000, "schedule": "constant", "weight_decay": 0.01,
              "max_grad_norm": 1.0}


@dataclasses.dataclass(frozen=True)
class Spec:
  """One row of the table: a model shape, a batch and the three memory knobs."""

  model: str
  rows: int
  tokens: int
  remat: str = "none"
  logprob_chunk: int = 0
  micro_batch_rows: int = 0
  lora_rank: int = 0
  dtype: str = "float32"
  layers: int = 0


# Per model: (default rows, default tokens, LoRA?, [(remat, logprob_chunk, micro_batch_rows)]);
# the first configuration is the baseline the ratios divide by.
CONFIGS = {
    "small": (8, 256, False, [("none", 0, 0), ("block", 0, 0), ("dots", 0, 0), ("none", 128, 0),
                              ("none", 0, 2), ("block", 128, 2), ("dots", 128, 2)]),
    "qwen2.5-0.5b": (8, 1024, True, [("none", 0, 0), ("none", 256, 0), ("block", 0, 0),
                                     ("block", 256, 0), ("dots", 256, 0), ("none", 0, 2),
                                     ("none", 256, 2), ("block", 256, 2), ("none", 256, 1),
                                     ("block", 256, 1)]),
    # The paper scale's model (compile analysis: what one device needs for the LoRA update).
    "qwen3-1.7b": (8, 2048, True, [("none", 256, 0), ("none", 256, 1), ("block", 256, 1)]),
}


def specs_for(model: str, rows: int, tokens: int, dtype: str, layers: int, lora_rank: int,
              only: list[str] = ()) -> list[Spec]:
  """The configurations of one model, baseline first; `only`: just these `remat/chunk/micro`."""
  default_rows, default_tokens, lora, knobs = CONFIGS[model]
  return [Spec(model, rows or default_rows, tokens or default_tokens, remat, chunk, micro,
               lora_rank if lora else 0, dtype, layers) for remat, chunk, micro in knobs
          if not only or f"{remat}/{chunk}/{micro}" in only]


# ----------------------------------------------------------------------------- one configuration


def model_config(spec: Spec):
  from marft.models.config import get_model_config
  overrides = {"remat": spec.remat, "logprob_chunk": spec.logprob_chunk,
               "lora_rank": spec.lora_rank, "dtype": spec.dtype, "param_dtype": spec.dtype}
  if spec.layers:
    overrides["num_layers"] = spec.layers
  return get_model_config(spec.model, **overrides)


def random_batch(rows: int, tokens: int, vocab: int, seed: int = 0) -> dict:
  """`[1, R, T + 1]` arrays (one policy): random ids, the loss on the last half of each row."""
  import numpy as np
  rng = np.random.default_rng(seed)
  width = tokens + 1
  loss_mask = np.zeros((1, rows, width), np.float32)
  loss_mask[..., width // 2:] = 1.0
  return {"tokens": rng.integers(0, vocab, (1, rows, width)).astype(np.int32),
          "loss_mask": loss_mask,
          "behavior_logp": np.zeros((1, rows, width), np.float32),
          "advantages": rng.standard_normal((1, rows)).astype(np.float32),
          "row_weight": np.ones((1, rows), np.float32)}


def abstract_batch(rows: int, tokens: int) -> dict:
  """The shapes and dtypes of `random_batch`, allocating nothing."""
  import jax
  import jax.numpy as jnp
  per_token = jax.ShapeDtypeStruct((1, rows, tokens + 1), jnp.float32)
  per_row = jax.ShapeDtypeStruct((1, rows), jnp.float32)
  return {"tokens": jax.ShapeDtypeStruct((1, rows, tokens + 1), jnp.int32),
          "loss_mask": per_token, "behavior_logp": per_token, "advantages": per_row,
          "row_weight": per_row}


def policy_state(config, lora: bool, optimizer, abstract: bool):
  """`(graphdef, train state, frozen)` for one policy; shapes only when `abstract`."""
  import jax
  from flax import nnx
  from marft.models.decoder import build_model
  from marft.policies import stack_policies
  from marft.train_step import init_train_state
  if abstract:
    model = nnx.eval_shape(lambda: build_model(config))
    graphdef, trainable, frozen = (nnx.split(model, nnx.LoRAParam, ...) if lora
                                   else (*nnx.split(model), None))
    stacked = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1,) + x.shape, x.dtype), trainable)
    state = jax.eval_shape(lambda p: init_train_state(p, optimizer, seed=0), stacked)
    return graphdef, state, frozen
  graphdef, stacked, frozen = stack_policies(build_model(config), 1, lora_only=lora)
  return graphdef, init_train_state(stacked, optimizer, seed=0), frozen


def update_fn(graphdef, optimizer, micro_batch_rows: int):
  """`update(state, batch, frozen)`: the repository's train step over the AT-GRPO loss.

  The step is built inside so that `frozen` is an argument of the outer jit (the inner jitted
  step is inlined), not a compiled-in constant."""
  import ml_collections
  from experiments import rl
  from marft.train_step import make_train_step
  loss = functools.partial(rl.loss, cfg=ml_collections.ConfigDict(_ALGO))

  def update(state, batch, frozen):
    step = make_train_step(loss, optimizer, graphdef, frozen=frozen,
                           micro_batch_rows=micro_batch_rows,
                           denominators=rl.loss_denominators if micro_batch_rows else None)
    return step(state, batch)

  return update


def analysis_bytes(compiled) -> dict:
  """XLA's memory analysis of a compiled executable, and its peak estimate."""
  stats = compiled.memory_analysis()
  out = {name: int(getattr(stats, f"{name}_size_in_bytes")) for name in
         ("argument", "output", "alias", "temp", "generated_code")}
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def measure(spec: Spec, run: bool) -> dict:
  """Compiles (and with `run`, executes once) the update of `spec`; its memory in bytes."""
  import jax
  from marft.train_step import make_optimizer
  config = model_config(spec)
  optimizer = make_optimizer(_OPTIMIZER)
  lora = spec.lora_rank > 0
  graphdef, state, frozen = policy_state(config, lora, optimizer, abstract=not run)
  if run:
    batch = jax.device_put(random_batch(spec.rows, spec.tokens, config.vocab_size))
  else:
    batch = abstract_batch(spec.rows, spec.tokens)
  trainable = sum(x.size for x in jax.tree.leaves(state.params))
  start = time.perf_counter()
  compiled = jax.jit(update_fn(graphdef, optimizer, spec.micro_batch_rows),
                     donate_argnums=(0,)).lower(state, batch, frozen).compile()
  result = {"spec": dataclasses.asdict(spec), "params": config.num_params(),
            "trainable": int(trainable), "compile_s": time.perf_counter() - start,
            "compiled": analysis_bytes(compiled), "device": jax.devices()[0].device_kind,
            "platform": jax.default_backend(), "num_layers": config.num_layers}
  if run:
    result["rss_after_compile"] = isolated.peak_rss_bytes()
    start = time.perf_counter()
    _, metrics = compiled(state, batch, frozen)
    jax.block_until_ready(metrics)
    result["run_s"] = time.perf_counter() - start
    result["loss"] = float(metrics["loss"][0])
    if jax.default_backend() == "cpu":
      result["measured"] = isolated.peak_rss_bytes()
    else:
      result["measured"] = int(jax.devices()[0].memory_stats()["peak_bytes_in_use"])
  return result


def measure_in_subprocess(spec: Spec, run: bool, timeout: int) -> dict:
  """`measure(spec, run)` in a fresh Python process."""
  return isolated.child_result(__file__, spec, timeout, f"--run={run}")


def gib(value: float | None) -> str:
  return "-" if value is None else f"{value / _GIB:.2f}"


def ratio(value: float | None, base: float | None) -> str:
  return "-" if value is None or not base else f"{value / base:.2f}"


def table(results: list[dict], measured_name: str) -> list[str]:
  """Markdown rows; ratios divide by the first (baseline) row of the same model."""
  header = ["model", "rows x tokens", "remat", "logprob_chunk", "micro_batch_rows",
            "params (M)", "trained (M)", "compiled peak (GiB)", "temp (GiB)",
            f"{measured_name} (GiB)", "ratio compiled", "ratio measured"]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  baselines: dict[str, dict] = {}
  for r in results:
    s = r["spec"]
    base = baselines.setdefault(s["model"], r)
    prefix = [s["model"] + (f" ({r.get('num_layers', s['layers'])} layers)" if s["layers"] else ""),
              f"{s['rows']} x {s['tokens']}", s["remat"], str(s["logprob_chunk"]),
              str(s["micro_batch_rows"])]
    if "error" in r:
      lines.append("| " + " | ".join(prefix + [r["error"]] + [""] * 6) + " |")
      continue
    peak, measured = r["compiled"]["peak"], r.get("measured")
    base_peak = base.get("compiled", {}).get("peak")
    lines.append("| " + " | ".join(prefix + [
        f"{r['params'] / 1e6:.1f}", f"{r['trainable'] / 1e6:.2f}", gib(peak),
        gib(r["compiled"]["temp"]), gib(measured), ratio(peak, base_peak),
        ratio(measured, base.get("measured"))]) + " |")
  return lines


def target_line(results: list[dict], target_gib: float) -> str | None:
  """PASS/FAIL: the best 0.5B-shaped configuration's peak is under the target."""
  ok = [r for r in results if r["spec"]["model"] == _TARGET_MODEL and "error" not in r]
  if not ok:
    return None
  peak_of = lambda r: r.get("measured", r["compiled"]["peak"])
  best = min(ok, key=peak_of)
  s = best["spec"]
  kind = "measured" if "measured" in best else "compiled"
  layers = f", {best['num_layers']} of 24 layers" if s["layers"] else ""
  verdict = "PASS" if peak_of(best) < target_gib * _GIB else "FAIL"
  return (f"target: {_TARGET_MODEL}-shaped LoRA AT-GRPO update at {s['rows']} x {s['tokens']}"
          f"{layers} under {target_gib:g} GiB: {verdict} (best: remat={s['remat']}, "
          f"logprob_chunk={s['logprob_chunk']}, micro_batch_rows={s['micro_batch_rows']}, "
          f"{kind} peak {peak_of(best) / _GIB:.2f} GiB)")


def main(argv: list[str]) -> None:
  del argv
  if isolated.CHILD.value:
    result = measure(Spec(**json.loads(isolated.CHILD.value)), _RUN.value)
    print(isolated.RESULT + json.dumps(result), flush=True)
    return
  unknown = set(_MODELS.value) - set(CONFIGS)
  if unknown:
    raise app.UsageError(f"unknown models {sorted(unknown)}; choose from {sorted(CONFIGS)}")
  results = []
  for model in _MODELS.value:
    for spec in specs_for(model, _ROWS.value, _TOKENS.value, _DTYPE.value, _LAYERS.value,
                          _LORA_RANK.value, _ONLY.value):
      r = measure_in_subprocess(spec, _RUN.value, isolated.CHILD_TIMEOUT.value)
      results.append(r)
      done = r.get("error") or (f"compiled {gib(r['compiled']['peak'])} GiB in "
                                f"{r['compile_s']:.0f} s, measured {gib(r.get('measured'))} GiB")
      print(f"{spec}: {done}", flush=True)
  ok = [r for r in results if "error" not in r]
  platform = ok[0]["platform"] if ok else "?"
  measured_name = "peak RSS" if platform == "cpu" else "device peak"
  print(f"\n{ok[0]['device'] if ok else '?'} ({platform}), {os.cpu_count()} cores; dtype "
        f"{_DTYPE.value}; one AT-GRPO update (clip 0.2, dual clip 3, token-mean, no KL, AdamW), "
        f"one policy, rows x tokens = forward positions; {'run once' if _RUN.value else 'not run'}"
        "\n")
  print("\n".join(table(results, measured_name)))
  print()
  for r in ok:
    s = r["spec"]
    extra = (f", peak RSS after compile {gib(r['rss_after_compile'])} GiB, run {r['run_s']:.1f} s, "
             f"loss {r['loss']:.4f}" if "run_s" in r else "")
    c = r["compiled"]
    print(f"- {s['model']} {s['remat']}/{s['logprob_chunk']}/{s['micro_batch_rows']}: argument "
          f"{gib(c['argument'])}, output {gib(c['output'])}, alias {gib(c['alias'])}, temp "
          f"{gib(c['temp'])} GiB; compile {r['compile_s']:.0f} s{extra}")
  line = target_line(results, _TARGET_GIB.value)
  if line:
    print("\n" + line)


if __name__ == "__main__":
  app.run(main)
