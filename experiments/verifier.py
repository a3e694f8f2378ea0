"""The MAPoRL verifier job (Park et al. 2025, Sec. 4.1): an LM with a scalar head scoring an
answer's correctness, trained on the base model's own discussion answers.

Data: the base model plays `verifier.episodes` training discussions at temperature 1 (stand-in
scores in the prompts); every answer becomes an example, the task's scoring prompt followed by
the response, labelled by the exact checker; per question the expert's answer and a corrupted
copy of it are added (the reference prompts its model for wrong answers the same way), and the
set is class-balanced per question (`maporl.balance_by_question`). The model (`ScoredLM`: the
base model plus a `ValueHead`) is trained with `maporl.verifier_loss`; evaluation reports the
held-out AUC of correct vs wrong answers of the base model on test questions
(`eval/auc`), and the calibration means. The export (`<workdir>/hf_verifier`) is what the
MAPoRL job loads (`verifier.path`, or the recipe `experiments/configs/verifier_<task>.py`
trained on first use).
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from algorithms import maporl
from envs.data.task_instances import load_instances
from experiments import common, rl
from marft import sharding, trainer
from marft.logging import config_hash
from marft.models.heads import ScoredLM, make_scorer
from marft.models.hf import CheckpointError, load_scored_lm, save_scored_lm
from marft.policies import policy_params, stack_policies
from marft.rollout.demonstrations import corrupt
from marft.rollout.engine import RolloutConfig, collect, model_sampler
from marft.sampling import shape_bucket
from marft.train_step import init_train_state, make_optimizer, make_train_step

ROOT = "runs/verifier"
EXPORT = "hf_verifier"


def examples(config: Any, setup: rl.Setup, instances: Sequence[dict], seed: int, *,
             augment: bool) -> dict[str, np.ndarray]:
  """Scored examples from the base model's discussions of `instances`: `tokens` (scoring
  prompt + response + stop), `prompt_lengths`, `lengths` (total), `labels`, `questions`; with
  `augment`, each question's expert answer and a corrupted copy too."""
  vcfg = config.verifier
  kind = config.task.workflow
  workflows = [setup.make_workflow(t, kind, setup.task_cfg["max_turns"]) for t in instances]
  rollout_config = RolloutConfig(k=vcfg.samples, tree=False,
                                 max_new_tokens=config.rollout.max_new_tokens, temperature=1.0)
  sampler = model_sampler(setup.model, setup.tokenizer, rollout_config)
  rollout = collect(workflows, [sampler], setup.tokenizer, jax.random.key(seed),
                    mapping={r: 0 for r in workflows[0].roles}, config=rollout_config)
  b = jax.tree.map(np.asarray, rollout.batch)
  tok = setup.tokenizer
  prompts = [tok.chat(wf.scoring_prompt(wf.roles[0])) for wf in workflows]
  rows = []
  for i in range(b.num_rows):
    response = b.tokens[i][b.loss_mask[i] > 0].tolist()
    rows.append((int(b.task_id[i]), response, float(b.reward[i])))
  if augment:
    rng = np.random.default_rng(seed)
    for q, wf in enumerate(workflows):
      expert = wf.expert_response(wf.roles[0])
      wrong = corrupt(expert, "0123456789", rng)
      rows.append((q, tok.encode(expert) + [tok.eos_id], 1.0))
      if wrong != expert:
        label = float(workflows[q].checker.grade(wrong, wf.prompt_style)[1])
        rows.append((q, tok.encode(wrong) + [tok.eos_id], label))
  width = shape_bucket(max(len(prompts[q]) + len(r) for q, r, _ in rows))
  tokens = np.full((len(rows), width), tok.pad_id, np.int32)
  prompt_lengths, lengths = (np.zeros(len(rows), np.int32) for _ in range(2))
  for i, (q, response, _) in enumerate(rows):
    sequence = prompts[q] + response
    tokens[i, :len(sequence)] = sequence
    prompt_lengths[i], lengths[i] = len(prompts[q]), len(sequence)
  return {"tokens": tokens, "prompt_lengths": prompt_lengths, "lengths": lengths,
          "labels": np.asarray([r[2] for r in rows], np.float32),
          "questions": np.asarray([r[0] for r in rows], np.int32)}


def response_mask(prompt_lengths: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
  """1 on each row's response tokens (prompt end to total length)."""
  positions = np.arange(width)[None]
  return ((positions >= prompt_lengths[:, None]) & (positions < lengths[:, None])).astype(
      np.float32)


def loss(model: ScoredLM, batch: dict[str, jax.Array], cfg: Any = None,
         denominators: dict[str, jax.Array] | None = None
         ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`maporl.verifier_loss` of a batch (`tokens`, `mask`, `labels`)."""
  del cfg
  count = None if denominators is None else denominators["tokens"]
  return maporl.verifier_loss(model(batch["tokens"]), batch["labels"], batch["mask"], count)


def loss_denominators(batch: dict[str, jax.Array], cfg: Any = None) -> dict[str, jax.Array]:
  del cfg
  return {"tokens": jnp.maximum(batch["mask"].sum(), 1.0)}


def scores_of(model: ScoredLM, data: dict[str, np.ndarray], pad_id: int) -> np.ndarray:
  """The verifier's score of every example of `data`."""
  scorer = make_scorer(model, pad_id)
  sequences = [row[:n].tolist() for row, n in zip(data["tokens"], data["lengths"])]
  return np.concatenate([scorer(sequences[i:i + 256]) for i in range(0, len(sequences), 256)])


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The verifier job of `config` (`experiments/configs/verifier_math.py`)."""
  vcfg = config.verifier
  if vcfg.samples < 1 or vcfg.train_questions < 1 or vcfg.eval_questions < 1:
    raise common.ConfigError("verifier.samples, train_questions and eval_questions must be >= 1")
  setup = rl.setup(config)
  if not callable(getattr(setup.model, "hidden_states", None)):
    raise common.ConfigError(f"{type(setup.model).__name__} exposes no hidden states")
  train_tasks = [setup.task.generate_task(config.seed * 10**6 + i, "train", setup.task_cfg)
                 for i in range(vcfg.train_questions)]
  data = examples(config, setup, train_tasks, config.seed, augment=True)
  keep = maporl.balance_by_question(data["questions"], data["labels"],
                                    np.random.default_rng(config.seed), vcfg.per_class)
  if not len(keep):
    raise common.ConfigError("no question has both a correct and a wrong answer to balance")
  train = {k: v[keep] for k, v in data.items()}
  train_mask = response_mask(train["prompt_lengths"], train["lengths"], train["tokens"].shape[1])
  held_out = examples(config, setup, load_instances(config.task.name, setup.task_cfg,
                                                    vcfg.eval_questions),
                      config.seed + 1, augment=False)

  stats = {"data/examples": float(len(data["labels"])), "data/balanced": float(len(keep)),
           "data/correct_fraction_before": float(data["labels"].mean()),
           "data/correct_fraction": float(train["labels"].mean())}

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([config.seed, step])
    picked = rng.integers(0, len(train["labels"]), vcfg.batch_size)
    return {"tokens": train["tokens"][picked], "mask": train_mask[picked],
            "labels": train["labels"][picked]}

  def evaluate(model: ScoredLM) -> dict[str, float]:
    scores = scores_of(model, held_out, setup.tokenizer.pad_id)
    labels = held_out["labels"] > 0
    return {"eval/auc": maporl.roc_auc(scores, labels),
            "eval/accuracy": float(((scores > 0.5) == labels).mean()),
            "eval/score_correct": float(scores[labels].mean()) if labels.any() else 0.0,
            "eval/score_wrong": float(scores[~labels].mean()) if (~labels).any() else 0.0,
            "eval/correct_fraction": float(labels.mean()),
            "eval/examples": float(len(labels))}

  return scored_lm_job(config, mesh, setup, hidden_dims=vcfg.hidden_dims, loss=loss,
                       denominators=loss_denominators, batch=batch_fn, stats=stats,
                       evaluate=evaluate, export=EXPORT)


def scored_lm_job(config: Any, mesh: jax.sharding.Mesh, setup: rl.Setup, *,
                  hidden_dims: Sequence[int], loss: Callable[..., Any],
                  batch: Callable[[int], dict[str, np.ndarray]], stats: dict[str, float],
                  evaluate: Callable[[ScoredLM], dict[str, float]], export: str,
                  denominators: Callable[..., Any] | None = None) -> trainer.Job:
  """The job that trains a `ScoredLM` (the run's base model plus a `ValueHead` of
  `hidden_dims`; a verifier, an ORM or a PRM) with `loss` on `batch(step)` (logging `stats`),
  evaluates it with `evaluate(model)` and exports it to `<workdir>/<export>`."""
  model = ScoredLM(setup.model, hidden_dims, rngs=nnx.Rngs(config.seed))
  optimizer = make_optimizer(config.optimizer.to_dict() | {"total_steps": config.total_steps})
  graphdef, params, _ = stack_policies(model, 1)
  state = init_train_state(params, optimizer, config.seed, mesh=mesh)
  train_step = make_train_step(loss, optimizer, graphdef, mesh=mesh, state=state,
                               denominators=denominators)

  def batch_fn(state):
    return {k: v[None] for k, v in batch(int(state.step)).items()}, stats

  def eval_fn(state):
    return evaluate(nnx.merge(graphdef, policy_params(state.params, 0)))

  def export_fn(state, workdir):
    save_scored_lm(nnx.merge(graphdef, policy_params(state.params, 0)), setup.model_config,
                   os.path.join(workdir, export))

  return trainer.Job(state=state, train_step=train_step, batch_fn=batch_fn, eval_fn=eval_fn,
                     export=export_fn, progress_keys=("train/loss", "eval/auc"),
                     provenance={"base_model": os.path.abspath(rl.base_model_path(config)),
                                 "task_settings": setup.task_cfg})


def recipe(task: str, model: str) -> ml_collections.ConfigDict:
  """The verifier config of a task (`experiments/configs/verifier_<task>.py`) for a model shape."""
  config = importlib.import_module(f"experiments.configs.verifier_{task}").get_config()
  config.model.name = model
  return config


def run_dir(config: Any) -> str:
  return os.path.join(ROOT, f"{config.task.name}-{config_hash(config.to_dict())}")


def path_of(config: Any) -> str:
  """Where a MAPoRL config's verifier is read from: `verifier.path`, else its recipe's export."""
  path = config.verifier.get("path", "")
  if path:
    return path
  return os.path.join(run_dir(recipe(config.task.name, config.model.name)), EXPORT)


def load(config: Any, vocab_size: int) -> ScoredLM:
  """The verifier a MAPoRL config names (`verifier.path`: a `save_scored_lm` directory), else
  its recipe's (trained and cached on first use); one ConfigError when it cannot be read or its
  vocabulary is not the policies'."""
  path = path_of(config)
  if not config.verifier.get("path", ""):
    vconfig = recipe(config.task.name, config.model.name)
    directory = run_dir(vconfig)
    if not os.path.exists(os.path.join(path, "config.json")):
      print(f"no verifier for {config.task.name} yet: training it in {directory}", flush=True)
      trainer.run(vconfig, directory, build(vconfig, sharding.make_mesh(**vconfig.mesh)))
  try:
    model, model_config = load_scored_lm(path, dtype=config.model.dtype)
  except CheckpointError as e:
    raise common.ConfigError(f"verifier.path={path!r}: {e}") from e
  if model_config.vocab_size != vocab_size:
    raise common.ConfigError(
        f"verifier.path={path!r} has a vocabulary of {model_config.vocab_size} tokens, the "
        f"policies {vocab_size}: a verifier must read the policies' tokens (train it from the "
        "same base model)")
  return model
