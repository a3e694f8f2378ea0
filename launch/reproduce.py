"""Reproduce a paper table: run (or reuse) every cell, several seeds, and write the results.

  python -m launch.reproduce --table=at_grpo [--scale=tiny|small|paper] [--seeds=3] [--workers=2]
  python -m launch.reproduce --table=marft --seeds=3 [--workers=2]
  python -m launch.reproduce --table=maporl --seeds=3 [--workers=2]
  python -m launch.reproduce --table=matpo --seeds=3 [--workers=2]
  python -m launch.reproduce --table=masprm --seeds=3
  python -m launch.reproduce --table=agentprm --seeds=3 [--workers=2]
  python -m launch.reproduce --table=qmix_two_step --seeds=5
  python -m launch.reproduce --table=qmix_jaxmarl --seeds=4 [--jaxmarl_root=PATH]

Each table is a module `experiments/tables/<table>.py` with `reproduce(*, scale, seeds,
results_dir, runs_dir, ...) -> paths`; it writes `<results_dir>/<table>.md` (mean ± std per
cell, the paper's numbers beside ours), `.csv`, and a figure where the table has curves.
Finished runs are found by config hash and reused; interrupted ones resume.
"""
from __future__ import annotations

import importlib
import inspect

from absl import app, flags

TABLES = ("at_grpo", "marft", "maporl", "matpo", "masprm", "agentprm", "qmix_two_step", "qmix_jaxmarl")

_TABLE = flags.DEFINE_enum("table", None, TABLES, "Which table.", required=True)
_SCALE = flags.DEFINE_enum("scale", "tiny", ["tiny", "small", "paper"],
                           "Model scale of the runs.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per cell.", lower_bound=1)
_RESULTS_DIR = flags.DEFINE_string("results_dir", "results", "Where the table is written.")
_RUNS_DIR = flags.DEFINE_string("runs_dir", "runs", "Where runs live (and are reused from).")
_WORKERS = flags.DEFINE_integer("workers", 1, "Runs at once, for tables made of many runs.",
                                lower_bound=1)
_TASKS = flags.DEFINE_list("tasks", None, "Only these columns (at_grpo), e.g. plan_path,sokoban.")
_JAXMARL_ROOT = flags.DEFINE_string("jaxmarl_root", None,
                                    "A JaxMARL checkout, to run its QMIX beside ours (qmix_jaxmarl).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  module = importlib.import_module(f"experiments.tables.{_TABLE.value}")
  options = {"workers": _WORKERS.value, "tasks": _TASKS.value,
             "jaxmarl_root": _JAXMARL_ROOT.value}
  accepted = inspect.signature(module.reproduce).parameters
  for name, value in options.items():
    if value is not None and name not in accepted and value != 1:
      raise app.UsageError(f"--{name} does not apply to --table={_TABLE.value}")
  extra = {k: v for k, v in options.items() if k in accepted and v is not None}
  paths = module.reproduce(scale=_SCALE.value, seeds=_SEEDS.value,
                           results_dir=_RESULTS_DIR.value, runs_dir=_RUNS_DIR.value, **extra)
  print("wrote " + ", ".join(paths))


if __name__ == "__main__":
  app.run(main)
