"""The MASPRM job (MASPRM, its method section): a process reward model trained on the values
of multi-agent MCTS over the base model's own transcripts.

Data: for `prm.questions` training questions, `search.run_mcts` without a PRM (the data
search): every expansion samples `prm.children` joint actions of the next agent (temperature
`prm.temperature`, top-p `prm.top_p`), selection is UCT with `prm.c`, a terminal is graded +1 /
-1 by the task's exact checker at creation and backed up along its path, `prm.simulations`
graded terminals per question, early stop after `prm.patience` simulations without a change of
the root's most-visited action. Trees whose root value lies in [`prm.keep_low`,
`prm.keep_high`] are kept (informative), and every visited node below their root becomes an
example: the step that reached it (the agent's prompt and response) with the node's mean value
as target. The PRM (`ScoredLM`: the base model and a `ValueHead`) trains with
`masprm.masprm_loss` (MSE in logit space, value `tanh(z)` at the step's last token).
Evaluation: on test questions, `prm.eval_samples` one-pass episodes each; the PRM's value of
the final step separates correct from wrong (`eval/auc`), and its mean on each. The export
(`<workdir>/hf_prm`) is what the MASPRM table loads.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from algorithms import maporl
from algorithms.prm import masprm, search
from envs.data.task_instances import load_instances
from experiments import common, rl, verifier
from marft import trainer
from marft.models.heads import ScoredLM, make_scorer
from marft.rollout.engine import RolloutConfig, model_sampler
from marft.sampling import shape_bucket

EXPORT = "hf_prm"


def tree_examples(found: search.SearchTrees, *, low: float, high: float
                  ) -> tuple[list[list[int]], np.ndarray, dict[str, float]]:
  """Step token lists and their targets (node mean values) from the informative trees of a
  data search, and statistics of the trees."""
  trees = jax.tree.map(np.asarray, found.trees)
  steps, targets, kept = [], [], 0
  for t in range(len(found.states)):
    targets_t, visited = masprm.value_targets(trees.value_sum[t], trees.visits[t])
    targets_t, visited = np.asarray(targets_t), np.asarray(visited)
    if not masprm.informative_tree(float(targets_t[0]), low=low, high=high):
      continue
    kept += 1
    for node in range(1, int(trees.num_nodes[t])):
      if visited[node] and found.steps[t][node] is not None:
        for tokens in found.steps[t][node]:
          steps.append(tokens)
          targets.append(float(targets_t[node]))
  stats = {"data/trees": float(len(found.states)), "data/trees_kept": float(kept),
           "data/nodes": float(trees.num_nodes.sum()), "data/examples": float(len(steps)),
           "data/root_value": float(np.mean(trees.value_sum[:, 0] /
                                            np.maximum(trees.visits[:, 0], 1)))}
  return steps, np.asarray(targets, np.float32), stats


def step_rows(steps: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded step tokens and a mask on each step's last token (where the PRM reads)."""
  width = shape_bucket(max(len(s) for s in steps))
  tokens = np.full((len(steps), width), pad_id, np.int32)
  mask = np.zeros((len(steps), width), np.float32)
  for i, s in enumerate(steps):
    tokens[i, :len(s)] = s
    mask[i, len(s) - 1] = 1.0
  return tokens, mask


def loss(model: ScoredLM, batch: dict[str, jax.Array], cfg: Any = None,
         denominators: dict[str, jax.Array] | None = None
         ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`masprm.masprm_loss` of a batch (`tokens`, `mask` on the read positions, `targets`)."""
  del cfg, denominators
  z = model(batch["tokens"])
  value = jnp.sum(masprm.prm_value(z) * batch["mask"], axis=1)
  return masprm.masprm_loss(z, batch["targets"][:, None] * batch["mask"], batch["mask"]), {
      "value_error": jnp.mean(jnp.abs(value - batch["targets"]))}


def data_search(config: Any, setup: rl.Setup, instances: list[dict], seed: int
                ) -> search.SearchTrees:
  """The MCTS data search of `config.prm` over `instances` (one tree each)."""
  pcfg = config.prm
  rollout_config = RolloutConfig(k=1, tree=False, max_new_tokens=config.rollout.max_new_tokens,
                                 temperature=pcfg.temperature, top_p=pcfg.top_p)
  sampler = model_sampler(setup.model, setup.tokenizer, rollout_config)
  workflows = [setup.make_workflow(t, config.task.workflow, setup.task_cfg["max_turns"])
               for t in instances]
  return search.run_mcts(workflows, sampler, setup.tokenizer, jax.random.key(seed),
                         children=pcfg.children, simulations=pcfg.simulations, c=pcfg.c,
                         rule="uct", patience=pcfg.patience)


def final_steps(config: Any, setup: rl.Setup) -> tuple[list[list[int]], np.ndarray]:
  """The evaluation data of a PRM job: `prm.eval_samples` episodes of `setup.model` on each of
  `prm.eval_questions` test questions (temperature `prm.temperature`, top-p `prm.top_p`); the
  step tokens of each episode's last action and whether the episode succeeded."""
  pcfg, tok = config.prm, setup.tokenizer
  test = load_instances(config.task.name, setup.task_cfg, pcfg.eval_questions)
  eval_config = RolloutConfig(k=1, tree=False, max_new_tokens=config.rollout.max_new_tokens,
                              temperature=pcfg.temperature, top_p=pcfg.top_p)
  eval_sampler = model_sampler(setup.model, tok, eval_config)
  episodes = search.sample_episodes(
      [setup.make_workflow(t, config.task.workflow, setup.task_cfg["max_turns"]) for t in test],
      pcfg.eval_samples, eval_sampler, tok, jax.random.key(config.seed + 1), search.Spend(),
      [[0, 0] for _ in test])
  steps = [c.steps[-1] for copies in episodes for _, c in copies]
  return steps, np.asarray([wf.success for copies in episodes for wf, _ in copies])


def separation(scorer: search.StepScorer, steps: list[list[int]], labels: np.ndarray
               ) -> dict[str, float]:
  """How well a PRM's value of an episode's final step separates correct from wrong
  episodes (`final_steps`): `eval/auc`, the mean value on each, the success rate."""
  values = np.concatenate([scorer(steps[i:i + 256]) for i in range(0, len(steps), 256)])
  return {"eval/auc": maporl.roc_auc(values, labels),
          "eval/value_correct": float(values[labels].mean()) if labels.any() else 0.0,
          "eval/value_wrong": float(values[~labels].mean()) if (~labels).any() else 0.0,
          "eval/success_rate": float(labels.mean()),
          "eval/examples": float(len(labels))}


def build(config: Any, mesh: jax.sharding.Mesh) -> trainer.Job:
  """The MASPRM job of `config` (`experiments/configs/masprm.py`)."""
  pcfg = config.prm
  for name in ("questions", "children", "simulations", "eval_questions", "eval_samples"):
    if pcfg[name] < 1:
      raise common.ConfigError(f"prm.{name}={pcfg[name]} must be >= 1")
  setup = rl.setup(config)
  if not callable(getattr(setup.model, "hidden_states", None)):
    raise common.ConfigError(f"{type(setup.model).__name__} exposes no hidden states")
  instances = [setup.task.generate_task(config.seed * 10**6 + i, "train", setup.task_cfg)
               for i in range(pcfg.questions)]
  found = data_search(config, setup, instances, config.seed)
  steps, targets, stats = tree_examples(found, low=pcfg.keep_low, high=pcfg.keep_high)
  if not steps:
    raise common.ConfigError(
        f"no MCTS tree has a root value in [{pcfg.keep_low}, {pcfg.keep_high}]: the base model "
        "solves every question or none; change the task's difficulty or prm.questions")
  tokens, mask = step_rows(steps, setup.tokenizer.pad_id)
  stats["data/target_mean"] = float(targets.mean())

  tok = setup.tokenizer
  eval_steps, eval_labels = final_steps(config, setup)

  def batch(step: int) -> dict[str, np.ndarray]:
    picked = np.random.default_rng([config.seed, step]).integers(0, len(targets),
                                                                 pcfg.batch_size)
    return {"tokens": tokens[picked], "mask": mask[picked], "targets": targets[picked]}

  return verifier.scored_lm_job(
      config, mesh, setup, hidden_dims=pcfg.hidden_dims, loss=loss, batch=batch, stats=stats,
      evaluate=lambda model: separation(
          make_scorer(model, tok.pad_id, link=masprm.prm_value), eval_steps,
          eval_labels),
      export=EXPORT)
