"""The rollout engine under load: many concurrent environments and long transcripts on CPU.

  python benchmarks/load.py [--envs=64,256,1024] [--max_turns=8] [--max_new_tokens=32]

Each size runs in a fresh subprocess (its own peak RSS and compile cache): `marft.rollout.collect`
on Plan-Path (`--kind`, compact prompts by default), `envs / k` tasks of K copies (tree
sampling), the `tiny` model with random weights and the char tokenizer. A random model almost
never parses an answer, so every episode plays all `max_turns` turns (two stages a turn for
`mas`) and every response runs to `max_new_tokens`: the longest transcripts the settings allow.
One warm-up rollout compiles, then `--rollouts` timed rollouts on new tasks (the throughput); the
train step is the AT-GRPO update (`experiments.rl.loss`, AdamW) on `--train_rows` rows drawn from
a rollout's batch (0: all of them), laid out as `experiments.rl.batch_fn` lays them out
(`at_grpo_credit`, `policy_batches`): one step on the warm-up rollout's batch, then
`--train_steps` steps on the timed rollouts' batches (a whole batch at 1,024 environments,
16,384 rows, would take minutes a step on 2 cores; the rows drawn keep the batch's width, and
their count is a `shape_bucket`, so the step compiles once whatever the size). Compilations are
counted with `marft.compiles.CompileCounter`; after warm-up there must be none. "RSS" is the
child's peak resident set (`VmHWM`) after the rollouts ("rollout") and at the end ("total");
"x first size" divides throughput by the first size's, measured in the same run.

Measured on 2 shared CPU cores (x86_64, load average 3-4 from other jobs; 8 turns x 32 new
tokens: 16 rows of width 96 per environment; wall time 292 s):

| envs | warm-up rollout (s) | rollout (s) | generate share | episodes/s | tokens/s | x first size | peak RSS rollout (MiB) | peak RSS total (MiB) | compiles warm-up | compiles after | train step (s) | train compiles first | train compiles after |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| 64 | 6.3 | 4.2 | 98% | 15.1 | 6862 | 1.00 | 526 | 2622 | 1 | 0 | 3.68 | 1 | 0 |
| 256 | 21.3 | 19.8 | 97% | 12.9 | 5825 | 0.85 | 708 | 2551 | 1 | 0 | 3.61 | 1 | 0 |
| 1024 | 111.7 | 65.5 | 97% | 15.6 | 7028 | 1.02 | 1512 | 2590 | 1 | 0 | 4.11 | 1 | 0 |

- Throughput is flat from 64 to 1,024 environments: generation is 97% of a rollout, and 64
  environments already keep both cores busy, so time grows linearly with the environments.
- The rollout's peak RSS grows linearly, ~1 MiB an environment on top of a ~0.45 GiB runtime:
  the sampler's compiled buffers, which XLA's memory analysis puts at 0.85 MiB a row for a
  64-token prompt bucket + 32 new tokens (KV cache and prefill activations; 868 MiB at 1,024
  rows). `RolloutConfig.max_batch` caps the rows of one `generate` call, hence this term.
- The only compilation of a rollout is the sampler's one program (one prompt bucket, one batch
  bucket), in the warm-up; the train step compiles once. A model whose episodes end at
  different turns meets more batch buckets (two per doubling), each compiled once.
- The update on a whole 1,024-environment batch (16,384 rows x 96 tokens) needs a compiled peak
  of 117 GiB without gradient accumulation and 1.9 GiB with `algo.micro_batch_rows=256`
  (`benchmarks/memory.py`'s analysis, shapes only), against 1.8 GiB for the 256 rows here.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from benchmarks import isolated  # noqa: E402

_ENVS = flags.DEFINE_list("envs", ["64", "256", "1024"], "Concurrent environments per size.")
_K = flags.DEFINE_integer("k", 4, "Copies per task (tree sampling): envs / k tasks.")
_KIND = flags.DEFINE_enum("kind", "mas", ["single", "mas"], "Plan-Path workflow.")
_STYLE = flags.DEFINE_enum("prompt_style", "compact", ["compact", "chat"], "Prompt style.")
_MAX_TURNS = flags.DEFINE_integer("max_turns", 8, "Turns per episode.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 32, "Response budget per action.")
_ROLLOUTS = flags.DEFINE_integer("rollouts", 1, "Timed rollouts after the warm-up one.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 2, "Train steps after the first one.")
_TRAIN_ROWS = flags.DEFINE_integer("train_rows", 256, "Rows per train step (0: the whole batch).")

_MIB = 2**20
# AT-GRPO's settings, but keeping zero-variance groups: a random model's groups mostly are.
_ALGO = {"alpha": 1.0, "eps": 1e-6, "normalize_std": True, "drop_zero_variance": False,
         "clip_eps": 0.2, "dual_clip": 3.0, "aggregation": "token-mean", "kl_coef": 0.0}


@dataclasses.dataclass(frozen=True)
class Spec:
  """One size: the environments and the transcript length."""

  envs: int
  k: int = 4
  kind: str = "mas"
  prompt_style: str = "compact"
  max_turns: int = 8
  max_new_tokens: int = 32
  rollouts: int = 1
  train_steps: int = 2
  train_rows: int = 256


def train_rows(batch, rows: int, seed: int) -> dict:
  """`[1, B, ...]` update inputs of `rows` random rows of a rollout batch (all: `rows=0`)."""
  import ml_collections
  import numpy as np
  from experiments import rl
  algo = ml_collections.ConfigDict(_ALGO)
  advantages, weight = rl.at_grpo_credit(batch, algo)
  picked = np.arange(batch.num_rows)
  if 0 < rows < batch.num_rows:
    picked = np.sort(np.random.default_rng(seed).choice(batch.num_rows, rows, replace=False))
  columns = {"tokens": batch.tokens, "loss_mask": batch.loss_mask,
             "behavior_logp": batch.behavior_logp, "advantages": advantages,
             "row_weight": weight}
  return rl.policy_batches({name: np.asarray(v)[picked] for name, v in columns.items()},
                           np.asarray(batch.policy_id)[picked], 1)


def measure(spec: Spec) -> dict:
  """Runs the warm-up rollout and train step, then the timed ones; counts and times them."""
  import jax
  import ml_collections
  import numpy as np
  from envs.registry import get_task
  from experiments import rl
  from marft.compiles import CompileCounter
  from marft.models.config import get_model_config
  from marft.models.decoder import build_model
  from marft.policies import stack_policies
  from marft.rollout.engine import RolloutConfig, collect, model_sampler
  from marft.tokenizers import CharTokenizer
  from marft.train_step import init_train_state, make_optimizer, make_train_step

  if spec.envs % spec.k:
    raise ValueError(f"envs={spec.envs} is not a multiple of k={spec.k}")
  if spec.rollouts < 1:
    raise ValueError(f"rollouts={spec.rollouts}: at least one timed rollout")
  model_config = get_model_config("tiny")
  model = build_model(model_config)
  tokenizer = CharTokenizer(model_config.vocab_size)
  task = get_task("plan_path")
  task_cfg = task.default_config() | {"max_turns": spec.max_turns}
  tasks = spec.envs // spec.k
  config = RolloutConfig(k=spec.k, tree=True, max_new_tokens=spec.max_new_tokens)
  sampler = model_sampler(model, tokenizer, config)
  mapping = {role: 0 for role in task.make_workflow(
      task.generate_task(0, "train", task_cfg), spec.kind, task_cfg, spec.max_turns).roles}

  def rollout(index: int):
    workflows = [task.make_workflow(task.generate_task(index * tasks + i, "train", task_cfg),
                                    spec.kind, task_cfg, spec.max_turns, spec.prompt_style)
                 for i in range(tasks)]
    start = time.perf_counter()
    out = collect(workflows, [sampler], tokenizer, jax.random.key(index), mapping=mapping,
                  config=config)
    return out, time.perf_counter() - start

  CompileCounter.install()
  with CompileCounter.delta() as warm_rollout:
    warm, warm_seconds = rollout(0)
  timed, seconds, tokens, generating = [], 0.0, 0.0, 0.0
  with CompileCounter.delta() as after_rollout:
    for index in range(1, spec.rollouts + 1):
      out, took = rollout(index)
      timed.append(out.batch)
      seconds += took
      tokens += out.metrics["rollout/generated_tokens"]
      generating += out.metrics["rollout/generate_seconds"]
  rollout_rss = isolated.peak_rss_bytes()

  optimizer = make_optimizer({"lr": 1e-5, "total_steps": 1000})
  graphdef, params, _ = stack_policies(model, 1)
  state = init_train_state(params, optimizer, seed=0)
  step = make_train_step(functools.partial(rl.loss, cfg=ml_collections.ConfigDict(_ALGO)),
                         optimizer, graphdef)
  batch = jax.device_put(train_rows(warm.batch, spec.train_rows, 0))
  with CompileCounter.delta() as warm_train:
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
  step_seconds = []
  with CompileCounter.delta() as after_train:
    for index in range(spec.train_steps):
      batch = jax.device_put(train_rows(timed[index % len(timed)], spec.train_rows, index + 1))
      start = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      step_seconds.append(time.perf_counter() - start)
  return {"spec": dataclasses.asdict(spec), "warm_seconds": warm_seconds, "seconds": seconds,
          "episodes": spec.envs * spec.rollouts, "tokens": tokens,
          "rows": warm.metrics["rollout/rows"], "width": int(warm.batch.tokens.shape[1]),
          "turns": warm.metrics["rollout/turns"],
          "generate_share": generating / seconds,
          "compiles_warmup": warm_rollout.count, "compiles_after": after_rollout.count,
          "train_compiles_first": warm_train.count, "train_compiles_after": after_train.count,
          "train_shape": list(batch["tokens"].shape),
          "train_step_s": float(np.median(step_seconds)) if step_seconds else None,
          "loss": float(metrics["loss"][0]), "rollout_rss": rollout_rss,
          "total_rss": isolated.peak_rss_bytes(), "device": jax.devices()[0].device_kind}


def table(results: list[dict]) -> list[str]:
  """Markdown rows; "x first size" divides throughput by the first size's."""
  header = ["envs", "warm-up rollout (s)", "rollout (s)", "generate share", "episodes/s",
            "tokens/s", "x first size", "peak RSS rollout (MiB)", "peak RSS total (MiB)",
            "compiles warm-up", "compiles after", "train step (s)", "train compiles first",
            "train compiles after"]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  base = next((r for r in results if "error" not in r), None)
  for r in results:
    if "error" in r:
      lines.append(f"| {r['spec']['envs']} | {r['error']} |" + " |" * (len(header) - 2))
      continue
    rate = r["tokens"] / r["seconds"]
    step = "-" if r["train_step_s"] is None else f"{r['train_step_s']:.2f}"
    lines.append("| " + " | ".join([
        str(r["spec"]["envs"]), f"{r['warm_seconds']:.1f}",
        f"{r['seconds'] / r['spec']['rollouts']:.1f}", f"{r['generate_share']:.0%}",
        f"{r['episodes'] / r['seconds']:.1f}", f"{rate:.0f}",
        f"{rate / (base['tokens'] / base['seconds']):.2f}", f"{r['rollout_rss'] / _MIB:.0f}",
        f"{r['total_rss'] / _MIB:.0f}", str(r["compiles_warmup"]), str(r["compiles_after"]),
        step, str(r["train_compiles_first"]), str(r["train_compiles_after"])]) + " |")
  return lines


def main(argv: list[str]) -> None:
  del argv
  if isolated.CHILD.value:
    result = measure(Spec(**json.loads(isolated.CHILD.value)))
    print(isolated.RESULT + json.dumps(result), flush=True)
    return
  started, load = time.perf_counter(), os.getloadavg()[0]
  results = []
  for envs in _ENVS.value:
    spec = Spec(int(envs), _K.value, _KIND.value, _STYLE.value, _MAX_TURNS.value, _MAX_NEW.value,
                _ROLLOUTS.value, _TRAIN_STEPS.value, _TRAIN_ROWS.value)
    r = isolated.child_result(__file__, spec, isolated.CHILD_TIMEOUT.value)
    results.append(r)
    print(f"{spec}: {r.get('error') or 'done'}", flush=True)
  ok = [r for r in results if "error" not in r]
  if ok:
    r = ok[0]
    print(f"\n{r['device']}, {os.cpu_count()} cores; tiny model (random weights), Plan-Path "
          f"{_KIND.value} ({_STYLE.value} prompts), K={_K.value} tree sampling, {_MAX_TURNS.value}"
          f" turns x {_MAX_NEW.value} new tokens; {r['rows'] / r['spec']['envs']:.0f} rows per "
          f"environment, batch width {r['width']}; {_ROLLOUTS.value} timed rollouts per size; "
          f"train step on {r['train_shape'][1]} rows x {r['train_shape'][2]} tokens\n")
  print("\n".join(table(results)))
  print(f"\nwall time {time.perf_counter() - started:.0f} s; load average (1 min) "
        f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
  app.run(main)
