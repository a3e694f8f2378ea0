"""The MATPO table: single-agent GRPO vs MATPO's planner/worker on search QA at an equal rollout
budget (K rollouts of the same questions), with clean and noisy search, and the query-recap and
final-summary ablations.

Every (cell, seed), a cell being (regime, noise), is one run of
`experiments/configs/matpo.py:<regime>,<scale>,<noise>` in `<runs_dir>/matpo-<config hash>` (the
directory `launch.train` picks by default, so runs made by hand are reused). The base rows are
the runs' step-0 evaluations. MATPO vs single agent at each noise: mean ± std over seeds and
Welch's t-test on the seeds' final greedy accuracies; each regime's drop from clean to noisy
search; the measured noise rate and the rollout's time outside generation, from the runs' logs.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from experiments import rl
from experiments.configs import matpo as matpo_configs
from experiments.tables import figure, launch_train, train_missing, write_md_csv
from experiments.tables.at_grpo import finished, format_percent, seed_values, verdict
from marft.logging import config_hash

CONFIG_FILE = os.path.join(os.path.dirname(matpo_configs.__file__), "matpo.py")
MODES = ("greedy", "sampled")
NOISES = (0.0, 0.25, 0.5)
MAIN_CELLS = tuple((regime, noise) for noise in NOISES for regime in ("single_grpo", "matpo"))
ABLATION_CELLS = (("matpo_no_recap", 0.0), ("matpo_no_summary", 0.0))
LABELS = {"single_grpo": "single agent, GRPO", "matpo": "MATPO (planner + worker, one model)",
          "matpo_per_role": "MATPO, one policy per role",
          "matpo_no_recap": "MATPO without query recap",
          "matpo_no_summary": "MATPO without final summary"}
# MATPO (Qwen3-14B-base; accuracy %, single-agent GRPO vs MATPO), as the paper reports it.
PAPER = (("GAIA-text", 32.16, 42.60), ("WebWalkerQA", 30.14, 33.00), ("FRAMES", 56.22, 63.64))


def label(cell: tuple[str, float]) -> str:
  return f"{LABELS[cell[0]]}, noise {cell[1]:g}"


def run_config(cell: tuple[str, float], scale: str, seed: int) -> Any:
  config = matpo_configs.get_config(f"{cell[0]},{scale},{cell[1]:g}")
  config.seed = seed
  return config


def run_dir(runs_dir: str, config: Any) -> str:
  return os.path.join(runs_dir, f"matpo-{config_hash(config.to_dict())}")


def cells_of(seeds: int, ablation_seeds: int) -> list[tuple[tuple[str, float], int]]:
  """The main cells get `seeds` seeds, the ablations `ablation_seeds`; seed-major, so that an
  interrupted table has every cell's first seed before any cell's second."""
  return [(c, s) for s in range(max(seeds, ablation_seeds))
          for c in (MAIN_CELLS if s < seeds else ()) + (ABLATION_CELLS if s < ablation_seeds
                                                        else ())]


def run_all(scale: str, seeds: int, ablation_seeds: int, runs_dir: str, workers: int = 1
            ) -> dict[tuple[tuple[str, float], int], str]:
  """Runs every missing cell; returns (cell, seed) -> run directory."""
  runs = {(c, s): run_dir(runs_dir, run_config(c, scale, s))
          for c, s in cells_of(seeds, ablation_seeds)}
  todo = [(key, d) for key, d in runs.items()
          if not finished(d, run_config(key[0], scale, key[1]).total_steps)]
  print(f"MATPO table ({scale}): {len(runs) - len(todo)} of {len(runs)} runs done", flush=True)
  if todo and scale != "paper":  # the shared base model first, once
    rl.base_model(run_config(MAIN_CELLS[0], scale, 0))
  train_missing(todo, lambda key, workdir: launch_train(
      f"{CONFIG_FILE}:{key[0][0]},{scale},{key[0][1]:g}", key[1], workdir), workers)
  return runs


def _train_records(runs, cells: Sequence[tuple[str, float]]) -> list[dict[str, float]]:
  records = []
  for (c, _), workdir in runs.items():
    if c in cells:
      with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records += [r for r in map(json.loads, filter(str.strip, f))
                    if "rollout/generate_seconds" in r]
  return records


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
  """Two-sided Welch t-test p-value of two seed samples (nan with fewer than 2 each, or a
  sample without spread)."""
  if len(a) < 2 or len(b) < 2 or np.std(a) == 0 or np.std(b) == 0:
    return float("nan")
  return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def write_table(runs, scale: str, seeds: int, ablation_seeds: int, results_dir: str
                ) -> list[str]:
  """Writes `matpo.md`, `.csv` and `.png` (`matpo_<scale>.*` off the tiny scale)."""
  config = run_config(MAIN_CELLS[0], scale, 0)
  test_size, steps = config.task.eval_tasks, config.total_steps
  env = config.task.env
  cells = [c for c in MAIN_CELLS + ABLATION_CELLS if any(k[0] == c for k in runs)]
  rows_csv: list[dict[str, Any]] = []

  def record(row: str, metric: str, values: Sequence[float]) -> None:
    rows_csv.append({"row": row, "metric": metric, "mean": 100 * np.mean(values),
                     "std": 100 * np.std(values), "seeds": len(values)})

  md = [f"# MATPO table, {scale} scale", "",
        f"Search QA over an invented knowledge base ({env.get('min_hops', 1)}-"
        f"{env.get('max_hops', 2)} hop questions, BM25 top-3 search; noise = the fraction of "
        f"search results replaced by false facts), {test_size} fixed test questions whose "
        "answers never answer a training question. Accuracy = the final answer is the gold "
        "entity; greedy = temperature 0, sampled = temperature 1. Both regimes train the "
        f"{config.model.name} base model pretrained here for {steps} steps on the same "
        f"{config.task.num_tasks} questions a step with K = {config.algo.k} rollouts each "
        "(equal rollout budget; MATPO's nested worker rollouts are extra rows of the same "
        "rollouts). Mean ± std over seeds "
        f"({seeds} for the main rows, {ablation_seeds} for the ablations); base = the runs' "
        f"step-0 evaluation. Made by `python -m launch.reproduce --table=matpo --scale={scale} "
        f"--seeds={seeds}`.", "",
        "## Accuracy", "",
        "| | base greedy | base sampled | trained greedy | trained sampled |",
        "|---|---|---|---|---|"]
  for cell in cells:
    texts = []
    for which in ("first", "last"):
      for mode in MODES:
        values = seed_values(runs, cell, which, f"eval/{mode}_success")
        record(label(cell), f"{'base' if which == 'first' else 'trained'}_{mode}", values)
        texts.append(format_percent(values))
    md.append(f"| {label(cell)} | " + " | ".join(texts) + " |")

  md += ["", "## MATPO vs single-agent GRPO (trained, greedy)", "",
         "| noise | single agent | MATPO | relative | Welch p (seeds) | 2-SE verdict |",
         "|---|---|---|---|---|---|"]
  final = {c: seed_values(runs, c, "last", "eval/greedy_success") for c in cells}
  for noise in NOISES:
    single, matpo = final.get(("single_grpo", noise)), final.get(("matpo", noise))
    if not single or not matpo:
      continue
    p = welch_p(matpo, single)
    relative = 100 * (np.mean(matpo) / max(np.mean(single), 1e-9) - 1)
    rows_csv.append({"row": f"noise {noise:g}", "metric": "welch_p", "mean": p, "std": 0.0,
                     "seeds": len(matpo)})
    md.append(f"| {noise:g} | {format_percent(single)} | {format_percent(matpo)} | "
              f"{relative:+.0f}% | {p:.2g} | MATPO > single: "
              f"{verdict(np.mean(matpo), np.mean(single), test_size)} |")
  md += ["", "How each degrades as noise grows (trained greedy, points lost from noise 0):", ""]
  for regime in ("single_grpo", "matpo"):
    if (regime, 0.0) in final:
      drops = [f"noise {n:g}: {100 * (np.mean(final[(regime, 0.0)]) - np.mean(final[(regime, n)])):+.1f}"
               for n in NOISES[1:] if (regime, n) in final]
      md.append(f"- {LABELS[regime]}: " + "; ".join(drops) + ".")

  md += ["", "## The rollout", ""]
  for noise in NOISES:
    records = _train_records(runs, [(r, noise) for r in ("single_grpo", "matpo")])
    results = sum(r.get("rollout/search_results", 0.0) for r in records)
    if results:
      replaced = sum(r.get("rollout/search_replaced", 0.0) for r in records)
      md.append(f"- noise {noise:g}: measured replaced fraction {replaced / results:.3f} of "
                f"{int(results)} training search results.")
  for regime in ("single_grpo", "matpo"):
    records = _train_records(runs, [c for c in cells if c[0] == regime])
    if records:
      total = sum(r["rollout/seconds"] for r in records)
      generate = sum(r["rollout/generate_seconds"] for r in records)
      calls = sum(r["rollout/generate_calls"] for r in records)
      iterations = sum(r["rollout/iterations"] for r in records)
      search = sum(r.get("rollout/search_seconds", 0.0) for r in records)
      md.append(f"- {LABELS[regime]}: {100 * (1 - generate / total):.1f}% of rollout time "
                f"outside generation (search, summed over env threads: "
                f"{100 * search / total:.1f}%), "
                f"{calls / iterations:.2f} generate calls per engine iteration, "
                f"{np.mean([r['rollout/rows'] for r in records]):.0f} rows a step.")
      rows_csv.append({"row": LABELS[regime], "metric": "outside_generation_fraction",
                       "mean": 1 - generate / total, "std": 0.0, "seeds": 0})
  md += ["", "## The paper", "",
         "MATPO (Qwen3-14B-base, single-agent GRPO vs MATPO; mean relative gain +18.38%):", "",
         "| benchmark | single agent | MATPO | relative |", "|---|---|---|---|"]
  md += [f"| {name} | {single:.2f} | {matpo:.2f} | {100 * (matpo / single - 1):+.0f}% |"
         for name, single, matpo in PAPER]
  md += ["", "The paper also reports MATPO more robust to noisy tool output, and both the query "
         "recap and the final summary to matter (its ablation)."]
  stem = "matpo" if scale == "tiny" else f"matpo_{scale}"
  paths = write_md_csv(results_dir, stem, md + [""], rows_csv)
  png = os.path.join(results_dir, f"{stem}.png")
  _plot(final, png)
  return paths + [png]


def _plot(final: dict, path: str) -> None:
  """Trained greedy accuracy against search noise, per regime (mean ± std over seeds)."""
  with figure(path, figsize=(5, 3.4)) as (_, ax):
    for regime in ("single_grpo", "matpo"):
      noises = [n for n in NOISES if (regime, n) in final]
      ax.errorbar(noises, [100 * np.mean(final[(regime, n)]) for n in noises],
                  yerr=[100 * np.std(final[(regime, n)]) for n in noises], marker="o", capsize=3,
                  label=LABELS[regime])
    ax.set_xlabel("search noise (fraction of results replaced)")
    ax.set_ylabel("greedy test accuracy %")
    ax.legend(fontsize=7)


def reproduce(*, scale: str, seeds: int, results_dir: str, runs_dir: str, workers: int = 1,
              ablation_seeds: int = 1) -> list[str]:
  """Runs (or reuses) every cell of the table and writes it; returns the paths written."""
  runs = run_all(scale, seeds, ablation_seeds, runs_dir, workers)
  return write_table(runs, scale, seeds, ablation_seeds, results_dir)
