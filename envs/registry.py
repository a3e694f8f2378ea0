"""Text tasks by name. Each task module exposes the same five names:

- `NAME: str`
- `default_config() -> dict`: the tiny-scale defaults (sizes, difficulty, max_turns, ...).
- `generate_task(seed: int, split: str, cfg: dict) -> dict`: one JSON-serialisable instance of
  the `"train"` or `"test"` split; the two splits never share an instance.
- `make_workflow(task: dict, kind: str, cfg: dict, max_turns: int, prompt_style: str =
  "compact") -> Workflow`: `kind` is `"single"` (one agent) or `"mas"` (the paper's multi-agent
  workflow); `prompt_style` one of the module's `PROMPT_STYLES` (`envs.chat`).
- `PROMPT_STYLES: tuple[str, ...]`: the prompt styles its workflows render.
"""
from __future__ import annotations

import importlib
from types import ModuleType

TASKS = {
    "plan_path": "envs.plan_path",
    "sokoban": "envs.sokoban",
    "sudoku": "envs.sudoku",
    "math": "envs.math_task",
    "code": "envs.code",
    "humaneval": "envs.humaneval",
    "search_qa": "envs.search_qa",
}


def get_task(name: str) -> ModuleType:
  """The task module registered as `name`."""
  if not isinstance(name, str) or name not in TASKS:
    raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
  return importlib.import_module(TASKS[name])
