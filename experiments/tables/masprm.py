"""The MASPRM table: one straight-through pass of the multi-agent system vs majority vote vs
Best-of-N with an ORM vs PRM-guided step-level beam search vs PRM-guided MCTS (+ ORM), at
matched sample budgets, and the PRM's zero-shot transfer to a harder split.

Per seed, one MASPRM job (`experiments/configs/masprm.py:<scale>`, `<runs_dir>/masprm-<config
hash>`) trains the PRM from MCTS over the base model's transcripts; every strategy then runs
with the base policy (temperature 0.7, top-p 0.95, MASPRM's) on the same test questions, the
ORM being the PRM read at an episode's final step. Each row prints the responses (samples) and
tokens it spent per question, measured. Orderings: the paired sign test on the questions one
strategy solves and the other does not (seeds pooled). Results per seed and split are cached
beside the run (`search-<split>.json`).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from algorithms.prm import masprm, search
from envs.data.task_instances import load_instances
from experiments import prm, rl
from experiments.configs import masprm as masprm_configs
from experiments.tables import figure, launch_train, train_missing, write_md_csv
from experiments.tables.at_grpo import finished, format_percent, sign_test_p_value
from marft.logging import config_hash
from marft.models.heads import make_scorer
from marft.models.hf import load_scored_lm
from marft.rollout.engine import RolloutConfig, model_sampler

CONFIG_FILE = os.path.join(os.path.dirname(masprm_configs.__file__), "masprm.py")
QUESTIONS = 128
# split name -> task.env overrides (the PRM is trained on the default split only)
SPLITS = {"test": {}, "harder": {"min_steps": 3, "max_steps": 3}}
SPLIT_LABELS = {"test": "test (2 operations)",
                "harder": "harder split (3 operations), zero-shot PRM"}
# (name, label, run(workflows, sampler, tokenizer, key, prm) -> (outcomes, spend)); budgets
# of about 15 agent responses a question (a pass is 3), except the pass itself.
STRATEGIES: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    ("straight_through", "straight-through (one pass)",
     lambda w, s, t, k, p: search.straight_through(w, s, t, k)),
    ("majority_vote", "majority vote, 5 passes",
     lambda w, s, t, k, p: search.majority_vote(w, s, t, k, n=5)),
    ("best_of_n", "Best-of-5, ORM",
     lambda w, s, t, k, p: search.best_of_n(w, s, t, k, n=5, scorer=p)),
    ("beam", "PRM beam search, 5 per step",
     lambda w, s, t, k, p: search.beam_search(w, s, t, k, scorer=p, width=5)),
    ("mcts", "PRM-MCTS + ORM, 3 children, 12 simulations",
     lambda w, s, t, k, p: search.prm_mcts(w, s, t, k, scorer=p, orm=p, children=3,
                                           simulations=12, c=2.0)),
)
PAPER = (("GSM8K", "+30.7 EM"), ("MATH", "+22.9 EM"), ("GSM8K-trained PRM on MATH", "+8.4 EM"))


def run_config(scale: str, seed: int) -> Any:
  config = masprm_configs.get_config(scale)
  config.seed = seed
  return config


def run_dir(runs_dir: str, config: Any) -> str:
  return os.path.join(runs_dir, f"masprm-{config_hash(config.to_dict())}")


def train_prms(scale: str, seeds: int, runs_dir: str, workers: int) -> dict[int, str]:
  """Trains every missing seed's PRM; returns seed -> run directory."""
  runs = {s: run_dir(runs_dir, run_config(scale, s)) for s in range(seeds)}
  todo = [(s, d) for s, d in runs.items() if not finished(d, run_config(scale, s).total_steps)]
  print(f"MASPRM table ({scale}): {len(runs) - len(todo)} of {len(runs)} PRMs trained",
        flush=True)
  if todo and scale != "paper":
    rl.base_model(run_config(scale, 0))
  train_missing(todo, lambda s, workdir: launch_train(f"{CONFIG_FILE}:{scale}", s, workdir),
                workers)
  return runs


def run_strategies(config: Any, workdir: str, split: str) -> dict[str, Any]:
  """Every strategy on the split's first `QUESTIONS` test questions, with the base policy and
  the run's PRM: per strategy, each question's success, and what was spent."""
  cache = os.path.join(workdir, f"search-{split}.json")
  if os.path.exists(cache):
    with open(cache) as f:
      return json.load(f)
  config = config.copy_and_resolve_references()
  config.task.env.update(SPLITS[split])
  setup = rl.setup(config)
  model, _ = load_scored_lm(os.path.join(workdir, prm.EXPORT), dtype=config.model.dtype)
  scorer = make_scorer(model, setup.tokenizer.pad_id, link=masprm.prm_value)
  rollout_config = RolloutConfig(k=1, tree=False, max_new_tokens=config.rollout.max_new_tokens,
                                 temperature=config.prm.temperature, top_p=config.prm.top_p)
  sampler = model_sampler(setup.model, setup.tokenizer, rollout_config)
  instances = load_instances(config.task.name, setup.task_cfg, QUESTIONS)
  results = {}
  for name, _, strategy in STRATEGIES:
    workflows = [setup.make_workflow(t, config.task.workflow, setup.task_cfg["max_turns"])
                 for t in instances]
    started = time.perf_counter()
    outcomes, spend = strategy(workflows, sampler, setup.tokenizer,
                               jax.random.key(config.seed), scorer)
    results[name] = {"success": [bool(o.success) for o in outcomes],
                     "samples": [o.samples for o in outcomes],
                     "tokens": [o.tokens for o in outcomes],
                     "seconds": time.perf_counter() - started,
                     **spend.metrics(len(outcomes))}
    print(f"  seed {config.seed} {split} {name}: {np.mean(results[name]['success']):.3f}",
          flush=True)
  with open(cache, "w") as f:
    json.dump(results, f)
  return results


def write_table(results: dict[tuple[int, str], dict], scale: str, seeds: int,
                prm_evals: list[dict], results_dir: str) -> list[str]:
  """`results[(seed, split)][strategy]` -> masprm.md / .csv / .png."""
  md = ["# MASPRM table, " + scale + " scale", "",
        "Math (2 operations on numbers 2..5) solved by MARFT's sequential trio (reasoner -> actor "
        "-> verifier, one pass), the tiny base model pretrained here. A PRM (the base model "
        "plus a value head) is trained per seed on the mean values of multi-agent MCTS over "
        "the base's own transcripts (`experiments/configs/masprm.py`); then each strategy runs "
        f"the base policy (temperature 0.7, top-p 0.95) on the same {QUESTIONS} test questions. "
        "Success = the chosen episode's final answer is right. Samples and tokens = agent "
        f"responses and their tokens spent per question, measured. Mean ± std over {seeds} "
        "seed(s). Made by `python -m launch.reproduce --table=masprm`.", ""]
  rows = []
  for split in SPLITS:
    md += [f"## {SPLIT_LABELS[split]}", "",
           "| strategy | success % | samples / question | tokens / question | leaves per "
           "generate call | seconds |", "|---|---|---|---|---|---|"]
    for name, label, _ in STRATEGIES:
      per_seed = [results[(s, split)][name] for s in range(seeds)]
      rates = [float(np.mean(r["success"])) for r in per_seed]
      samples = float(np.mean([r["samples_per_question"] for r in per_seed]))
      tokens = float(np.mean([r["tokens_per_question"] for r in per_seed]))
      leaves = float(np.mean([r["leaves_per_call"] for r in per_seed]))
      seconds = float(np.mean([r["seconds"] for r in per_seed]))
      md.append(f"| {label} | {format_percent(rates)} | {samples:.1f} | {tokens:.1f} | "
                f"{leaves:.1f} | {seconds:.0f} |")
      rows.append({"split": split, "strategy": name, "success_mean": np.mean(rates),
                   "success_std": np.std(rates), "seeds": seeds,
                   "samples_per_question": samples, "tokens_per_question": tokens,
                   "leaves_per_call": leaves})
    md += ["", "Paired comparisons (questions solved by one and not the other, seeds pooled; "
           "one-sided exact sign test):", ""]
    for better, worse in (("mcts", "majority_vote"), ("beam", "majority_vote"),
                          ("mcts", "straight_through"), ("beam", "straight_through"),
                          ("majority_vote", "straight_through"), ("best_of_n", "majority_vote")):
      gained = lost = 0
      for s in range(seeds):
        a = np.asarray(results[(s, split)][better]["success"])
        b = np.asarray(results[(s, split)][worse]["success"])
        gained += int((a & ~b).sum())
        lost += int((~a & b).sum())
      p = sign_test_p_value(gained, lost)
      md.append(f"- {better} > {worse}: +{gained} / -{lost} questions, p = {p:.3g} "
                f"({'holds' if p < 0.05 else 'does NOT hold'} at 5%)")
    md.append("")
  md += ["## The PRMs", "",
         "| seed | trees kept / searched | examples | root value | held-out AUC (final step) "
         "| value correct | value wrong |", "|---|---|---|---|---|---|---|"]
  for s, e in enumerate(prm_evals):
    md.append(f"| {s} | {e.get('data/trees_kept', 0):.0f} / {e.get('data/trees', 0):.0f} | "
              f"{e.get('data/examples', 0):.0f} | {e.get('data/root_value', 0):+.2f} | "
              f"{e.get('eval/auc', float('nan')):.3f} | {e.get('eval/value_correct', 0):+.2f} | "
              f"{e.get('eval/value_wrong', 0):+.2f} |")
  md += ["", "## The paper", "",
         "MASPRM (v1): PRM-guided decoding + ORM vs one straight-through MAS pass:", ""]
  md += [f"- {bench}: {gain}" for bench, gain in PAPER]
  md.append("")
  paths = write_md_csv(results_dir, "masprm", md, rows)
  paths.append(_plot(rows, os.path.join(results_dir, "masprm.png")))
  return paths


def _plot(rows: list[dict], path: str) -> str:
  with figure(path, figsize=(8, 3.5)) as (_, ax):
    names = [name for name, _, _ in STRATEGIES]
    width = 0.8 / len(SPLITS)
    for i, split in enumerate(SPLITS):
      got = {r["strategy"]: r for r in rows if r["split"] == split}
      ax.bar(np.arange(len(names)) + i * width, [100 * got[n]["success_mean"] for n in names],
             width, yerr=[100 * got[n]["success_std"] for n in names], label=SPLIT_LABELS[split])
    ax.set_xticks(np.arange(len(names)) + width * (len(SPLITS) - 1) / 2, names, fontsize=8)
    ax.set_ylabel("success %")
    ax.legend(fontsize=8)
  return path


def _prm_evals(workdir: str) -> dict[str, float]:
  """The run's data statistics and final evaluation, merged."""
  merged: dict[str, float] = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for record in map(json.loads, filter(str.strip, f)):
      merged.update({k: v for k, v in record.items() if k.startswith(("data/", "eval/"))})
  return merged


def reproduce(*, scale: str, seeds: int, results_dir: str, runs_dir: str, workers: int = 1
              ) -> list[str]:
  """Trains (or reuses) each seed's PRM, runs every strategy on both splits, writes the table."""
  runs = train_prms(scale, seeds, runs_dir, workers)
  results = {(s, split): run_strategies(run_config(scale, s), runs[s], split)
             for s in range(seeds) for split in SPLITS}
  return write_table(results, scale, seeds, [_prm_evals(runs[s]) for s in range(seeds)],
                     results_dir)
