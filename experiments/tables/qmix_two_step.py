"""Table 1 of QMIX (Rashid et al. 2018): the two-step game's learned values, QMIX against VDN.

  python -m launch.reproduce --table=qmix_two_step [--seeds=5] [--scale=tiny|paper]

Four runs of `experiments/configs/qmix_two_step.py`, each training `seeds` seeds at once
(`algo.num_seeds`): mixer {qmix, vdn} x exploration {uniform: epsilon 1 throughout, the
paper's setting; annealed: epsilon 1 -> 0.05 over 10k transitions}. A run lives in
`<runs_dir>/qmix_two_step-<config hash>` (the directory `launch.train` picks for the same
config), so a finished run is reused and an interrupted one resumes. Scales: `tiny` trains
2,000 updates per seed, `paper` 10,000 (the values settle closer to their fixed points).

For every seed the table gives the greedy joint policy's return and the learned values at
the first step of each state: agent 1's and agent 2's utilities and Q_tot of every joint
action. Beside them are closed-form references: the true optimal Q (which the monotonic QMIX
mixer can represent exactly here) and, for VDN under uniform data, the least-squares additive
fit that VDN's regression converges to.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from algorithms import qmix
from envs.marl import two_step
from experiments import qmix as qmix_job
from experiments.tables import write_md_csv
from experiments.configs import qmix_two_step as two_step_config
from marft.logging import config_hash

NAME = "qmix_two_step"
MIXERS = ("qmix", "vdn")
EXPLORATIONS = {"uniform": 1.0, "annealed": 0.05}  # epsilon_finish; epsilon starts at 1
SCALES = {"tiny": 20, "paper": 100}  # total_steps: trainer steps of 100 updates
STATES = two_step.STATE_NAMES
ACTIONS = ("A", "B")


def run_config(mixer: str, exploration: str, scale: str, seeds: int) -> Any:
  if scale not in SCALES:
    raise ValueError(f"scale={scale!r}: choose from {sorted(SCALES)}")
  config = two_step_config.get_config()
  if config.total_steps != SCALES[scale]:
    config.total_steps = SCALES[scale]
    config.eval_every = config.checkpoint_every = SCALES[scale] // 4
  config.algo.mixer = mixer
  config.algo.epsilon_finish = EXPLORATIONS[exploration]
  config.algo.num_seeds = seeds
  return config


def run_dir(runs_dir: str, config: Any) -> str:
  return os.path.join(runs_dir, f"{NAME}-{config_hash(config.to_dict())}")


def reference_values(mixer: str, gamma: float) -> dict[str, np.ndarray]:
  """Q_tot[a1, a2] per state that training on uniform data converges to, in closed form.

  QMIX represents the optimal Q here. VDN's regression fits the best sum q1(a1) + q2(a2) in
  least squares over uniformly weighted joint actions: row mean + column mean - grand mean.
  State 1's targets are gamma times the greedy value of the state agent 1's action leads to.
  """
  def fit(table):
    if mixer == "qmix":
      return table
    return table.mean(1, keepdims=True) + table.mean(0, keepdims=True) - table.mean()

  second = {"2A": fit(two_step.PAYOFF_2A.astype(np.float64)),
            "2B": fit(two_step.PAYOFF_2B.astype(np.float64))}
  first = np.stack([np.full(2, gamma * second["2A"].max()), np.full(2, gamma * second["2B"].max())])
  return {"1": fit(first), **second}


def state_inputs(env) -> dict[str, tuple[jax.Array, jax.Array]]:
  """(observations, global state) of states 1, 2A and 2B, reached through the env's API."""
  stage, ts = env.reset(jax.random.key(0))
  out = {"1": (ts.obs, ts.state)}
  for name, first_action in (("2A", 0), ("2B", 1)):
    _, after = env.step(jax.random.key(0), stage, jnp.array([first_action, 0]))
    out[name] = (after.obs, after.state)
  return out


def learned_values(config: Any, state: Any) -> list[dict[str, Any]]:
  """Per seed: greedy return, and per state the agents' utilities and Q_tot of each joint action."""
  env = qmix_job.make_env(config)
  cfg = qmix_job.algo_config(config)
  inputs = state_inputs(env)

  def one_seed(params):
    greedy = qmix.greedy_return(env, params["agent"], jax.random.key(0), 1)
    tables = {name: qmix.joint_q_table(cfg, params, obs, global_state)
              for name, (obs, global_state) in inputs.items()}
    return greedy, tables

  greedy, tables = jax.device_get(jax.jit(jax.vmap(one_seed))(state.params))
  return [{"seed": config.seed + i, "greedy_return": float(greedy[i]),
           "values": {name: (agent_qs[i], q_tot[i]) for name, (agent_qs, q_tot) in tables.items()}}
          for i in range(config.algo.num_seeds)]


def _f(value: float) -> str:
  text = f"{value:.2f}"
  return "0.00" if text == "-0.00" else text


def _m(matrix: np.ndarray) -> str:
  return "[" + ", ".join("[" + ", ".join(_f(v) for v in row) + "]" for row in matrix) + "]"


def _v(vector: np.ndarray) -> str:
  return "(" + ", ".join(_f(v) for v in vector) + ")"


def write_table(results: dict[tuple[str, str], list[dict[str, Any]]], workdirs: dict,
                scale: str, seeds: int, gamma: float, results_dir: str) -> list[str]:
  """Writes `qmix_two_step.md` and `.csv` to `results_dir`; returns the paths."""
  updates = SCALES[scale] * two_step_config.get_config().algo.updates_per_step
  md = [f"# QMIX two-step game (Rashid et al. 2018, Table 1), {scale} scale, {seeds} seed(s)", "",
        "State 1: agent 1's action picks 2A (payoff 7 for every joint action) or 2B "
        "(payoffs [[0, 1], [1, 8]], rows agent 1's action A/B, columns agent 2's); the "
        f"optimal return is 8. gamma = {gamma}, feed-forward agents with shared parameters, "
        f"{updates} updates per seed (8 episodes collected, one Adam step on 32 replayed "
        "episodes each). Exploration: **uniform** = epsilon 1 throughout (the paper's table: "
        "the data cover every joint action equally); **annealed** = epsilon 1 -> 0.05 over "
        "10k transitions. Made by "
        f"`python -m launch.reproduce --table={NAME} --scale={scale} --seeds={seeds}`.", "",
        "## Greedy return of the learned joint policy", "",
        "| mixer | exploration | " + " | ".join(f"seed {r['seed']}" for r in
                                              results[(MIXERS[0], "uniform")]) + " | mean |",
        "|---|---|" + "---|" * (seeds + 1)]
  for (mixer, exploration), rows in results.items():
    returns = [r["greedy_return"] for r in rows]
    md.append(f"| {mixer.upper()} | {exploration} | "
              + " | ".join(f"{v:g}" for v in returns) + f" | {np.mean(returns):.2f} |")
  md += ["", "Paper (uniform exploration): QMIX 8, VDN 7. With annealed exploration the data "
         "concentrate on the greedy joint actions, and VDN's additive fit finds 8 too.", ""]

  md += ["## Learned values, uniform exploration (the paper's setting)", "",
         "Q_tot as [[AA, AB], [BA, BB]] (rows agent 1's action), mean over seeds; the reference "
         "is the closed-form value that training on uniform data converges to (QMIX: the true "
         "optimal Q; VDN: the least-squares additive fit).", "",
         "| mixer | state | agent 1 q (A, B) | agent 2 q (A, B) | Q_tot | reference Q_tot |",
         "|---|---|---|---|---|---|"]
  for mixer in MIXERS:
    rows = results[(mixer, "uniform")]
    reference = reference_values(mixer, gamma)
    for name in STATES:
      agent_qs = np.mean([r["values"][name][0] for r in rows], 0)
      q_tot = np.mean([r["values"][name][1] for r in rows], 0)
      md.append(f"| {mixer.upper()} | {name} | {_v(agent_qs[0])} | {_v(agent_qs[1])} | "
                f"{_m(q_tot)} | {_m(reference[name])} |")

  md += ["", "## Per seed", "",
         "| mixer | exploration | seed | Q_tot state 1 | Q_tot 2A | Q_tot 2B | "
         "agent 1 q in state 1 | greedy return |", "|---|---|---|---|---|---|---|---|"]
  csv_rows = []
  for (mixer, exploration), rows in results.items():
    for r in rows:
      values = r["values"]
      md.append(f"| {mixer.upper()} | {exploration} | {r['seed']} | {_m(values['1'][1])} | "
                f"{_m(values['2A'][1])} | {_m(values['2B'][1])} | {_v(values['1'][0][0])} | "
                f"{r['greedy_return']:g} |")
      for name in STATES:
        agent_qs, q_tot = values[name]
        for a1 in range(2):
          for a2 in range(2):
            csv_rows.append({"mixer": mixer, "exploration": exploration, "seed": r["seed"],
                             "state": name, "a1": ACTIONS[a1], "a2": ACTIONS[a2],
                             "q1": float(agent_qs[0, a1]), "q2": float(agent_qs[1, a2]),
                             "q_tot": float(q_tot[a1, a2]),
                             "greedy_return": r["greedy_return"],
                             "run": workdirs[(mixer, exploration)]})
  md += ["", "Runs: " + ", ".join(f"`{d}`" for d in workdirs.values()), ""]
  return write_md_csv(results_dir, NAME, md, csv_rows)


def reproduce(*, scale: str, seeds: int, results_dir: str, runs_dir: str) -> list[str]:
  """Trains (or reuses) the four runs and writes the table; returns the paths written."""
  results, workdirs, gamma = {}, {}, None
  for mixer in MIXERS:
    for exploration in EXPLORATIONS:
      config = run_config(mixer, exploration, scale, seeds)
      workdir = run_dir(runs_dir, config)
      state = qmix_job.train_or_reuse(config, workdir)
      results[(mixer, exploration)] = learned_values(config, state)
      workdirs[(mixer, exploration)] = workdir
      gamma = config.algo.gamma
  return write_table(results, workdirs, scale, seeds, gamma, results_dir)
