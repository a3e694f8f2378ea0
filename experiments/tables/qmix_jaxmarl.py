"""QMIX and VDN on JaxMARL's benchmarks beside JaxMARL's own QMIX, at the same env-step budget.

  python -m launch.reproduce --table=qmix_jaxmarl [--seeds=4] [--jaxmarl_root=PATH] \
      [--tasks=mpe,smax]

For each benchmark env (`--tasks`, default `mpe`) runs its config (`ENVS`: JaxMARL's
published recipe in this codebase's terms) for mixer {qmix, vdn}, `seeds` seeds at once
(`algo.num_seeds`, vmapped), each in `<runs_dir>/qmix_jaxmarl-<config hash>` (finished runs
reused, interrupted ones resumed). With `--jaxmarl_root`, a JaxMARL checkout, JaxMARL's
`baselines/QLearning/qmix_rnn.py` is trained on the same env with the same recipe and budget
(`experiments.jaxmarl_peer`; kept in `runs_dir` as JSON); without it, a JSON left there by an
earlier run is used if there is one.

Each env gets its own `qmix_jaxmarl_<env>.{md,csv,png}`: final greedy return (mean ± std over
seeds) and a two-sided exact permutation test of marft's QMIX against JaxMARL's (all splits of
the pooled seeds; with 4 + 4 seeds the smallest possible p is 2/70 = 0.029); the figure:
greedy return against env steps.
"""
from __future__ import annotations

import glob
import itertools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from experiments import jaxmarl_peer
from experiments import qmix as qmix_job
from experiments.tables import figure, write_md_csv
from experiments.configs import qmix_mpe, qmix_smax
from marft.logging import config_hash, read_metrics

NAME = "qmix_jaxmarl"
MIXERS = ("qmix", "vdn")
class Benchmark(NamedTuple):
  config: Callable[[], Any]  # its marft config
  config_path: str  # where that config is, as `launch.train --config` takes it
  recipe: str  # JaxMARL's recipe (baselines/QLearning/config/alg/<recipe>.yaml)
  recipe_overrides: dict[str, Any]  # what makes JaxMARL's run the same env as ours
  published: str  # what JaxMARL publishes for it


ENVS = {
    "mpe": Benchmark(qmix_mpe.get_config, "experiments/configs/qmix_mpe.py", "ql_rnn_mpe", {},
                     "JaxMARL (Rutherford et al. 2024) shows QMIX on MPE_simple_spread_v3 as a "
                     "curve over 1e7 env steps, no tabulated number"),
    # The published SMAX recipe at 64-unit widths on both sides (`qmix_smax.py:cpu`): at its
    # own 512 units 1e6 env steps take about 75 minutes a seed on 2 CPU cores.
    "smax": Benchmark(lambda: qmix_smax.get_config("cpu"),
                      "experiments/configs/qmix_smax.py:cpu", "ql_rnn_smax",
                      {"MAP_NAME": "3m", "HIDDEN_SIZE": qmix_smax.CPU_WIDTHS["hidden_dim"],
                       "MIXER_EMBEDDING_DIM": qmix_smax.CPU_WIDTHS["mixer_embed_dim"],
                       "MIXER_HYPERNET_HIDDEN_DIM": qmix_smax.CPU_WIDTHS["hypernet_hidden"]},
                      "JaxMARL shows QMIX on SMAX maps as curves over 1e7 env steps at its "
                      "512-unit widths; none at this budget or width"),
}


# Which of the recipe's options matter: QMIX with one of them undone at a time.
ABLATIONS = {
    "mpe": (("episodes cut at 25 transitions (the adapter's old horizon)", {"env.max_steps": 25}),
            ("Adam in place of RAdam", {"algo.optimizer": "adam"}),
            ("constant lr (no linear decay)", {"algo.lr_schedule": "constant"}),
            ("PyTorch-uniform init in place of orthogonal", {"algo.init": "uniform"}),
            ("TD error on the terminal transition too", {"algo.train_terminal": True})),
}


def run_config(env: str, mixer: str, seeds: int, overrides: dict[str, Any] | None = None
               ) -> Any:
  config = ENVS[env].config()
  config.algo.mixer = mixer
  config.algo.num_seeds = seeds
  for dotted, value in (overrides or {}).items():
    group, key = dotted.split(".")
    config[group][key] = value
  return config


def env_id(config: Any) -> str:
  """The env's jaxmarl id (`env.env_id`), or its `envs.marl` name."""
  return config.env.get("env_id", config.env.name)


def run_dir(runs_dir: str, config: Any) -> str:
  return os.path.join(runs_dir, f"{NAME}-{config_hash(config.to_dict())}")


def peer_config(env: str, config: Any, root: str) -> dict[str, Any]:
  """JaxMARL's recipe for `env` at the budget of `config` (the same updates and env steps)."""
  return jaxmarl_peer.recipe_for_updates(root, ENVS[env].recipe,
                                         config.total_steps * config.algo.updates_per_step,
                                         **ENVS[env].recipe_overrides)


def curves(workdir: str, seeds: int) -> tuple[np.ndarray, np.ndarray]:
  """(env steps [E], greedy returns [seeds, E]) of a run's evaluations; the env steps are the
  run's `train/t_env` (transitions inside episodes, mean over seeds) at each evaluation."""
  records = read_metrics(workdir)
  t_env = {r["step"]: r["train/t_env"] for r in records if "train/t_env" in r}
  evals = [r for r in records if "eval/greedy_return" in r]
  steps = np.array([t_env.get(r["step"], 0.0) for r in evals], float)
  if seeds == 1:
    returns = np.array([[r["eval/greedy_return"] for r in evals]])
  else:
    returns = np.array([[r[f"eval/greedy_return/s{i}"] for r in evals] for i in range(seeds)])
  return steps, returns


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
  """Two-sided exact permutation test of equal means: the fraction of the splits of the
  pooled values into groups of len(a) and len(b) whose |mean difference| is at least the
  observed one (for equal sizes, scipy's exact `permutation_test` two-sided p)."""
  pooled = np.concatenate([a, b])
  observed = abs(np.mean(a) - np.mean(b))
  splits = list(itertools.combinations(range(len(pooled)), len(a)))
  hits = 0
  for chosen in splits:
    mask = np.zeros(len(pooled), bool)
    mask[list(chosen)] = True
    hits += abs(pooled[mask].mean() - pooled[~mask].mean()) >= observed - 1e-9
  return hits / len(splits)


def _peer(env: str, config: Any, seeds: int, root: str | None, runs_dir: str
          ) -> dict[str, Any] | None:
  if root:
    return jaxmarl_peer.run_or_reuse(root, peer_config(env, config, root), seeds, runs_dir)
  for path in sorted(glob.glob(os.path.join(runs_dir, f"jaxmarl_qmix-*-s{seeds}.json"))):
    with open(path) as f:
      out = json.load(f)
    if out["config"]["ENV_NAME"] == env_id(config):
      return out
  return None


def _fmt(values: Sequence[float]) -> str:
  return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def reproduce(*, scale: str, seeds: int, results_dir: str, runs_dir: str,
              jaxmarl_root: str | None = None, tasks: Sequence[str] | None = None) -> list[str]:
  """Trains (or reuses) every run of the envs `tasks` (default: MPE; `smax` too) and writes
  `qmix_jaxmarl_<env>.{md,csv,png}` for each; returns the paths."""
  del scale  # one scale: the benchmarks' own networks
  tasks = tuple(tasks or ("mpe",))
  unknown = sorted(set(tasks) - set(ENVS))
  if unknown:
    raise ValueError(f"--tasks={','.join(unknown)}: choose from {sorted(ENVS)}")
  paths = []
  for env in tasks:
    md, rows, results = env_table(env, seeds, runs_dir, jaxmarl_root)
    name = f"{NAME}_{env}"
    paths += write_md_csv(results_dir, name, md, rows)
    png_path = os.path.join(results_dir, f"{name}.png")
    _plot(env_id(ENVS[env].config()), results, png_path)
    paths.append(png_path)
  return paths


def env_table(env: str, seeds: int, runs_dir: str, jaxmarl_root: str | None
              ) -> tuple[list[str], list[dict[str, Any]], dict[str, tuple]]:
  """One env's markdown lines, CSV rows and curves (name -> (env steps, returns[seeds, E],
  source)), training or reusing its runs."""
  published = ENVS[env].published
  base = ENVS[env].config()
  updates = base.total_steps * base.algo.updates_per_step
  rows = []
  title = f"{env_id(base)} {base.env.get('scenario', '')}".strip()
  md = [f"# QMIX / VDN on {title} beside JaxMARL's QMIX, {seeds} seeds", "",
        "Greedy test return at the end of training, mean ± std over seeds (each seed's return "
        "is the mean of its test episodes); p: two-sided exact permutation test of equal means "
        "against JaxMARL's QMIX. Made by "
        f"`python -m launch.reproduce --table={NAME} --tasks={env} --seeds={seeds} "
        "--jaxmarl_root=PATH`.", "",
        f"{updates:,} updates = {updates * _steps_per_update(base):,} env steps "
        f"(`{ENVS[env].config_path}`).", "",
        "| implementation | final greedy return | per seed | p vs JaxMARL QMIX |",
        "|---|---|---|---|"]
  results, ablations = {}, {}
  runs = [(f"marft {mixer.upper()}", mixer, {}) for mixer in MIXERS]
  runs += [(f"marft QMIX, {label}", "qmix", overrides)
           for label, overrides in ABLATIONS.get(env, ())]
  for name, mixer, overrides in runs:
    config = run_config(env, mixer, seeds, overrides)
    workdir = run_dir(runs_dir, config)
    qmix_job.train_or_reuse(config, workdir)
    steps, returns = curves(workdir, seeds)
    (ablations if overrides else results)[name] = (steps, returns, workdir)
  peer = _peer(env, base, seeds, jaxmarl_root, runs_dir)
  if peer is not None:
    peer_steps = np.array([s for s, _ in peer["curves"][0]], float)
    peer_returns = np.array([[r for _, r in c] for c in peer["curves"]], float)
    results["JaxMARL QMIX"] = (peer_steps, peer_returns, "jaxmarl_qmix json")
  peer_final = results["JaxMARL QMIX"][1][:, -1] if peer is not None else None
  for name, (steps, returns, source) in results.items():
    final = returns[:, -1]
    p = (f"{permutation_p(final, peer_final):.3f}"
         if peer_final is not None and name != "JaxMARL QMIX" else "")
    md.append(f"| {name} | {_fmt(final)} | {', '.join(f'{v:.2f}' for v in final)} | {p} |")
    rows += _rows(base, name, steps, final, source)
  if peer is None:
    md.append("| JaxMARL QMIX | not run (pass --jaxmarl_root) | | |")
  md += ["", f"Published: {published}.", ""]
  if ablations:
    full = results["marft QMIX"][1][:, -1]
    md += ["## Which recipe options matter: marft QMIX with one undone", "",
           "| QMIX with | final greedy return | per seed | p vs the full recipe "
           "| p vs JaxMARL QMIX |", "|---|---|---|---|---|"]
    for name, (steps, returns, source) in ablations.items():
      final = returns[:, -1]
      p_peer = f"{permutation_p(final, peer_final):.3f}" if peer_final is not None else ""
      md.append(f"| {name.removeprefix('marft QMIX, ')} | {_fmt(final)} | "
                f"{', '.join(f'{v:.2f}' for v in final)} | {permutation_p(final, full):.3f} "
                f"| {p_peer} |")
      rows += _rows(base, name, steps, final, source)
    md += ["", "A run with `env.max_steps` set trains and is evaluated on episodes cut there "
           "(its return leaves out the steps after the cut).", ""]
  return md, rows, results


def _steps_per_update(config: Any) -> int:
  """Env steps an update collects: fragments' steps, or (MPE) episodes of fixed length."""
  algo = config.algo
  return algo.num_envs * (algo.get("fragment_steps", 0) or qmix_job.make_env(config).max_steps)


def _rows(config: Any, name: str, steps: np.ndarray, final: np.ndarray, source: str
          ) -> list[dict[str, Any]]:
  return [{"env": env_id(config), "implementation": name, "seed": seed,
           "env_steps": int(steps[-1]), "final_greedy_return": float(value), "source": source}
          for seed, value in enumerate(final)]


def _plot(title: str, results: dict[str, tuple], path: str) -> None:
  with figure(path, 1, 1, figsize=(6, 4), squeeze=False) as (_, axes):
    ax = axes[0][0]
    for name, (steps, returns, _) in results.items():
      mean, std = returns.mean(0), returns.std(0)
      ax.plot(steps, mean, label=name)
      ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_title(title)
    ax.set_xlabel("env steps")
    ax.set_ylabel("greedy test return")
    ax.legend()
