"""The QMIX job's seeds in sequence (`algo.seeds_in="sequence"`, `lax.map`) against each seed
trained on its own."""
import jax
import numpy as np
import pytest

from experiments import common
from experiments import qmix as qmix_job
from algorithms import qmix
from tests.algorithms.test_qmix import _job_config


def _train_steps(config, steps):
  job = qmix_job.build(config, None)
  state = job.state
  for _ in range(steps):
    state, _ = job.train_step(state, None)
  return job, state


def test_seeds_in_sequence_equal_each_seed_trained_alone():
  """Two trainer steps of 5 updates, 2 seeds run by lax.map: each seed's parameters and
  greedy return are those of `make_train` for 10 updates from key(seed + i), one seed at a
  time; the compiled step loops over the seeds (one more while loop than the vmapped one)."""
  config = _job_config(2, seeds_in="sequence")
  job, state = _train_steps(config, 2)
  train = jax.jit(qmix.make_train(qmix_job.algo_config(config), qmix_job.make_env(config), 10))
  for i in range(2):
    alone, _ = train(jax.random.key(config.seed + i))
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(a, np.asarray(b)[i], rtol=1e-5, atol=1e-6)
  whiles = []
  for seeds_in in ("sequence", "vmap"):
    fns = qmix_job.compiled((("name", "two_step"),), qmix_job.algo_config(config),
                            int(config.algo.updates_per_step), seeds_in)
    whiles.append(fns.train_step.lower(state).as_text().count("stablehlo.while"))
  assert whiles[0] == whiles[1] + 1
  assert job.eval_fn(state).keys() == {"eval/greedy_return", "eval/greedy_return/s0",
                                       "eval/greedy_return/s1"}


def test_unknown_seeds_in_is_a_config_error():
  config = _job_config(1, seeds_in="pmap")
  with pytest.raises(common.ConfigError, match="seeds_in"):
    qmix_job.build(config, None)
