"""Rollout throughput of a full multi-agent batch on CPU, and where the time goes.

  python benchmarks/rollout.py [--task=plan_path] [--tasks=32] [--k=4]
  python benchmarks/rollout.py --task=search_qa --workflow=single,mas --notree \
      --checkpoint=runs/base/search_qa-<hash>/hf --max_new_tokens=14     # MATPO's rollout

Runs `marft.rollout.collect` (K copies per task, tree sampling or independent copies, the
chosen workflows) with a tiny model (random weights, or a trained `--checkpoint`, which a task
whose random-weight episodes end at the first invalid action needs) and prints episodes/s,
generated tokens/s, the share of wall time spent generating versus in the environment and the
engine's Python, and `generate` calls per engine iteration (nested rollouts must not add any).
The first call (compilation) is excluded.
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
from marft.models.hf import load_pretrained  # noqa: E402
from marft.rollout.engine import RolloutConfig, collect, model_sampler  # noqa: E402
from marft.tokenizers import CharTokenizer  # noqa: E402

_TASKS = flags.DEFINE_list("task", ["plan_path"], "Task names.")
_NUM = flags.DEFINE_integer("tasks", 32, "Tasks per batch.")
_K = flags.DEFINE_integer("k", 4, "Copies per task (tree sampling).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed rollouts (median reported).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 8, "Response budget per action.")
_WORKFLOWS = flags.DEFINE_list("workflow", ["mas"], "Workflow kinds.")
_TREE = flags.DEFINE_bool("tree", True, "Tree sampling (else independent copies).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "", "A Hugging Face directory of a tiny model.")


def bench(task_name: str, kind: str) -> dict:
  task = get_task(task_name)
  cfg = task.default_config()
  if _CHECKPOINT.value:
    model, model_config = load_pretrained(_CHECKPOINT.value)
  else:
    model_config = get_model_config("tiny")
    model = build_model(model_config)
  tokenizer = CharTokenizer(model_config.vocab_size)
  workflows = [task.make_workflow(task.generate_task(i, "train", cfg), kind, cfg,
                                  cfg["max_turns"]) for i in range(_NUM.value)]
  config = RolloutConfig(k=_K.value, tree=_TREE.value, max_new_tokens=_MAX_NEW.value)
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
  return dict(task=f"{task_name} ({kind})", seconds=seconds, episodes=_NUM.value * _K.value,
              rows=metrics["rollout/rows"], tokens=metrics["rollout/generated_tokens"],
              generate_share=generate / seconds,
              calls=metrics["rollout/generate_calls"] / metrics["rollout/iterations"])


def main(argv):
  del argv
  rows = [bench(name, kind) for name in _TASKS.value for kind in _WORKFLOWS.value]
  weights = _CHECKPOINT.value or "random weights"
  print(f"\n{jax.devices()[0].device_kind}, {os.cpu_count()} cores; tiny model ({weights}), "
        f"{'tree sampling' if _TREE.value else 'independent copies'}, "
        f"{_NUM.value} tasks x K={_K.value}\n")
  print("| task | rollout (s) | episodes/s | actions | generated tokens/s | generation share "
        "| env + Python share | generate calls / iteration |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['task']} | {r['seconds']:.2f} | {r['episodes'] / r['seconds']:.1f} | "
          f"{r['rows']:.0f} | {r['tokens'] / r['seconds']:.0f} | {r['generate_share']:.0%} | "
          f"{1 - r['generate_share']:.0%} | {r['calls']:.2f} |")


if __name__ == "__main__":
  app.run(main)
