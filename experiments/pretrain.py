"""Tiny base models: supervised pretraining on imperfect demonstrations of one task, every role.

The result is cached by config hash under `runs/base/` and exported as a Hugging Face
checkpoint (`hf/`), which RL configs load with `base_model_dir(pretrain_config)`.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from algorithms import sft
from envs.data.task_instances import load_instances
from envs.registry import get_task
from experiments import common
from marft import trainer
from marft.logging import config_hash
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.models.hf import save_pretrained
from marft.policies import policy_params, stack_policies
from marft.rollout.demonstrations import demonstrations, sft_rows
from marft.rollout.engine import RolloutConfig, collect, model_sampler
from marft.tokenizers import CharTokenizer
from marft.train_step import init_train_state, make_optimizer, make_train_step

BASE_ROOT = "runs/base"
# Named model shapes with the character vocabulary, so a task's base model can be pretrained here.
BASE_MODELS = ("tiny", "small")


def default_config(task: str, *, corruption_alphabet: str, seq_len: int = 48,
                   total_steps: int = 150, corruption: float = 0.3, heuristic: float = 0.0,
                   max_new_tokens: int = 8) -> ml_collections.ConfigDict:
  """The pretraining config shared by every task (`experiments/configs/pretrain_<task>.py`).

  A deliberately short schedule: the base model should start RL weak but not hopeless
  (10-50% sampled success), like a small base LLM.
  """
  c = common.base_config(total_steps=total_steps, eval_every=total_steps,
                         checkpoint_every=total_steps, max_to_keep=2)
  c.model = dict(name="tiny", dtype="float32", param_dtype="float32")
  c.optimizer = dict(lr=3e-3, warmup_steps=total_steps // 3, schedule="cosine",
                     weight_decay=0.01, b1=0.9, b2=0.95, eps=1e-8, max_grad_norm=1.0)
  c.task = dict(name=task, env={}, workflows=("single", "mas"), num_train_tasks=1500,
                corruption=corruption, heuristic=heuristic,
                corruption_alphabet=corruption_alphabet, batch_size=32,
                seq_len=seq_len, eval_tasks=64)
  c.rollout = dict(max_new_tokens=max_new_tokens)
  c.algo = dict(name="pretrain")
  return c


def config_for(task: str, model: str = "tiny") -> ml_collections.ConfigDict:
  """The default pretraining config of a task (`experiments/configs/pretrain_<task>.py`) for
  one of `BASE_MODELS`."""
  if model not in BASE_MODELS:
    raise common.ConfigError(f"model.name={model!r} has no pretraining recipe here (only "
                             f"{BASE_MODELS}): it needs model.path, a directory holding its "
                             "Hugging Face checkpoint and tokenizer.json")
  config = importlib.import_module(f"experiments.configs.pretrain_{task}").get_config()
  config.model.name = model
  return config


def base_model_dir(config: Any) -> str:
  """Where the base model of a pretraining config lives (its HF export is `<dir>/hf`).

  The task's resolved settings are part of the key, so a changed task default is a new model.
  """
  key = {**config.to_dict(), "resolved_task_config": task_config(config)}
  return os.path.join(BASE_ROOT, f"{config.task.name}-{config_hash(key)}")


def base_checkpoint(config: Any) -> str:
  """The Hugging Face export of a pretraining config's base model (`<base_model_dir>/hf`)."""
  return os.path.join(base_model_dir(config), "hf")


def task_config(config: Any) -> dict:
  task = get_task(config.task.name)
  return {**task.default_config(), **dict(config.task.get("env", {}))}


def make_workflows(config: Any, split: str, count: int, kind: str, seed_offset: int = 0) -> list:
  """`count` workflows: training instances from seeds `seed_offset + i`, or the fixed
  evaluation set of the test split (`envs.data.task_instances`)."""
  task = get_task(config.task.name)
  cfg = task_config(config)
  if split == "test":
    instances = load_instances(config.task.name, cfg, count)
  else:
    instances = [task.generate_task(seed_offset + i, split, cfg) for i in range(count)]
  return [task.make_workflow(instance, kind, cfg, cfg["max_turns"]) for instance in instances]


def evaluate(model: Any, tokenizer: Any, workflows_by_kind: dict[str, list], *,
             max_new_tokens: int, seed: int = 0) -> dict[str, float]:
  """Greedy and sampled (temperature 1) success of one model, per workflow kind."""
  metrics = {}
  for kind, workflows in workflows_by_kind.items():
    roles = workflows[0].roles
    for name, temperature in (("greedy", 0.0), ("sampled", 1.0)):
      config = RolloutConfig(k=1, tree=False, max_new_tokens=max_new_tokens,
                             temperature=temperature)
      rollout = collect(workflows, [model_sampler(model, tokenizer, config)], tokenizer,
                        jax.random.key(seed), mapping={r: 0 for r in roles}, config=config)
      metrics[f"eval/{kind}/{name}_success"] = rollout.metrics["rollout/success_rate"]
      metrics[f"eval/{kind}/{name}_invalid_rate"] = rollout.metrics["rollout/invalid_rate"]
  return metrics


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The pretraining job: batches drawn from a fixed demonstration pool; eval on test tasks."""
  model_config = get_model_config(config.model.name, dtype=config.model.dtype,
                                  param_dtype=config.model.param_dtype,
                                  remat=config.model.get("remat", "none"),
                                  logprob_chunk=config.model.get("logprob_chunk", 0))
  tokenizer = CharTokenizer(model_config.vocab_size)
  pool = []
  for kind in config.task.workflows:
    workflows = make_workflows(config, "train", config.task.num_train_tasks, kind,
                               seed_offset=config.seed * 10**6)
    pool += demonstrations(workflows, tokenizer, corruption=config.task.corruption,
                           seed=config.seed, alphabet=config.task.corruption_alphabet,
                           heuristic=config.task.get("heuristic", 0.0))
  rows = sft_rows(pool, config.task.seq_len, tokenizer.pad_id)
  if len(rows["tokens"]) == 0:
    raise ValueError(f"no demonstration fits task.seq_len={config.task.seq_len}")
  dropped = len(pool) - len(rows["tokens"])
  if dropped:
    logging.warning("%d of %d demonstrations are longer than task.seq_len=%d and are left out",
                    dropped, len(pool), config.task.seq_len)
  optimizer = make_optimizer(config.optimizer.to_dict() | {"total_steps": config.total_steps})
  graphdef, params, _ = stack_policies(build_model(model_config, seed=config.seed), 1)
  state = init_train_state(params, optimizer, config.seed, mesh=mesh)
  train_step = make_train_step(
      sft.loss, optimizer, graphdef, mesh=mesh, state=state,
      micro_batch_rows=common.micro_batch_rows(config, config.task.batch_size),
      denominators=sft.loss_denominators)

  def batch_fn(state):
    rng = np.random.default_rng([config.seed, int(state.step)])
    picked = rng.integers(0, len(rows["tokens"]), config.task.batch_size)
    return {k: v[picked][None] for k, v in rows.items()}, {
        "data/demonstrations": len(pool), "data/dropped_demonstrations": dropped}

  test_workflows = {kind: make_workflows(config, "test", config.task.eval_tasks, kind)
                    for kind in config.task.workflows}

  def eval_fn(state):
    model = nnx.merge(graphdef, policy_params(state.params, 0))
    metrics = evaluate(model, tokenizer, test_workflows,
                       max_new_tokens=config.rollout.max_new_tokens)
    metrics["eval/success_rate"] = metrics[f"eval/{config.task.workflows[-1]}/greedy_success"]
    return metrics

  return trainer.Job(state=state, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn,
                     progress_keys=("train/loss", "eval/success_rate"),
                     export=functools.partial(export_base_model, config))


def export_base_model(config: Any, state: Any, workdir: str) -> str:
  """Saves the trained policy as a Hugging Face checkpoint in `<workdir>/hf`."""
  model_config = get_model_config(config.model.name, dtype=config.model.dtype,
                                  param_dtype=config.model.param_dtype,
                                  remat=config.model.get("remat", "none"),
                                  logprob_chunk=config.model.get("logprob_chunk", 0))
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(model_config)))
  path = os.path.join(workdir, "hf")
  save_pretrained(nnx.merge(graphdef, policy_params(state.params, 0)), model_config, path)
  return path
