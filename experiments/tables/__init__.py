"""Paper tables, one module each (`reproduce(...) -> paths`), driven by `launch.reproduce`."""
from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def launch_train(config: str, seed: int, workdir: str, overrides: dict[str, Any] | None = None
                 ) -> int:
  """One `python -m launch.train --config=<config>` run (a subprocess) with `seed` and dotted
  `overrides` in `workdir`; its exit code."""
  command = [sys.executable, "-m", "launch.train", f"--config={config}", f"--config.seed={seed}",
             *(f"--config.{k}={v}" for k, v in (overrides or {}).items()),
             f"--workdir={workdir}"]
  print("run:", " ".join(command[2:]), flush=True)
  return subprocess.run(command, env=os.environ).returncode


def train_missing(todo: Sequence[tuple[Any, str]], train: Callable[[Any, str], int],
                  workers: int) -> None:
  """`train(key, workdir)` for each `(key, workdir)` of `todo`, `workers` at a time; one
  RuntimeError naming the keys whose runs failed (rerunning resumes them)."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    codes = list(pool.map(lambda item: train(*item), todo))
  failed = [key for (key, _), code in zip(todo, codes) if code]
  if failed:
    raise RuntimeError(f"runs failed: {failed} (rerun to resume them)")


def write_md_csv(results_dir: str, name: str, md: Sequence[str],
                 rows: Sequence[dict[str, Any]]) -> list[str]:
  """Writes `<results_dir>/<name>.md` (the lines `md`) and `.csv` (`rows`, the first row's keys
  as columns); returns both paths."""
  os.makedirs(results_dir, exist_ok=True)
  md_path = os.path.join(results_dir, f"{name}.md")
  with open(md_path, "w") as f:
    f.write("\n".join(md))
  csv_path = os.path.join(results_dir, f"{name}.csv")
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return [md_path, csv_path]


@contextlib.contextmanager
def figure(path: str, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
  """`plt.subplots(*args, **kwargs)` for a table's figure (no display needed); on exit the
  figure is laid out, saved to `path` (120 dpi) and closed."""
  import matplotlib  # noqa: PLC0415 (plotting only where a figure is written)
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, axes = plt.subplots(*args, **kwargs)
  try:
    yield fig, axes
    fig.tight_layout()
    fig.savefig(path, dpi=120)
  finally:
    plt.close(fig)
