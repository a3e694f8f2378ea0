"""The MAPoRL table (Park et al. 2025): accuracy at each turn of a two-agent discussion, for the
base model and for the agents co-trained with MAPoRL, each trained agent alone vs with its
partner, and the incentive sweep (alpha in {0, 0.5, 1, 2}).

Every (alpha, seed) is one run of `experiments/configs/maporl.py:<scale>,<alpha>` in
`<runs_dir>/maporl-<config hash>` (the directory `launch.train` picks by default, so runs made
by hand are reused). The base rows are the runs' step-0 evaluations (the same base model and
verifier for every cell). For every run the base team and the exported trained team discuss
the same fixed test questions again, greedy, with the verifier scoring every answer; each
question's final-turn accuracy is paired (an exact sign test on the questions that changed).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from envs.data.task_instances import load_instances
from envs.registry import get_task
from experiments import pretrain, rl, verifier
from experiments.configs import maporl as maporl_configs
from experiments.tables import launch_train, train_missing, write_md_csv
from experiments.tables.at_grpo import (finished, format_percent, read_evals, sign_test_p_value,
                                        verdict)
from marft.logging import config_hash
from marft.models.hf import load_pretrained
from marft.rollout.engine import RolloutConfig, collect, model_sampler
from marft.tokenizers import CharTokenizer

CONFIG_FILE = os.path.join(os.path.dirname(maporl_configs.__file__), "maporl.py")
ALPHAS = (0.0, 0.5, 1.0, 2.0)
MODES = ("greedy", "sampled")
# MAPoRL (Park et al. 2025; Phi-3-mini, Llama-3-8B, Qwen2.5-3B on GSM8K and ANLI, two agents,
# three turns), as its abstract and Sec. 5 state them; no per-turn number could be read here.
PAPER_CLAIMS = (
    "off-the-shelf models do not improve over the turns of a discussion (flat or falling)",
    "MAPoRL-trained agents gain accuracy as the discussion goes on (later turns above turn 1)",
    "training one agent alone does not teach collaboration: the gain needs co-training",
    "the incentives (alpha) add to the gain of the influence-aware reward alone")


def run_config(alpha: float, scale: str, seed: int) -> Any:
  config = maporl_configs.get_config(f"{scale},{alpha:g}")
  config.seed = seed
  return config


def run_dir(runs_dir: str, config: Any) -> str:
  return os.path.join(runs_dir, f"maporl-{config_hash(config.to_dict())}")


def cells_of(seeds: int, alpha_seeds: int) -> list[tuple[float, int]]:
  """alpha 0 (the influence-aware reward alone) gets `seeds` seeds, the other alphas
  `alpha_seeds`."""
  return [(a, s) for a in ALPHAS for s in range(seeds if a == 0.0 else alpha_seeds)]


def _train(alpha: float, scale: str, seed: int, workdir: str) -> int:
  return launch_train(f"{CONFIG_FILE}:{scale},{alpha:g}", seed, workdir)


def run_all(scale: str, seeds: int, alpha_seeds: int, runs_dir: str, workers: int = 1
            ) -> dict[tuple[float, int], str]:
  """Runs every missing cell; returns (alpha, seed) -> run directory."""
  runs = {(a, s): run_dir(runs_dir, run_config(a, scale, s)) for a, s in cells_of(seeds,
                                                                                   alpha_seeds)}
  todo = [(key, d) for key, d in runs.items()
          if not finished(d, run_config(key[0], scale, key[1]).total_steps)]
  print(f"MAPoRL table ({scale}): {len(runs) - len(todo)} of {len(runs)} runs done", flush=True)
  if todo and scale in pretrain.BASE_MODELS:  # the shared base model and verifier first, once
    config = run_config(0.0, scale, 0)
    base, _, _ = rl.base_model(config)
    verifier.load(config, base.config.vocab_size)
  train_missing(todo, lambda key, workdir: _train(key[0], scale, key[1], workdir), workers)
  return runs


def final_turn_accuracy(config: Any, directories: Sequence[str]) -> np.ndarray:
  """Each fixed test question's final-turn accuracy (the fraction of agents right), greedy,
  with the Hugging Face policies in `directories` (one per agent, or one for all) discussing
  and `config`'s verifier scoring every answer."""
  task = get_task(config.task.name)
  task_cfg = {**task.default_config(), **dict(config.task.env)}
  instances = load_instances(config.task.name, task_cfg, config.task.eval_tasks)
  models = [load_pretrained(d)[0] for d in directories]
  tokenizer = CharTokenizer(models[0].config.vocab_size)
  scorer = verifier.make_scorer(verifier.load(config, models[0].config.vocab_size),
                                tokenizer.pad_id)
  turns = task_cfg["max_turns"]
  workflows = [task.make_workflow(t, config.task.workflow, task_cfg, turns,
                                  config.task.prompt_style) for t in instances]
  roles = workflows[0].roles
  mapping = {r: min(i, len(models) - 1) for i, r in enumerate(roles)}
  greedy = RolloutConfig(k=1, tree=False, temperature=0.0,
                         max_new_tokens=config.rollout.max_new_tokens)
  rollout = collect(workflows, [model_sampler(m, tokenizer, greedy) for m in models], tokenizer,
                    jax.random.key(config.seed), mapping=mapping, config=greedy, scorer=scorer)
  b = rollout.batch
  last = np.asarray(b.turn_id) == turns - 1
  correct = np.zeros(len(instances))
  np.add.at(correct, np.asarray(b.task_id)[last], np.asarray(b.reward)[last])
  return correct / len(roles)


def paired(config: Any, workdir: str, base: np.ndarray) -> dict[str, float]:
  """A finished run's exported team against the base team's per-question `base` accuracy."""
  policies = [os.path.join(workdir, f"hf_policy{p}")
              for p in range(max(dict(config.policies.mapping).values()) + 1)]
  trained = final_turn_accuracy(config, policies)
  gained, lost = int((trained > base).sum()), int((trained < base).sum())
  return {"trained": float(trained.mean()), "gained": gained, "lost": lost,
          "p": sign_test_p_value(gained, lost)}


def _values(runs, alpha: float, which: str, metric: str) -> list[float]:
  out = []
  for (a, _), workdir in sorted(runs.items()):
    if a == alpha:
      evals = read_evals(workdir)
      out.append(float((evals[0] if which == "first" else evals[-1])[metric]))
  return out


def _verifier_evals(config: Any) -> dict[str, float]:
  """The last evaluation of the verifier the runs used (empty when given by path)."""
  if config.verifier.get("path", ""):
    return {}
  path = os.path.join(verifier.run_dir(verifier.recipe(config.task.name, config.model.name)),
                      "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  evals = [r for r in records if "eval/auc" in r]
  return evals[-1] if evals else {}


def write_table(runs, scale: str, seeds: int, alpha_seeds: int, results_dir: str
                ) -> list[str]:
  """Writes `maporl.md`, `.csv` and `.png` (`maporl_<scale>.*` off the tiny scale)."""
  config = run_config(0.0, scale, 0)
  test_size, turns = config.task.eval_tasks, config.task.env.max_turns
  alphas = [a for a in ALPHAS if any(k[0] == a for k in runs)]
  base_accuracy = final_turn_accuracy(config, [rl.base_model_path(config)])
  pairs = {key: paired(run_config(key[0], scale, key[1]), d, base_accuracy)
           for key, d in sorted(runs.items())}
  t = lambda mode, k: f"eval/{mode}_turn{k}_accuracy"
  md = [f"# MAPoRL table, {scale} scale", "",
        f"Math (two operations on numbers 2..5), two agents discussing for {turns} turns, "
        f"{test_size} fixed test questions; accuracy = the fraction of the agents' answers at a "
        "turn that are right. Greedy = temperature 0, sampled = temperature 1; the verifier "
        "scores every answer and the score is shown to both agents at the next turn. Mean ± "
        f"std over seeds ({seeds} for alpha 0, {alpha_seeds} for the other alphas; alpha sets "
        "all four incentives a0..a3). Base = the runs' step-0 evaluation. Paired: each run's "
        "trained team and the base team on the same questions, greedy, final turn: questions "
        "gained / lost and the one-sided exact sign test, per seed. Made by `python -m "
        f"launch.reproduce --table=maporl --scale={scale} --seeds={seeds}`.", "",
        "## Accuracy at each turn of the discussion", "",
        "| | " + " | ".join(f"{m} turn {k}" for m in MODES for k in range(1, turns + 1))
        + " | paired, final turn (per seed): gained / lost, p |",
        "|---|" + "---|" * (2 * turns + 1)]
  rows_csv: list[dict[str, Any]] = []

  def add(label: str, alpha: float, which: str, prefix: str = "") -> list[list[float]]:
    cols = [_values(runs, alpha, which, t(f"{prefix}{m}", k)) for m in MODES
            for k in range(1, turns + 1)]
    for (m, k), values in zip([(m, k) for m in MODES for k in range(1, turns + 1)], cols):
      rows_csv.append({"row": label, "metric": f"{prefix}{m}_turn{k}",
                       "mean": 100 * np.mean(values), "std": 100 * np.std(values),
                       "seeds": len(values)})
    return cols

  base_cols = add("base", 0.0, "first")
  md.append("| Base model (both agents) | " + " | ".join(format_percent(c) for c in base_cols)
            + " | |")
  for alpha in alphas:
    label = f"MAPoRL, alpha {alpha:g}"
    cols = add(label, alpha, "last")
    seeds_of = sorted(s for a, s in runs if a == alpha)
    paired_text = "; ".join(f"{pairs[alpha, s]['gained']} / {pairs[alpha, s]['lost']}, "
                            f"p = {pairs[alpha, s]['p']:.2g}" for s in seeds_of)
    md.append(f"| {label} | " + " | ".join(format_percent(c) for c in cols)
              + f" | {paired_text} |")
    for s in seeds_of:
      rows_csv.append({"row": label, "metric": f"paired_p_seed{s}", "mean": pairs[alpha, s]["p"],
                       "std": 0.0, "seeds": 1})

  md += ["", "## Each trained agent alone vs with its partner (final turn)", "",
         "Alone: one agent revising its own answer over the same turns, its own score shown "
         "(the paper's claim: the gain comes from collaboration, and a trained agent alone is "
         "about the base).", "",
         "| | " + " | ".join(f"{m}: team | {m}: agent 1 alone | {m}: agent 2 alone"
                            for m in MODES) + " |",
         "|---|" + "---|" * 6]
  final = lambda alpha, which, prefix, mode: _values(runs, alpha, which,
                                                     f"eval/{prefix}{mode}_accuracy")
  lines = [("Base model", 0.0, "first")] + [(f"MAPoRL, alpha {a:g}", a, "last") for a in alphas]
  for label, alpha, which in lines:
    cells = []
    for mode in MODES:
      for prefix in ("", "alone0/", "alone1/"):
        values = final(alpha, which, prefix, mode)
        cells.append(format_percent(values))
        rows_csv.append({"row": label, "metric": f"{prefix}{mode}_final", "mean":
                         100 * np.mean(values), "std": 100 * np.std(values),
                         "seeds": len(values)})
    md.append(f"| {label} | " + " | ".join(cells) + " |")

  base_final = np.mean(final(0.0, "first", "", "greedy"))
  md += ["", "## What holds here", ""]
  for alpha in alphas:
    team = np.mean(final(alpha, "last", "", "greedy"))
    alone = np.mean([np.mean(final(alpha, "last", f"alone{p}/", "greedy")) for p in (0, 1)])
    md.append(f"- alpha {alpha:g}: trained team ({100 * team:.1f}) > base team "
              f"({100 * base_final:.1f}), greedy final turn: {verdict(team, base_final, test_size)}"
              f"; trained team > its agents alone ({100 * alone:.1f}): "
              f"{verdict(team, alone, test_size)}.")
  vev = _verifier_evals(config)
  if vev:
    md += ["", "## The verifier", "",
           f"Held-out AUC of correct vs wrong answers (the base model's own answers to "
           f"{int(vev['eval/examples'])} test-question discussions, {100 * vev['eval/correct_fraction']:.1f}% "
           f"correct): **{vev['eval/auc']:.3f}**; mean score of a correct answer "
           f"{vev['eval/score_correct']:.2f}, of a wrong one {vev['eval/score_wrong']:.2f}."]
    rows_csv.append({"row": "verifier", "metric": "auc", "mean": vev["eval/auc"], "std": 0.0,
                     "seeds": 1})
  md += ["", "## The paper", "", "MAPoRL (Park et al. 2025, GSM8K and ANLI, 2 agents, 3 turns) "
         "reports, and this table checks:"] + [f"- {claim}" for claim in PAPER_CLAIMS]
  stem = "maporl" if scale == "tiny" else f"maporl_{scale}"
  paths = write_md_csv(results_dir, stem, md + [""], rows_csv)
  png = os.path.join(results_dir, f"{stem}.png")
  _plot(runs, alphas, turns, png)
  return paths + [png]


def _plot(runs, alphas: Sequence[float], turns: int, path: str) -> None:
  """Greedy accuracy at each turn: the base and each alpha's trained team (seed means)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.6, 3.6))
  x = np.arange(1, turns + 1)
  curve = lambda alpha, which: [100 * np.mean(_values(runs, alpha, which,
                                                       f"eval/greedy_turn{k}_accuracy"))
                                for k in x]
  ax.plot(x, curve(0.0, "first"), "k--", label="base")
  for alpha in alphas:
    ax.plot(x, curve(alpha, "last"), "o-", label=f"MAPoRL, alpha {alpha:g}")
  ax.set_xticks(x)
  ax.set_xlabel("discussion turn")
  ax.set_ylabel("greedy test accuracy %")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def reproduce(*, scale: str, seeds: int, results_dir: str, runs_dir: str, workers: int = 1,
              alpha_seeds: int = 1) -> list[str]:
  """Runs (or reuses) every cell of the table and writes it; returns the paths written."""
  runs = run_all(scale, seeds, alpha_seeds, runs_dir, workers)
  return write_table(runs, scale, seeds, alpha_seeds, results_dir)
