"""Paper tables, one module each (`reproduce(...) -> paths`), driven by `launch.reproduce`."""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any


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
