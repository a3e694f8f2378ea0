"""The QMIX-on-JaxMARL table's statistics, configs and the JaxMARL peer runner."""
import os

import numpy as np
import pytest
import scipy.stats

from experiments import jaxmarl_peer
from experiments import qmix as qmix_job
from experiments.tables import qmix_jaxmarl


@pytest.mark.parametrize("a,b", [([1.0, 2.0, 3.0, 4.0], [2.5, 3.5, 4.5, 9.0]),
                                 ([-51.3, -52.8, -52.4, -58.7], [-49.6, -75.6, -51.3, -64.3]),
                                 ([0.0, 0.0, 1.0, 1.0, 2.0], [1.0, 1.0, 0.0, 3.0, 5.0])])
def test_permutation_p_is_scipys_exact_two_sided_test(a, b):
  """Equal group sizes (the table's seeds), where |difference| >= observed is scipy's
  two-sided rule too (with unequal sizes scipy doubles the smaller tail instead)."""
  expected = scipy.stats.permutation_test(
      (a, b), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
      alternative="two-sided", n_resamples=np.inf).pvalue
  assert qmix_jaxmarl.permutation_p(a, b) == pytest.approx(expected, abs=1e-12)
  assert qmix_jaxmarl.permutation_p([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)


def test_curves_read_env_steps_from_the_run(tmp_path):
  import json
  rows = [{"step": 0, "eval/greedy_return": -3.0, "eval/greedy_return/s0": -2.0,
           "eval/greedy_return/s1": -4.0},
          {"step": 1, "train/t_env": 260.0},
          {"step": 2, "train/t_env": 540.0},
          {"step": 2, "eval/greedy_return": -1.0, "eval/greedy_return/s0": -1.5,
           "eval/greedy_return/s1": -0.5}]
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write("\n".join(json.dumps(r) for r in rows))
  steps, returns = qmix_jaxmarl.curves(str(tmp_path), 2)
  np.testing.assert_array_equal(steps, [0.0, 540.0])
  np.testing.assert_array_equal(returns, [[-2.0, -1.5], [-4.0, -0.5]])


@pytest.mark.parametrize("env", sorted(qmix_jaxmarl.ENVS))
def test_benchmark_configs_validate(env):
  pytest.importorskip("jaxmarl")
  config = qmix_jaxmarl.run_config(env, "vdn", 4)
  cfg = qmix_job.algo_config(config)
  assert cfg.mixer == "vdn" and config.algo.num_seeds == 4
  if env == "mpe":  # JaxMARL decays over its NUM_UPDATES: the run's 24 x 200 updates
    assert cfg.lr_decay_updates == 4800 and cfg.epsilon_anneal_steps == 480 * 8 * 26
  if env == "smax":  # JaxMARL at TOTAL_TIMESTEPS 1e6: 1e6 // 128 // 16 = 488 updates
    updates = 1_000_000 // 128 // 16
    assert config.total_steps * config.algo.updates_per_step == updates
    assert (cfg.num_envs, cfg.fragment_steps, cfg.epochs) == (16, 128, 8)
    assert cfg.epsilon_anneal_steps == int(0.1 * updates * 16 * 128)  # EPS_DECAY 0.1
    peer = qmix_jaxmarl.ENVS[env].recipe_overrides  # both sides at the same widths
    assert (cfg.hidden_dim, cfg.mixer_embed_dim, cfg.hypernet_hidden) == (
        peer["HIDDEN_SIZE"], peer["MIXER_EMBEDDING_DIM"], peer["MIXER_HYPERNET_HIDDEN_DIM"])
  assert qmix_job.make_env(config).max_steps == {"mpe": 26, "smax": 101}[env]


def _fake_checkout(root):
  path = os.path.join(root, "baselines", "QLearning")
  os.makedirs(os.path.join(path, "config", "alg"))
  open(os.path.join(path, "qmix_rnn.py"), "w").close()
  with open(os.path.join(path, "config", "config.yaml"), "w") as f:
    f.write('"SEED": 0\n"NUM_SEEDS": 1\n"WANDB_MODE": "disabled"\n"alg": {}\n')
  with open(os.path.join(path, "config", "alg", "ql_rnn_mpe.yaml"), "w") as f:
    f.write('"TOTAL_TIMESTEPS": 1e7\n"NUM_ENVS": 8\n"NUM_STEPS": 26\n"LR": 0.005\n')
  return path


def test_peer_recipe_merges_the_checkout_configs(tmp_path):
  _fake_checkout(str(tmp_path))
  published = jaxmarl_peer.recipe(str(tmp_path), "ql_rnn_mpe")
  assert published["TOTAL_TIMESTEPS"] == 10_000_000  # YAML 1.1 reads 1e7 as text
  assert published["LR"] == 0.005 and "alg" not in published
  run = jaxmarl_peer.recipe_for_updates(str(tmp_path), "ql_rnn_mpe", 4800, LR=0.001)
  assert run["TOTAL_TIMESTEPS"] == 4800 * 8 * 26 == 998_400
  assert run["LR"] == 0.001 and run["NUM_SEEDS"] == 1 and run["WANDB_MODE"] == "disabled"
  with pytest.raises(FileNotFoundError, match="not a JaxMARL checkout"):
    jaxmarl_peer.recipe(str(tmp_path / "elsewhere"), "ql_rnn_mpe")


def test_reproduce_writes_one_table_per_env_with_the_peer_beside(tmp_path, monkeypatch):
  """A two-step stand-in for a benchmark env, 2 seeds, and a JaxMARL JSON left in runs_dir:
  the env's own md/csv/png, every seed's final greedy return as its run logged it, and the
  p-value of scipy's exact permutation test against the peer's seeds."""
  import json
  import scipy.stats
  from experiments.configs import qmix_two_step
  from marft.logging import read_metrics

  def config():
    c = qmix_two_step.get_config()
    c.total_steps, c.eval_every, c.checkpoint_every = 2, 1, 2
    c.algo.updates_per_step, c.algo.agent, c.algo.hidden_dim = 20, "ff", 8
    return c

  monkeypatch.setitem(qmix_jaxmarl.ENVS, "toy", qmix_jaxmarl.Benchmark(
      config, "toy.py", "ql_toy", {}, "nothing published"))
  runs = tmp_path / "runs"
  runs.mkdir()
  peer_finals = [5.0, 7.0]
  with open(runs / "jaxmarl_qmix-abc-s2.json", "w") as f:
    json.dump({"config": {"ENV_NAME": "two_step"}, "final_returns": peer_finals,
               "curves": [[(0, 0.0), (80, v)] for v in peer_finals]}, f)
  paths = qmix_jaxmarl.reproduce(scale="tiny", seeds=2, results_dir=str(tmp_path / "res"),
                                 runs_dir=str(runs), tasks=["toy"])
  assert sorted(os.path.basename(p) for p in paths) == [
      "qmix_jaxmarl_toy.csv", "qmix_jaxmarl_toy.md", "qmix_jaxmarl_toy.png"]
  md = open(tmp_path / "res" / "qmix_jaxmarl_toy.md").read()
  for mixer in ("qmix", "vdn"):
    workdir = qmix_jaxmarl.run_dir(str(runs), qmix_jaxmarl.run_config("toy", mixer, 2))
    last = [r for r in read_metrics(workdir) if "eval/greedy_return" in r][-1]
    finals = [last["eval/greedy_return/s0"], last["eval/greedy_return/s1"]]
    p = scipy.stats.permutation_test(
        (finals, peer_finals), lambda x, y: np.mean(x) - np.mean(y),
        permutation_type="independent", n_resamples=np.inf).pvalue
    row = next(line for line in md.splitlines() if line.startswith(f"| marft {mixer.upper()} |"))
    assert row.split(" | ")[2] == ", ".join(f"{v:.2f}" for v in finals)
    assert float(row.split(" | ")[3].rstrip(" |")) == pytest.approx(p, abs=1e-3)
  assert "| JaxMARL QMIX | 6.00 ± 1.00 | 5.00, 7.00 |" in md
  assert "40 updates = 640 env steps" in md  # 2 x 20 updates of 8 two-step episodes
