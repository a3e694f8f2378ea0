"""The AT-GRPO table (Stronger Together, Table 2 and the Plan-Path ablation), reproduced.

Every (task, regime, seed) is one run of `experiments/configs/at_grpo.py:<task>,<regime>,<scale>`
in `<runs_dir>/at_grpo-<config hash>` (the directory `launch.train` picks by default, so runs
made by hand are reused; a finished run is never rerun, an interrupted one resumes). The
"no RL" rows are those runs' step-0 evaluations of the base model.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments import pretrain
from experiments.configs import at_grpo as at_grpo_configs
from experiments.tables import figure, launch_train, train_missing
from marft.logging import config_hash

CONFIG_FILE = os.path.join(os.path.dirname(at_grpo_configs.__file__), "at_grpo.py")
TASKS = ("sudoku", "sokoban", "plan_path", "code", "math")  # the paper's column order
RUN_REGIMES = ("single_grpo", "mas_shared", "mas_per_role")

# (row label, run regime, evaluation "first" (step 0) or "last", metric prefix)
ROWS = (
    ("Single agent", "single_grpo", "first", ""),
    ("Single agent + GRPO", "single_grpo", "last", ""),
    ("MAS", "mas_shared", "first", ""),
    ("MAS + AT-GRPO, shared policy", "mas_shared", "last", ""),
    ("MAS + AT-GRPO, role-specialised", "mas_per_role", "last", ""),
)
ABLATION_ROWS = (
    ("Single-agent GRPO policy, run in the MAS", "single_grpo", "last", "mas/"),
    ("MAS + AT-GRPO, role-specialised", "mas_per_role", "last", ""),
    ("Role-specialised, role policies swapped", "mas_per_role", "last", "swapped/"),
)
# Stronger Together, Qwen3-1.7B, success % (Sudoku, Sokoban, Plan-Path; code and math use other
# benchmarks there and are not comparable).
PAPER = {
    "sudoku": (7, 29, 69, 99, 99), "sokoban": (0, 3, 0, 10, 11.5), "plan_path": (5, 11, 10, 96, 97),
}
PAPER_ABLATION = (16.0, 96.0, 6.0)


def run_config(task: str, regime: str, scale: str, seed: int) -> Any:
  config = at_grpo_configs.get_config(f"{task},{regime},{scale}")
  config.seed = seed
  return config


def run_dir(runs_dir: str, config: Any) -> str:
  return os.path.join(runs_dir, f"at_grpo-{config_hash(config.to_dict())}")


def read_evals(workdir: str) -> list[dict[str, float]]:
  """The evaluation records of a run's `metrics.jsonl`, by step."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [r for r in records if "eval/greedy_success" in r]


def seed_values(runs: dict, cell: Any, which: str, metric: str) -> list[float]:
  """`metric` of each seed's run of `cell` (`runs`: (cell, seed) -> workdir), from its first
  (`which="first"`: step 0, the base) or last evaluation."""
  out = []
  for (c, _), workdir in sorted(runs.items()):
    if c == cell:
      evals = read_evals(workdir)
      out.append(float((evals[0] if which == "first" else evals[-1])[metric]))
  return out


def finished(workdir: str, total_steps: int) -> bool:
  return any(r["step"] == total_steps for r in read_evals(workdir))


def _train(task: str, regime: str, scale: str, seed: int, workdir: str) -> int:
  return launch_train(f"{CONFIG_FILE}:{task},{regime},{scale}", seed, workdir)


def _pretrain_base(task: str, model: str) -> None:
  checkpoint = pretrain.base_checkpoint(pretrain.config_for(task, model))
  if not os.path.exists(os.path.join(checkpoint, "config.json")):
    config_file = os.path.join(os.path.dirname(CONFIG_FILE), f"pretrain_{task}.py")
    print(f"pretraining the {task} base model ({model})", flush=True)
    subprocess.run([sys.executable, "-m", "launch.pretrain", f"--config={config_file}",
                    f"--config.model.name={model}"], env=os.environ, check=True)


def run_all(scale: str, seeds: int, runs_dir: str, workers: int = 1,
            tasks: Sequence[str] = TASKS) -> dict[tuple[str, str, int], str]:
  """Runs every missing cell; returns (task, regime, seed) -> run directory."""
  cells = {(t, r, s): run_dir(runs_dir, run_config(t, r, scale, s))
           for t in tasks for r in RUN_REGIMES for s in range(seeds)}
  todo = [(cell, d) for cell, d in cells.items()
          if not finished(d, run_config(cell[0], cell[1], scale, cell[2]).total_steps)]
  print(f"AT-GRPO table ({scale}): {len(cells) - len(todo)} of {len(cells)} runs done", flush=True)
  if scale in pretrain.BASE_MODELS:  # base models first, one at a time (parallel runs share them)
    for task in sorted({cell[0] for cell, _ in todo}):
      _pretrain_base(task, scale)
  train_missing(todo, lambda cell, workdir: _train(cell[0], cell[1], scale, cell[2], workdir),
                workers)
  return cells


def cell_values(cells: dict[tuple[str, str, int], str], task: str, regime: str, which: str,
                metric: str) -> list[float]:
  values = []
  for (t, r, _), workdir in sorted(cells.items()):
    if (t, r) == (task, regime):
      evals = read_evals(workdir)
      record = evals[0] if which == "first" else evals[-1]
      values.append(float(record[metric]))
  return values


def format_percent(values: Sequence[float]) -> str:
  """Rates as `mean ± std` percent over seeds (one value: the mean alone; none: a dash)."""
  if not values:
    return "—"
  mean = 100 * np.mean(values)
  return f"{mean:.1f} ± {100 * np.std(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def verdict(better: float, worse: float, test_size: int) -> str:
  """Whether success rate `better` > `worse` holds, against two binomial standard errors of the
  difference of two rates measured on `test_size` instances each: sqrt(sum p (1 - p) / n)."""
  se = np.sqrt((better * (1 - better) + worse * (1 - worse)) / test_size)
  if better - worse > 2 * se:
    return "holds"
  if better > worse:
    return f"holds only within noise (2 SE = {200 * se:.1f} points)"
  return "does NOT hold"


def sign_test_p_value(gained: int, lost: int) -> float:
  """One-sided exact sign test on the discordant pairs: P(X >= gained), X ~ Bin(gained + lost,
  1/2), the chance of at least this many net flips to success if training changed nothing."""
  n = gained + lost
  return sum(math.comb(n, i) for i in range(gained, n + 1)) / 2**n if n else 1.0


def _observations(cells, tasks, test_sizes: dict[str, int]) -> list[str]:
  """Where the paper's ordering holds at this scale (greedy success, means over seeds)."""
  lines = []
  checks = (("Single agent + GRPO", "Single agent"), ("MAS + AT-GRPO, shared policy", "MAS"),
            ("MAS + AT-GRPO, shared policy", "Single agent + GRPO"),
            ("MAS + AT-GRPO, role-specialised", "MAS"))
  rows = {label: (regime, which) for label, regime, which, _ in ROWS}
  for task in tasks:
    for better, worse in checks:
      a = np.mean(cell_values(cells, task, *rows[better], "eval/greedy_success"))
      b = np.mean(cell_values(cells, task, *rows[worse], "eval/greedy_success"))
      lines.append(f"- {task}: {better} ({100 * a:.1f}) > {worse} ({100 * b:.1f}): "
                   f"{verdict(a, b, test_sizes[task])}")
  return lines


def write_table(cells, scale: str, seeds: int, results_dir: str,
                tasks: Sequence[str] = TASKS) -> list[str]:
  """Writes `at_grpo.md`, `.csv` and `.png` to `results_dir` (`at_grpo_<scale>.*` for scales
  other than tiny); returns the paths."""
  os.makedirs(results_dir, exist_ok=True)
  md = [f"# AT-GRPO table, {scale} scale, {seeds} seed(s)", "",
        "Success rate (%) on each task's fixed test set, mean ± std over seeds; greedy decoding "
        "(temperature 0) and sampled (temperature 1). A rise in sampled success alone is "
        "sharpening; greedy is the measure of learning. Paper: Stronger Together, Qwen3-1.7B. "
        f"Made by `python -m launch.reproduce --table=at_grpo --scale={scale} --seeds={seeds}`.",
        ""]
  rows_csv = []
  for metric, title in (("greedy_success", "Greedy"), ("sampled_success", "Sampled")):
    md += [f"## {title}", "", "| | " + " | ".join(tasks) + " |",
           "|---|" + "---|" * len(tasks)]
    for i, (label, regime, which, prefix) in enumerate(ROWS):
      cells_text = []
      for task in tasks:
        values = cell_values(cells, task, regime, which, f"eval/{prefix}{metric}")
        # The reference evaluates at temperature 0: the paper's numbers are greedy.
        paper = PAPER.get(task, (None,) * len(ROWS))[i] if metric == "greedy_success" else None
        cells_text.append(format_percent(values) + (f" (paper {paper})" if paper is not None else ""))
        rows_csv.append([task, label, metric, 100 * np.mean(values), 100 * np.std(values),
                         len(values), "" if paper is None else paper])
      md.append(f"| {label} | " + " | ".join(cells_text) + " |")
    md.append("")
  if "plan_path" in tasks:
    md += ["## Plan-Path ablation", "", "| | greedy | sampled | paper |", "|---|---|---|---|"]
    for (label, regime, which, prefix), paper in zip(ABLATION_ROWS, PAPER_ABLATION):
      greedy = cell_values(cells, "plan_path", regime, which, f"eval/{prefix}greedy_success")
      sampled = cell_values(cells, "plan_path", regime, which, f"eval/{prefix}sampled_success")
      md.append(f"| {label} | {format_percent(greedy)} | {format_percent(sampled)} | {paper} |")
      for metric, values in (("greedy_success", greedy), ("sampled_success", sampled)):
        rows_csv.append(["plan_path", f"ablation: {label}", metric, 100 * np.mean(values),
                         100 * np.std(values), len(values), paper])
    md.append("")
  test_sizes = {task: run_config(task, "mas_shared", scale, 0).task.eval_tasks for task in tasks}
  md += ["## Does the paper's ordering hold here?", "",
         "A difference counts when it exceeds two binomial standard errors of the difference of two "
         f"rates on the task's test set ({', '.join(f'{t} {n}' for t, n in test_sizes.items())} "
         "instances).", "", *_observations(cells, tasks, test_sizes), ""]
  stem = "at_grpo" if scale == "tiny" else f"at_grpo_{scale}"
  paths = [os.path.join(results_dir, f"{stem}.{ext}") for ext in ("md", "csv", "png")]
  with open(paths[0], "w") as f:
    f.write("\n".join(md))
  with open(paths[1], "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["task", "row", "metric", "mean_percent", "std_percent", "seeds",
                     "paper_percent"])
    writer.writerows(rows_csv)
  _plot(cells, tasks, paths[2])
  return paths


def _plot(cells, tasks: Sequence[str], path: str) -> None:
  """Greedy (solid) and sampled (dashed) test success against training step, seed means."""
  with figure(path, 1, len(tasks), figsize=(max(3.2 * len(tasks), 4.8), 3),
              squeeze=False) as (fig, axes):
    for ax, task in zip(axes[0], tasks):
      for color, regime in zip(("C0", "C1", "C2"), RUN_REGIMES):
        curves = [read_evals(d) for (t, r, _), d in sorted(cells.items())
                  if (t, r) == (task, regime)]
        steps = [r["step"] for r in curves[0]]
        for metric, style in (("eval/greedy_success", "-"), ("eval/sampled_success", "--")):
          mean = np.mean([[r[metric] for r in c[:len(steps)]] for c in curves], axis=0)
          ax.plot(steps, 100 * mean, style, color=color,
                  label=regime if style == "-" else None)
      ax.set_title(task)
      ax.set_xlabel("step")
      ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("test success %")
    fig.suptitle("AT-GRPO: greedy (solid) and sampled (dashed) test success", fontsize=9)
    axes[0][-1].legend(fontsize=7)


def reproduce(*, scale: str, seeds: int, results_dir: str, runs_dir: str, workers: int = 1,
              tasks: Sequence[str] = TASKS) -> list[str]:
  """Runs (or reuses) every cell of the table and writes it; returns the paths written."""
  unknown = set(tasks) - set(TASKS)
  if unknown:
    raise ValueError(f"unknown tasks {sorted(unknown)}: the table's columns are {TASKS}")
  cells = run_all(scale, seeds, runs_dir, workers, tasks)
  return write_table(cells, scale, seeds, results_dir, tasks)
