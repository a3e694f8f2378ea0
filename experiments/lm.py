"""Supervised language-model jobs: a model, a generated corpus, the SFT loss, greedy evaluation."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from algorithms import sft
from envs import arithmetic_corpus
from experiments import common
from marft import trainer
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.policies import policy_params, stack_policies
from marft.sampling import generate
from marft.tokenizers import CharTokenizer
from marft.train_step import init_train_state, make_optimizer, make_train_step


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The arithmetic SFT job: batches from `envs.arithmetic_corpus`, exact-match evaluation."""
  model_config = get_model_config(config.model.name, dtype=config.model.dtype,
                                  param_dtype=config.model.param_dtype,
                                  remat=config.model.get("remat", "none"),
                                  logprob_chunk=config.model.get("logprob_chunk", 0))
  tokenizer = CharTokenizer(model_config.vocab_size)
  optimizer = make_optimizer(config.optimizer.to_dict() | {"total_steps": config.total_steps})
  graphdef, params, _ = stack_policies(build_model(model_config, seed=config.seed), 1)
  state = init_train_state(params, optimizer, config.seed, mesh=mesh)
  train_step = make_train_step(
      sft.loss, optimizer, graphdef, mesh=mesh, state=state,
      micro_batch_rows=common.micro_batch_rows(config, config.task.batch_size),
      denominators=sft.loss_denominators)
  task = config.task

  def batch_fn(state):
    batch = arithmetic_corpus.train_batch(tokenizer, config.seed, int(state.step),
                                          task.batch_size, task.max_operand)
    return jax.tree.map(lambda x: x[None], batch), {}

  prompts, lengths, answers = arithmetic_corpus.eval_prompts(tokenizer, config.seed,
                                                             task.eval_size, task.max_operand)

  def eval_fn(state):
    model = nnx.merge(graphdef, policy_params(state.params, 0))
    out = generate(model, prompts, lengths, jax.random.key(0), max_new_tokens=5,
                   temperature=0.0, stop_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id,
                   mesh=mesh)
    tokens, counts = np.asarray(out.tokens), np.asarray(out.lengths)
    correct = [tokenizer.decode(t[:n]) == answer
               for t, n, answer in zip(tokens, counts, answers)]
    return {"eval/success_rate": float(np.mean(correct))}

  return trainer.Job(state=state, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn,
                     progress_keys=("train/loss", "eval/success_rate"))
