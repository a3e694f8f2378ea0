"""The MASPRM job: examples from MCTS trees (the informative-root filter, node means as
targets, unvisited nodes left out), the loss against numpy, and the job end to end on a tiny
random model (a clear error when no tree is informative)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from algorithms.prm import mcts, search
from experiments import common, prm
from marft import sharding, trainer
from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.models.heads import ScoredLM
from marft.models.hf import load_scored_lm, save_pretrained


def _tree(visits, value_sum):
  tree = mcts.init_tree(len(visits), 2)
  return tree.replace(visits=jnp.asarray(visits, jnp.int32),
                      value_sum=jnp.asarray(value_sum, jnp.float32),
                      num_nodes=jnp.asarray(len(visits), jnp.int32))


def test_tree_examples_keep_informative_trees_and_target_node_means():
  # Tree 0: root 4 visits, value -1 (mean -0.25: kept); node 1: 3 visits, sum 1 (1/3);
  # node 2: unvisited (no example). Tree 1: root mean -3/3 = -1 (dropped).
  trees = [_tree([4, 3, 0], [-1.0, 1.0, 0.0]), _tree([3, 2, 1], [-3.0, -2.0, -1.0])]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *trees)
  steps = [[None, [[5, 6, 7]], [[8]]], [None, [[9]], [[10]]]]
  found = search.SearchTrees(stacked, [[None] * 3, [None] * 3], steps)
  tokens, targets, stats = prm.tree_examples(found, low=-0.7, high=0.7)
  assert tokens == [[5, 6, 7]]
  np.testing.assert_allclose(targets, [1 / 3], rtol=1e-6)
  assert stats["data/trees"] == 2 and stats["data/trees_kept"] == 1
  np.testing.assert_allclose(stats["data/root_value"], (-0.25 - 1.0) / 2)


def test_step_rows_read_each_step_at_its_last_token():
  tokens, mask = prm.step_rows([[5, 6, 7], [8]], pad_id=0)
  assert tokens.shape == mask.shape and tokens.shape[1] >= 3
  np.testing.assert_array_equal(tokens[0, :3], [5, 6, 7])
  np.testing.assert_array_equal(np.argwhere(mask), [[0, 2], [1, 0]])


def test_loss_is_the_logit_space_mse_at_the_read_positions():
  config = get_model_config("tiny", num_layers=1)
  model = ScoredLM(build_model(config), rngs=nnx.Rngs(0))
  # A non-zero head, so z differs across positions.
  model.head.out.kernel[...] = jax.random.normal(jax.random.key(1),
                                                 model.head.out.kernel.shape)
  tokens, mask = prm.step_rows([[5, 6, 7, 9], [8, 11]], pad_id=0)
  targets = np.asarray([0.5, -1.0], np.float32)
  loss, aux = prm.loss(model, {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask),
                               "targets": jnp.asarray(targets)})
  z = np.asarray(model(jnp.asarray(tokens)))
  read = np.asarray([z[0, 3], z[1, 1]], np.float64)
  want = np.mean((read - np.arctanh(np.clip(targets, -0.95, 0.95)))**2)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(aux["value_error"]), np.mean(np.abs(np.tanh(read) - targets)),
                             rtol=1e-5)


def _config(tmp_path):
  from experiments.configs import masprm
  model_config = get_model_config("tiny", num_layers=1)
  save_pretrained(build_model(model_config), model_config, str(tmp_path / "hf"))
  config = masprm.get_config("tiny")
  config.model.path, config.model.tokenizer = str(tmp_path / "hf"), "char"
  config.prm.update(questions=3, simulations=4, eval_questions=4, eval_samples=1, batch_size=4)
  config.total_steps, config.eval_every, config.checkpoint_every = 2, 2, 2
  return config


def test_job_without_an_informative_tree_says_so(tmp_path):
  config = _config(tmp_path)  # a random model never answers right: every root value is -1
  with pytest.raises(common.ConfigError, match="no MCTS tree has a root value"):
    prm.build(config, sharding.make_mesh(**config.mesh))


def test_job_trains_and_exports_the_prm(tmp_path):
  config = _config(tmp_path)
  config.prm.keep_low = -1.0
  workdir = str(tmp_path / "run")
  trainer.run(config, workdir, prm.build(config, sharding.make_mesh(**config.mesh)))
  with open(f"{workdir}/metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  data = next(r for r in records if "data/examples" in r)
  # Each of the 3 trees backs up >= 4 graded terminals; every visited node below a root is an
  # example (one step each: the trio has one role per stage).
  assert data["data/trees_kept"] == 3 and data["data/examples"] >= 3 * 3
  assert data["data/root_value"] == -1.0 and np.isfinite(records[-1]["eval/value_wrong"])
  model, _ = load_scored_lm(f"{workdir}/{prm.EXPORT}")
  assert isinstance(model, ScoredLM)
