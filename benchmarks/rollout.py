"""Rollout throughput of a full multi-agent batch on CPU, and where the time goes.

  python benchmarks/rollout.py [--task=plan_path] [--tasks=32] [--k=4]

Runs `marft.rollout.collect` (tree sampling, K copies per task, the MAS workflow) with a tiny
model and prints episodes/s, generated tokens/s and the share of wall time spent generating
versus in the environment and the engine's Python. The first call (compilation) is excluded.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from envs.registry import get_task  # noqa: E402
from marft.models.config import get_model_config  # noqa: E402
from marft.models.decoder import build_model  # noqa: E402
from marft.rollout.engine import RolloutConfig, collect, model_sampler  # noqa: E402
from marft.tokenizers import CharTokenizer  # noqa: E402

_TASKS = flags.DEFINE_list("task", ["plan_path"], "Task names.")
_NUM = flags.DEFINE_integer("tasks", 32, "Tasks per batch.")
_K = flags.DEFINE_integer("k", 4, "Copies per task (tree sampling).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed rollouts (median reported).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 8, "Response budget per action.")


def bench(task_name: str) -> dict:
  task = get_task(task_name)
  cfg = task.default_config()
  model_config = get_model_config("tiny")
  tokenizer = CharTokenizer(model_config.vocab_size)
  model = build_model(model_config)
  workflows = [task.make_workflow(task.generate_task(i, "train", cfg), "mas", cfg,
                                  cfg["max_turns"]) for i in range(_NUM.value)]
  config = RolloutConfig(k=_K.value, tree=True, max_new_tokens=_MAX_NEW.value)
  sampler = model_sampler(model, tokenizer, config)
  mapping = {role: 0 for role in workflows[0].roles}
  collect(workflows, [sampler], tokenizer, jax.random.key(0), mapping=mapping, config=config)
  runs = []
  for repeat in range(_REPEATS.value):
    start = time.perf_counter()
    rollout = collect(workflows, [sampler], tokenizer, jax.random.key(repeat + 1),
                      mapping=mapping, config=config)
    runs.append((time.perf_counter() - start, rollout.metrics))
  seconds, metrics = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
  generate = metrics["rollout/generate_seconds"]
  return dict(task=task_name, seconds=seconds, episodes=_NUM.value * _K.value,
              rows=metrics["rollout/rows"], tokens=metrics["rollout/generated_tokens"],
              generate_share=generate / seconds)


def main(argv):
  del argv
  rows = [bench(name) for name in _TASKS.value]
  print(f"\n{jax.devices()[0].device_kind}, {os.cpu_count()} cores; tiny model (random weights), "
        f"MAS workflow, tree sampling, {_NUM.value} tasks x K={_K.value}\n")
  print("| task | rollout (s) | episodes/s | actions | generated tokens/s | generation share "
        "| env + Python share |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['task']} | {r['seconds']:.2f} | {r['episodes'] / r['seconds']:.1f} | "
          f"{r['rows']:.0f} | {r['tokens'] / r['seconds']:.0f} | {r['generate_share']:.0%} | "
          f"{1 - r['generate_share']:.0%} |")


if __name__ == "__main__":
  app.run(main)
