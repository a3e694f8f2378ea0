"""The AgentPRM table: the policy's success before and after AgentPRM iterations, greedy,
sampled and with per-step Best-of-N under the PRM, and InversePRM from the solver's
demonstrations in place of outcome labels.

Per seed, six runs of `experiments/configs/agentprm.py:<phase>,<scale>`, each in
`<runs_dir>/agentprm-<config hash>`, chained by their exports:

  prm_0      PRM phase (AgentPRM targets) on the base policy's episodes
  policy_1   policy phase: online DPO of the base against prm_0              (iteration 1)
  prm_1      PRM phase on policy_1's episodes
  policy_2   policy phase: online DPO of policy_1 against prm_1              (iteration 2)
  inverse_0  PRM phase (InversePRM: solver transitions vs the base's)
  inverse_1  policy phase: online DPO of the base against inverse_0

A policy phase evaluates its starting policy at step 0 (the "before" rows, Best-of-N under the
phase's PRM) and its trained policy at the end, on the same test tasks. Orderings: the change in
success pooled over seeds against two binomial standard errors, and a two-proportion z-test.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from scipy import stats

from experiments import prm
from experiments.configs import agentprm as agentprm_configs
from experiments.tables import figure, launch_train, train_missing, write_md_csv
from experiments.tables.at_grpo import format_percent, verdict
from marft.logging import config_hash

CONFIG_FILE = os.path.join(os.path.dirname(agentprm_configs.__file__), "agentprm.py")
# run -> (phase, the run whose PRM it trains against or None, the run whose policy it starts
# from or None: the base); listed in dependency order.
RUNS = {"prm_0": ("agentprm", None, None), "inverse_0": ("inverse", None, None),
        "policy_1": ("policy", "prm_0", None), "inverse_1": ("policy", "inverse_0", None),
        "prm_1": ("agentprm", None, "policy_1"), "policy_2": ("policy", "prm_1", "policy_1")}
STAGES = (("prm_0", "inverse_0"), ("policy_1", "inverse_1"), ("prm_1",), ("policy_2",))
# table rows: (label, policy run, "first" (its starting policy) or "last", PRM label)
ROWS = (("base policy", "policy_1", "first", "AgentPRM PRM 0"),
        ("AgentPRM iteration 1", "policy_1", "last", "AgentPRM PRM 0"),
        ("AgentPRM iteration 1 (start of iteration 2)", "policy_2", "first", "AgentPRM PRM 1"),
        ("AgentPRM iteration 2", "policy_2", "last", "AgentPRM PRM 1"),
        ("base policy", "inverse_1", "first", "InversePRM 0"),
        ("InversePRM iteration 1", "inverse_1", "last", "InversePRM 0"))
MODES = (("greedy", "eval/greedy_success"), ("sampled", "eval/sampled_success"),
         ("Best-of-N", "eval/best_of_n_success"))
# AgentPRM (Choudhury 2025), ALFWorld success % of its 3B policy.
PAPER = "ALFWorld: AgentPRM's policy reaches 88.1% success after its iterations"


def run_config(name: str, scale: str, seed: int, dirs: dict[str, str]) -> Any:
  """The config of run `name` of seed `seed`, reading its inputs from `dirs` (run -> workdir)."""
  phase, prm_run, start_run = RUNS[name]
  config = agentprm_configs.get_config(f"{phase},{scale}")
  config.seed = seed
  if prm_run:
    config.prm.path = os.path.abspath(os.path.join(dirs[prm_run], prm.EXPORT))
  if start_run:
    config.model.path = os.path.abspath(os.path.join(dirs[start_run], "hf_policy0"))
    if scale == "tiny":
      config.model.tokenizer = "char"
  return config


def read_records(workdir: str) -> list[dict[str, float]]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def evals(workdir: str) -> list[dict[str, float]]:
  """A run's evaluation records in step order (PRM phases log `eval/auc`, policy phases
  `eval/greedy_success`)."""
  return [r for r in read_records(workdir)
          if "eval/auc" in r or "eval/greedy_success" in r]


def finished(workdir: str, total_steps: int) -> bool:
  return any(r["step"] == total_steps for r in evals(workdir))


def overrides(config: Any, name: str) -> dict[str, str]:
  """The dotted overrides that turn run `name`'s default config into `config`."""
  out = {}
  if RUNS[name][1]:
    out["prm.path"] = config.prm.path
  if RUNS[name][2]:
    out["model.path"] = config.model.path
    out["model.tokenizer"] = config.model.tokenizer
  return out


def run_all(scale: str, seeds: int, runs_dir: str, workers: int = 1
            ) -> dict[tuple[str, int], str]:
  """Runs every missing run, stage by stage; returns (run, seed) -> workdir."""
  dirs: dict[int, dict[str, str]] = {s: {} for s in range(seeds)}
  configs = {}
  for stage in STAGES:
    for s in range(seeds):
      for name in stage:
        configs[(name, s)] = config = run_config(name, scale, s, dirs[s])
        dirs[s][name] = os.path.join(runs_dir, f"agentprm-{config_hash(config.to_dict())}")
  done = sum(finished(dirs[s][n], configs[(n, s)].total_steps) for n, s in configs)
  print(f"AgentPRM table ({scale}): {done} of {len(configs)} runs done", flush=True)
  for stage in STAGES:
    todo = [((n, s), dirs[s][n]) for s in range(seeds) for n in stage
            if not finished(dirs[s][n], configs[(n, s)].total_steps)]
    train_missing(todo, lambda key, workdir: launch_train(
        f"{CONFIG_FILE}:{RUNS[key[0]][0]},{scale}", key[1], workdir,
        overrides(configs[key], key[0])), workers)
  return {(n, s): dirs[s][n] for n, s in configs}


def values(runs: dict[tuple[str, int], str], name: str, which: str, metric: str
           ) -> list[float]:
  """`metric` of each seed's run `name`, from its first or last evaluation."""
  out = []
  for (n, _), workdir in sorted(runs.items()):
    if n == name and evals(workdir):
      out.append(float(evals(workdir)[0 if which == "first" else -1][metric]))
  return out


def prm_stats(runs: dict[tuple[str, int], str], name: str) -> dict[str, list[float]]:
  """Per seed, PRM run `name`'s data statistics and final evaluation."""
  stats: dict[str, list[float]] = {}
  for (n, _), workdir in sorted(runs.items()):
    if n != name:
      continue
    merged: dict[str, float] = {}
    for record in read_records(workdir):
      merged.update({k: v for k, v in record.items() if k.startswith(("data/", "eval/"))})
    for k, v in merged.items():
      stats.setdefault(k, []).append(float(v))
  return stats


def two_proportion_p(a: float, b: float, n: int) -> float:
  """Two-sided p-value of the two-proportion z-test of success rates `a` and `b`, each
  measured on `n` trials: z = (a - b) / sqrt(p (1 - p) 2 / n), p the pooled rate."""
  pooled = (a + b) / 2
  se = np.sqrt(pooled * (1 - pooled) * 2 / n)
  return float(2 * stats.norm.sf(abs(a - b) / se)) if se > 0 else 1.0  # both 0 or both 1


def write_table(runs: dict[tuple[str, int], str], scale: str, seeds: int, results_dir: str
                ) -> list[str]:
  """Writes `agentprm.md`, `.csv` and `.png` (`agentprm_<scale>.*` off the tiny scale)."""
  policy = agentprm_configs.get_config(f"policy,{scale}")
  phase = agentprm_configs.get_config(f"agentprm,{scale}")
  test_size, n = policy.task.eval_tasks, policy.algo.best_of_n
  rows_csv: list[dict[str, Any]] = []
  md = [f"# AgentPRM table, {scale} scale", "",
        f"Plan-Path (the AT-GRPO table's {scale} settings; tool and plan roles, one shared "
        f"policy), {test_size} fixed test tasks. A PRM phase trains the PRM on "
        f"{phase.prm.questions} training tasks x {phase.prm.rollouts} episodes of the current "
        f"policy at temperature {phase.prm.temperature} ({phase.total_steps} updates); a policy "
        f"phase runs {policy.total_steps} steps of online DPO (beta {policy.algo.beta}, "
        f"{policy.algo.states_per_step} PRM-ranked pairs a step, lr {policy.optimizer.lr:g}) "
        "against the frozen starting policy. Success: greedy (temperature 0), sampled "
        f"(temperature {policy.rollout.temperature:g}), and per-step Best-of-{n} under the "
        f"phase's PRM ({n} candidates at temperature {policy.algo.best_of_n_temperature:g} for "
        "each agent step, the PRM's best kept). InversePRM replaces the outcome labels with "
        "the task solver's demonstrations. Mean ± std over "
        f"{seeds} seed(s). Made by `python -m launch.reproduce --table=agentprm --scale={scale} "
        f"--seeds={seeds}`.", "",
        "## Success %", "",
        "| policy | PRM | greedy | sampled | Best-of-" + str(n) + " | Best-of-N responses / "
        "task |", "|---|---|---|---|---|---|"]
  finals: dict[tuple[str, str, str], list[float]] = {}
  for label, run, which, prm_label in ROWS:
    texts = []
    for mode, metric in MODES:
      got = finals[(run, which, mode)] = values(runs, run, which, metric)
      texts.append(format_percent(got))
      rows_csv.append({"policy": label, "prm": prm_label, "mode": mode,
                       "mean": 100 * np.mean(got) if got else float("nan"),
                       "std": 100 * np.std(got) if got else float("nan"), "seeds": len(got)})
    spent = values(runs, run, which, "eval/best_of_n_samples")
    md.append(f"| {label} | {prm_label} | " + " | ".join(texts) +
              f" | {np.mean(spent) if spent else float('nan'):.0f} |")

  md += ["", "## Did it improve?", "",
         f"Success pooled over seeds ({seeds} x {test_size} test tasks); the verdict against two "
         "binomial standard errors of the difference, and the two-sided p-value of a "
         "two-proportion z-test (it counts every (seed, task) as independent, though the seeds "
         "share the test tasks, so it errs towards significance).", ""]
  comparisons = (("AgentPRM iteration 1 vs base", ("policy_1", "last"), ("policy_1", "first")),
                 ("AgentPRM iteration 2 vs iteration 1", ("policy_2", "last"),
                  ("policy_2", "first")),
                 ("AgentPRM iteration 2 vs base", ("policy_2", "last"), ("policy_1", "first")),
                 ("InversePRM iteration 1 vs base", ("inverse_1", "last"),
                  ("inverse_1", "first")))
  comparisons += tuple((f"Best-of-{n} vs {other}, {label} under {prm_label}",
                        (run, which, "Best-of-N"), (run, which, other))
                       for label, run, which, prm_label in ROWS if which == "first"
                       for other in ("greedy", "sampled"))
  for text, better, worse in comparisons:
    for mode, _ in (MODES if len(better) == 2 else ((None, None),)):
      a = finals.get(better + ((mode,) if mode else ()), [])
      b = finals.get(worse + ((mode,) if mode else ()), [])
      if a and b:
        n_tasks = test_size * len(a)
        md.append(f"- {text}{f' ({mode})' if mode else ''}: {100 * np.mean(a):.1f} vs "
                  f"{100 * np.mean(b):.1f} ({100 * (np.mean(a) - np.mean(b)):+.1f}), "
                  f"p = {two_proportion_p(np.mean(a), np.mean(b), n_tasks):.2g}; gain "
                  f"{verdict(np.mean(a), np.mean(b), n_tasks)}")

  md += ["", "## The PRMs", "",
         "Held-out separation: the PRM's value of each test episode's final step, successes vs "
         "failures (AUC). AgentPRM's data are unique (state, action) steps with Monte-Carlo "
         "targets; InversePRM's are expert and policy transitions.", "",
         "| PRM | policy episodes' success | training examples | held-out AUC |",
         "|---|---|---|---|"]
  for name, label in (("prm_0", "AgentPRM PRM 0 (base's episodes)"),
                      ("prm_1", "AgentPRM PRM 1 (iteration 1's episodes)"),
                      ("inverse_0", "InversePRM 0 (solver vs base)")):
    stats = prm_stats(runs, name)
    if not stats:
      continue
    examples = stats.get("data/examples") or [
        e + p for e, p in zip(stats.get("data/expert_transitions", []),
                              stats.get("data/policy_transitions", []))]
    md.append(f"| {label} | {format_percent(stats.get('data/success_rate', []))} | "
              f"{np.mean(examples):.0f} | {np.mean(stats.get('eval/auc', [np.nan])):.3f} "
              f"(± {np.std(stats.get('eval/auc', [np.nan])):.3f}) |")
    rows_csv.append({"policy": label, "prm": "", "mode": "auc",
                     "mean": float(np.mean(stats.get("eval/auc", [np.nan]))),
                     "std": float(np.std(stats.get("eval/auc", [np.nan]))),
                     "seeds": len(stats.get("eval/auc", []))})
  md += ["", "## The paper", "", f"- {PAPER}; with Best-of-N under the PRM at inference "
         "the paper reports further gains. Its policy is a 3B model on ALFWorld; ours is a "
         "1M-parameter character model on Plan-Path.", ""]
  stem = "agentprm" if scale == "tiny" else f"agentprm_{scale}"
  paths = write_md_csv(results_dir, stem, md, rows_csv)
  png = os.path.join(results_dir, f"{stem}.png")
  _plot(finals, png)
  return paths + [png]


def _plot(finals: dict[tuple[str, str, str], list[float]], path: str) -> None:
  """Success by iteration for AgentPRM and InversePRM, one line per mode."""
  with figure(path, 1, 2, figsize=(8, 3.2), sharey=True) as (_, axes):
    chains = (("AgentPRM", (("policy_1", "first"), ("policy_1", "last"), ("policy_2", "last"))),
              ("InversePRM", (("inverse_1", "first"), ("inverse_1", "last"))))
    for ax, (title, points) in zip(axes, chains):
      for mode, _ in MODES:
        got = [finals.get((*p, mode), []) for p in points]
        xs = [i for i, g in enumerate(got) if g]
        ax.errorbar(xs, [100 * np.mean(got[i]) for i in xs],
                    yerr=[100 * np.std(got[i]) for i in xs], marker="o", capsize=3, label=mode)
      ax.set_xticks(range(len(points)))
      ax.set_xlabel("iteration")
      ax.set_title(title)
    axes[0].set_ylabel("test success %")
    axes[0].legend(fontsize=7)


def reproduce(*, scale: str, seeds: int, results_dir: str, runs_dir: str, workers: int = 1
              ) -> list[str]:
  """Runs (or reuses) every run of the table and writes it; returns the paths written."""
  return write_table(run_all(scale, seeds, runs_dir, workers), scale, seeds, results_dir)
