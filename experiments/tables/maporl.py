"""The MAPoRL table (Park et al. 2025): accuracy at each turn of a two-agent discussion, for the
base model and for the agents co-trained with MAPoRL, each trained agent alone vs with its
partner, the incentive sweep (alpha in {0, 0.5, 1, 2}) and a verifier ablation.

Every (cell, seed), a cell being (alpha, variant), is one run of
`experiments/configs/maporl.py:<scale>,<alpha>` (with the variant's overrides) in
`<runs_dir>/maporl-<config hash>` (the directory `launch.train` picks by default, so runs made
by hand are reused). The base rows are the runs' step-0 evaluations (one base model; one per
verifier kind, since the scores shown differ). For every run the base team and the exported
trained team discuss the same fixed test questions again, greedy, with the run's verifier
scoring every answer; each question's final-turn accuracy is paired (an exact sign test on the
questions that changed).
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
from experiments import maporl as maporl_job
from experiments import pretrain, rl, verifier
from experiments.configs import maporl as maporl_configs
from experiments.tables import figure, launch_train, train_missing, write_md_csv
from experiments.tables.at_grpo import (finished, format_percent, seed_values,
                                        sign_test_p_value, verdict)
from marft.logging import config_hash
from marft.models.hf import load_pretrained
from marft.rollout.engine import RolloutConfig, collect, model_sampler
from marft.tokenizers import CharTokenizer

CONFIG_FILE = os.path.join(os.path.dirname(maporl_configs.__file__), "maporl.py")
MODES = ("greedy", "sampled")
# A cell: (alpha, variant). The incentive sweep as MAPoRL states it, then the ablations: the
# nearly exact stand-in verifier (`experiments.maporl.VERIFIER_KINDS`), and a penalty for an
# unparseable answer on the scale of the rewards (-1) in place of MAPoRL's -10.
VARIANTS = {"": {}, "stand_in": {"verifier.kind": "stand_in"},
            "penalty1": {"algo.penalty": -1.0},
            "stand_in,penalty1": {"verifier.kind": "stand_in", "algo.penalty": -1.0},
            "stand_in,penalty1,long": {"verifier.kind": "stand_in", "algo.penalty": -1.0,
                                       "total_steps": 100, "eval_every": 25,
                                       "checkpoint_every": 25}}
VARIANT_LABELS = {"": "", "stand_in": ", stand-in verifier", "penalty1": ", penalty -1",
                  "stand_in,penalty1": ", stand-in verifier, penalty -1",
                  "stand_in,penalty1,long": ", stand-in verifier, penalty -1, 100 steps"}
SWEEP_CELLS = ((0.0, ""), (0.5, ""), (1.0, ""), (2.0, ""))
ABLATION_CELLS = ((0.0, "stand_in"), (1.0, "stand_in"), (0.0, "penalty1"),
                  (0.0, "stand_in,penalty1"), (0.0, "stand_in,penalty1,long"))
# MAPoRL (Park et al. 2025; Phi-3-mini, Llama-3-8B, Qwen2.5-3B on GSM8K and ANLI, two agents,
# three turns), as its abstract and Sec. 5 state them; no per-turn number could be read here.
PAPER_CLAIMS = (
    "off-the-shelf models do not improve over the turns of a discussion (flat or falling)",
    "MAPoRL-trained agents gain accuracy as the discussion goes on (later turns above turn 1)",
    "training one agent alone does not teach collaboration: the gain needs co-training",
    "the incentives (alpha) add to the gain of the influence-aware reward alone")


def label(cell: tuple[float, str]) -> str:
  return f"MAPoRL, alpha {cell[0]:g}{VARIANT_LABELS[cell[1]]}"


def verifier_kind(cell: tuple[float, str]) -> str:
  return VARIANTS[cell[1]].get("verifier.kind", "model")


def run_config(cell: tuple[float, str], scale: str, seed: int) -> Any:
  config = maporl_configs.get_config(f"{scale},{cell[0]:g}")
  config.update_from_flattened_dict(VARIANTS[cell[1]])
  config.seed = seed
  return config


def run_dir(runs_dir: str, config: Any) -> str:
  return os.path.join(runs_dir, f"maporl-{config_hash(config.to_dict())}")


# The cells with `seeds` seeds: MAPoRL as stated (alpha 0: the influence-aware reward alone),
# and the one ablation that keeps the base's accuracy.
SEEDED_CELLS = ((0.0, ""), (0.0, "stand_in,penalty1"))


def cells_of(seeds: int, ablation_seeds: int) -> list[tuple[tuple[float, str], int]]:
  """The `SEEDED_CELLS` get `seeds` seeds, every other cell `ablation_seeds`."""
  return [(c, s) for c in SWEEP_CELLS + ABLATION_CELLS
          for s in range(seeds if c in SEEDED_CELLS else ablation_seeds)]


def _train(cell: tuple[float, str], scale: str, seed: int, workdir: str) -> int:
  return launch_train(f"{CONFIG_FILE}:{scale},{cell[0]:g}", seed, workdir, VARIANTS[cell[1]])


def run_all(scale: str, seeds: int, ablation_seeds: int, runs_dir: str, workers: int = 1
            ) -> dict[tuple[tuple[float, str], int], str]:
  """Runs every missing cell; returns (cell, seed) -> run directory."""
  runs = {(c, s): run_dir(runs_dir, run_config(c, scale, s))
          for c, s in cells_of(seeds, ablation_seeds)}
  todo = [(key, d) for key, d in runs.items()
          if not finished(d, run_config(key[0], scale, key[1]).total_steps)]
  print(f"MAPoRL table ({scale}): {len(runs) - len(todo)} of {len(runs)} runs done", flush=True)
  if todo and scale in pretrain.BASE_MODELS:  # the shared base model and verifier first, once
    config = run_config(SWEEP_CELLS[0], scale, 0)
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
  scorer = maporl_job.make_scorer(config, models[0].config.vocab_size, tokenizer.pad_id)
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


def write_table(runs, scale: str, seeds: int, ablation_seeds: int, results_dir: str
                ) -> list[str]:
  """Writes `maporl.md`, `.csv` and `.png` (`maporl_<scale>.*` off the tiny scale)."""
  config = run_config(SWEEP_CELLS[0], scale, 0)
  test_size, turns = config.task.eval_tasks, config.task.env.max_turns
  cells = [c for c in SWEEP_CELLS + ABLATION_CELLS if any(k[0] == c for k in runs)]
  kinds = sorted({verifier_kind(c) for c in cells}, key=lambda k: k != "model")
  # The base team's step-0 evaluation and per-question accuracy, under each verifier kind.
  base_cell = {kind: next(c for c in cells if verifier_kind(c) == kind) for kind in kinds}
  base_accuracy = {kind: final_turn_accuracy(run_config(base_cell[kind], scale, 0),
                                             [rl.base_model_path(config)]) for kind in kinds}
  pairs = {key: paired(run_config(key[0], scale, key[1]), d,
                       base_accuracy[verifier_kind(key[0])]) for key, d in sorted(runs.items())}
  turn_metric = lambda mode, k: f"eval/{mode}_turn{k}_accuracy"
  base_label = {"model": "Base model", "stand_in": "Base model, stand-in verifier"}
  md = [f"# MAPoRL table, {scale} scale", "",
        f"Math (two operations on numbers 2..5), two agents discussing for {turns} turns, "
        f"{test_size} fixed test questions; accuracy = the fraction of the agents' answers at a "
        "turn that are right. Greedy = temperature 0, sampled = temperature 1. A verifier "
        "scores every answer and the score is shown to both agents at the next turn: the "
        "trained verifier (`experiments/configs/verifier_math.py`), or in the ablation rows "
        "the nearly exact stand-in scores (U[0.5, 1) for a right answer, U[0, 0.6) for a wrong "
        "one; AUC 0.98). Alpha sets all four incentives a0..a3; an unparseable answer earns "
        "MAPoRL's -10, or -1 in the `penalty -1` rows. Mean ± std over seeds "
        f"({seeds} for alpha 0 and for alpha 0 with the stand-in verifier and penalty -1, "
        f"{ablation_seeds} for the other rows). Base = the runs' step-0 "
        "evaluation. Paired: each run's trained team and the base team on the same questions, "
        "greedy, final turn: questions gained / lost and the one-sided exact sign test, per "
        f"seed. Made by `python -m launch.reproduce --table=maporl --scale={scale} "
        f"--seeds={seeds}`.", "",
        "## Accuracy at each turn of the discussion", "",
        "| | " + " | ".join(f"{m} turn {k}" for m in MODES for k in range(1, turns + 1))
        + " | paired, final turn (per seed): gained / lost, p |",
        "|---|" + "---|" * (2 * turns + 1)]
  rows_csv: list[dict[str, Any]] = []

  def record(row: str, metric: str, values: Sequence[float]) -> None:
    rows_csv.append({"row": row, "metric": metric, "mean": 100 * np.mean(values),
                     "std": 100 * np.std(values), "seeds": len(values)})

  def turn_row(row: str, cell, which: str) -> str:
    cols = []
    for mode in MODES:
      for k in range(1, turns + 1):
        values = seed_values(runs, cell, which, turn_metric(mode, k))
        record(row, f"{mode}_turn{k}", values)
        cols.append(format_percent(values))
    return f"| {row} | " + " | ".join(cols) + " |"

  for kind in kinds:
    md.append(turn_row(base_label[kind], base_cell[kind], "first") + " |")
    for cell in (c for c in cells if verifier_kind(c) == kind):
      seeds_of = sorted(s for c, s in runs if c == cell)
      paired_text = "; ".join(f"{pairs[cell, s]['gained']} / {pairs[cell, s]['lost']}, "
                              f"p = {pairs[cell, s]['p']:.2g}" for s in seeds_of)
      md.append(turn_row(label(cell), cell, "last") + f" {paired_text} |")
      for s in seeds_of:
        rows_csv.append({"row": label(cell), "metric": f"paired_p_seed{s}",
                         "mean": pairs[cell, s]["p"], "std": 0.0, "seeds": 1})

  md += ["", "## Each trained agent alone vs with its partner (final turn)", "",
         "Alone: one agent revising its own answer over the same turns, its own score shown "
         "(the paper's claim: the gain comes from collaboration).", "",
         "| | " + " | ".join(f"{m}: team | {m}: agent 1 alone | {m}: agent 2 alone"
                            for m in MODES) + " |",
         "|---|" + "---|" * 6]
  final = lambda cell, which, prefix, mode: seed_values(runs, cell, which,
                                                    f"eval/{prefix}{mode}_accuracy")
  for kind in kinds:
    for row, cell, which in ([(base_label[kind], base_cell[kind], "first")]
                             + [(label(c), c, "last") for c in cells
                                if verifier_kind(c) == kind]):
      texts = []
      for mode in MODES:
        for prefix in ("", "alone0/", "alone1/"):
          values = final(cell, which, prefix, mode)
          record(row, f"{prefix}{mode}_final", values)
          texts.append(format_percent(values))
      md.append(f"| {row} | " + " | ".join(texts) + " |")

  # The paired evaluations re-run the exported policies and the base: they must reproduce the
  # runs' own greedy evaluations (final and step 0), question for question in the mean.
  mismatched = [f"{label(c)} seed {s}" for (c, s), pair in pairs.items()
                if abs(pair["trained"] - seed_values(runs, c, "last", "eval/greedy_accuracy")[
                    sorted(x for y, x in runs if y == c).index(s)]) > 1e-6]
  mismatched += [base_label[k] for k in kinds if abs(base_accuracy[k].mean() - seed_values(
      runs, base_cell[k], "first", "eval/greedy_accuracy")[0]) > 1e-6]
  md += ["", "Re-evaluated apart from the runs, the exported policies and the base reproduce "
         "the runs' own greedy final-turn accuracies: "
         + ("yes, every run." if not mismatched else "NO: " + ", ".join(mismatched) + ".")]
  md += ["", "## What holds here (greedy, means over seeds)", ""]
  for kind in kinds:
    base = np.mean(final(base_cell[kind], "first", "", "greedy"))
    base_first = np.mean(seed_values(runs, base_cell[kind], "first", turn_metric("greedy", 1)))
    md.append(f"- {base_label[kind]}: final turn ({100 * base:.1f}) > turn 1 "
              f"({100 * base_first:.1f}): {verdict(base, base_first, test_size)}.")
    for cell in (c for c in cells if verifier_kind(c) == kind):
      team = np.mean(final(cell, "last", "", "greedy"))
      first = np.mean(seed_values(runs, cell, "last", turn_metric("greedy", 1)))
      alone = np.mean([np.mean(final(cell, "last", f"alone{p}/", "greedy")) for p in (0, 1)])
      md.append(f"- {label(cell)}: trained team ({100 * team:.1f}) > base team "
                f"({100 * base:.1f}): {verdict(team, base, test_size)}; final turn > turn 1 "
                f"({100 * first:.1f}): {verdict(team, first, test_size)}; team > its agents "
                f"alone ({100 * alone:.1f}): {verdict(team, alone, test_size)}.")
  vev = _verifier_evals(config)
  if vev:
    md += ["", "## The verifier", "",
           f"Held-out AUC of correct vs wrong answers (the base model's own answers to "
           f"{int(vev['eval/examples'])} test-question discussion answers, "
           f"{100 * vev['eval/correct_fraction']:.1f}% correct): **{vev['eval/auc']:.3f}**; "
           f"mean score of a correct answer {vev['eval/score_correct']:.2f}, of a wrong one "
           f"{vev['eval/score_wrong']:.2f}. The stand-in scores' AUC is 1 - 1/60 = 0.983."]
    rows_csv.append({"row": "verifier", "metric": "auc", "mean": vev["eval/auc"], "std": 0.0,
                     "seeds": 1})
  md += ["", "## The paper", "", "MAPoRL (Park et al. 2025, GSM8K and ANLI, 2 agents, 3 turns) "
         "reports, and this table checks:"] + [f"- {claim}" for claim in PAPER_CLAIMS]
  stem = "maporl" if scale == "tiny" else f"maporl_{scale}"
  paths = write_md_csv(results_dir, stem, md + [""], rows_csv)
  png = os.path.join(results_dir, f"{stem}.png")
  _plot(runs, cells, base_cell, turns, png)
  return paths + [png]


def _plot(runs, cells, base_cell, turns: int, path: str) -> None:
  """Greedy accuracy at each turn: the base and each cell's trained team (seed means)."""
  x = np.arange(1, turns + 1)
  with figure(path, figsize=(8.4, 3.6)) as (_, ax):
    curve = lambda cell, which: [100 * np.mean(seed_values(runs, cell, which,
                                                        f"eval/greedy_turn{k}_accuracy"))
                                 for k in x]
    for kind, cell in base_cell.items():
      ax.plot(x, curve(cell, "first"), "k--" if kind == "model" else "k:",
              label="base" + (", stand-in verifier" if kind == "stand_in" else ""))
    for cell in cells:
      ax.plot(x, curve(cell, "last"), "o-" if not cell[1] else "s:", label=label(cell))
    ax.set_xticks(x)
    ax.set_xlabel("discussion turn")
    ax.set_ylabel("greedy test accuracy %")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))


def reproduce(*, scale: str, seeds: int, results_dir: str, runs_dir: str, workers: int = 1,
              ablation_seeds: int = 1) -> list[str]:
  """Runs (or reuses) every cell of the table and writes it; returns the paths written."""
  runs = run_all(scale, seeds, ablation_seeds, runs_dir, workers)
  return write_table(runs, scale, seeds, ablation_seeds, results_dir)
