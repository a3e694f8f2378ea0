"""Evaluate a base model or checkpoint on a task's test split.

  python -m launch.evaluate --task=plan_path --workflow=mas --checkpoint=base
  python -m launch.evaluate --task=plan_path --workflow=mas \\
      --checkpoint=runs/x/hf_policy0,runs/x/hf_policy1 --mapping=tool=1,plan=0   # swapped roles
  python -m launch.evaluate --task=humaneval --workflow=mas --checkpoint=/ckpt/Qwen3-1.7B \\
      --num_tasks=164 --max_new_tokens=1024 --no_thinking             # chat prompts, HumanEval

`--checkpoint` is `base` (the task's base model of shape `--base_model`, from its default
pretraining config) or one Hugging Face directory per policy (comma-separated; an RL run writes
`hf_policy<p>` when it finishes). Writes `<out>.json` with `eval/success_rate`, per-role metrics and each instance's
success (0/1, in test-set order), and `<out>.md` with one markdown table row. Prompts are
`--prompt_style` (default: `chat` for a checkpoint with a `tokenizer.json`, else `compact`).
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import app, flags

from envs.data.task_instances import load_instances
from envs.registry import get_task
from experiments import pretrain
from marft.models.hf import load_pretrained
from marft.rollout.engine import RolloutConfig, collect, model_sampler
from marft.tokenizers import CharTokenizer, load_tokenizer

_TASK = flags.DEFINE_string("task", "plan_path", "Task name (envs.registry).")
_WORKFLOW = flags.DEFINE_enum("workflow", "mas", ["single", "mas"], "Workflow.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "base", "'base' or HF dirs, one per policy.")
_BASE_MODEL = flags.DEFINE_enum("base_model", "tiny", list(pretrain.BASE_MODELS),
                                "Shape of the base model that --checkpoint=base evaluates.")
_MAPPING = flags.DEFINE_string("mapping", "", "role=policy,... (default: every role -> 0).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy.")
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 128, "Test instances.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUT = flags.DEFINE_string("out", None, "Output path without extension.")
_JSONL = flags.DEFINE_string("jsonl", None, "Evaluate on this JSONL file's problems (math).")
_PROMPT_STYLE = flags.DEFINE_enum("prompt_style", None, ["compact", "chat"],
                                  "Prompt style (default: chat with a tokenizer.json).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 0,
                                       "Answer length (0: the base model's, or 1024 for chat).")
_NO_THINKING = flags.DEFINE_bool("no_thinking", False, "Switch Qwen3's thinking off.")


def parse_mapping(text: str, roles: tuple[str, ...]) -> dict[str, int]:
  mapping = {role: 0 for role in roles}
  for item in filter(None, text.split(",")):
    role, _, policy = item.partition("=")
    if role not in roles or not policy.isdigit():
      raise app.UsageError(f"--mapping item {item!r}: expected role=index with role in {roles}")
    mapping[role] = int(policy)
  return mapping


def main(argv: list[str]) -> None:
  del argv
  task = get_task(_TASK.value)
  cfg = task.default_config()
  if _CHECKPOINT.value == "base":
    pretrain_config = pretrain.config_for(_TASK.value, _BASE_MODEL.value)
    directories = [pretrain.base_checkpoint(pretrain_config)]
    max_new_tokens = pretrain_config.rollout.max_new_tokens
  else:
    directories = _CHECKPOINT.value.split(",")
    max_new_tokens = 1024
  for directory in directories:
    if not os.path.exists(os.path.join(directory, "config.json")):
      raise app.UsageError(f"{directory} is not a checkpoint (run launch.pretrain first for 'base')")
  has_tokenizer = os.path.exists(os.path.join(directories[0], "tokenizer.json"))
  style = _PROMPT_STYLE.value or ("chat" if has_tokenizer else "compact")
  if style not in task.PROMPT_STYLES:
    raise app.UsageError(f"--prompt_style={style}: task {_TASK.value} renders {task.PROMPT_STYLES}")
  if style == "chat" and not has_tokenizer:
    raise app.UsageError(f"--prompt_style=chat needs a tokenizer.json in {directories[0]}")
  models = [load_pretrained(d)[0] for d in directories]
  tokenizer = (load_tokenizer(directories[0], enable_thinking=not _NO_THINKING.value)
               if has_tokenizer else CharTokenizer(models[0].config.vocab_size))
  instances = load_instances(_TASK.value, cfg, _NUM_TASKS.value, jsonl=_JSONL.value or "")
  workflows = [task.make_workflow(instance, _WORKFLOW.value, cfg, cfg["max_turns"], style)
               for instance in instances]
  mapping = parse_mapping(_MAPPING.value, workflows[0].roles)
  config = RolloutConfig(k=1, tree=False, temperature=_TEMPERATURE.value,
                         max_new_tokens=_MAX_NEW_TOKENS.value or max_new_tokens)
  rollout = collect(workflows, [model_sampler(m, tokenizer, config) for m in models], tokenizer,
                    jax.random.key(_SEED.value), mapping=mapping, config=config)
  batch = rollout.batch
  result = {"task": _TASK.value, "workflow": _WORKFLOW.value, "checkpoint": _CHECKPOINT.value,
            "mapping": mapping, "temperature": _TEMPERATURE.value, "num_tasks": len(workflows),
            "eval/success_rate": rollout.metrics["rollout/success_rate"],
            "eval/invalid_rate": rollout.metrics["rollout/invalid_rate"],
            # Per test instance, in order: for paired comparisons of two checkpoints.
            "successes": [int(t["success"]) for t in rollout.transcripts]}
  for index, role in enumerate(workflows[0].roles):
    rows = np.asarray(batch.role_id) == index
    if rows.any():
      result[f"eval/reward/{role}"] = float(np.asarray(batch.reward)[rows].mean())
  out = _OUT.value or os.path.join("runs", "eval", f"{_TASK.value}-{_WORKFLOW.value}")
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out + ".json", "w") as f:
    json.dump(result, f, indent=2)
  row = (f"| {_TASK.value} | {_WORKFLOW.value} | {_CHECKPOINT.value} | "
         f"{'greedy' if _TEMPERATURE.value == 0 else f'T={_TEMPERATURE.value}'} | "
         f"{result['eval/success_rate']:.3f} |")
  with open(out + ".md", "w") as f:
    f.write(row + "\n")
  print(json.dumps(result, indent=2))
  print(row)


if __name__ == "__main__":
  app.run(main)
