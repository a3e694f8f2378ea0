"""Fuzzes the config entry points: `experiments.common.validate` and `micro_batch_rows`, the
cells of every cell-parametrized config file, and `launch.sweep.expand`."""
import importlib
import math

import ml_collections
from absl import app
from hypothesis import example
from hypothesis import strategies as st

from experiments import common
from launch import sweep
from tests.fuzz.strategies import anything, fuzz, non_finite, texts, wrong_types

# Config files whose `get_config(cell)` takes a cell, and cells they accept.
CELL_CONFIGS = {"at_grpo": ("plan_path,mas_shared,tiny", "code,single_grpo,paper"),
                "agentprm": ("agentprm,tiny",), "maporl": ("tiny", "tiny,0.5"),
                "marft_ppo": ("dual,action,shared,tiny",), "masprm": ("tiny",),
                "matpo": ("matpo,tiny,0",)}
KEYS = ("seed", "total_steps", "eval_every", "checkpoint_every", "log", "log.wandb_mode",
        "model", "model.name", "algo", "algo.micro_batch_rows", "unknown", "log.unknown")
values = st.one_of(wrong_types, non_finite, st.integers(-3, 3), texts,
                   st.sampled_from(["offline", "online", "disabled", "tiny", "small"]),
                   st.dictionaries(st.sampled_from(["name", "wandb_mode", "x"]), anything,
                                   max_size=2))


def _set(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  node = config
  for part in parents:
    if not isinstance(node, ml_collections.ConfigDict):
      return
    if part not in node:
      node[part] = ml_collections.ConfigDict()
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    try:
      with node.unlocked():
        node[leaf] = value
    except TypeError:  # ConfigDict keeps a field's type; --config.* overrides do too
      pass


@fuzz(st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=4),
      st.lists(st.sampled_from(KEYS), max_size=2), examples=30, slow=1500)
@example([("model", {"x": 1})], [])
@example([("model", 5)], [])
@example([("log", 5)], [])
@example([("algo", [1])], [])
def test_validate(changes, removed):
  config = common.base_config(total_steps=10, eval_every=5, checkpoint_every=5)
  config.model = dict(name="tiny")
  for key, value in changes:
    _set(config, key, value)
  for key in removed:
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if isinstance(node, ml_collections.ConfigDict) and leaf in node:
      with node.unlocked():
        del node[leaf]
  try:
    common.validate(config)
  except common.ConfigError as e:
    assert str(e)
  try:
    rows = common.micro_batch_rows(config, 12)
  except common.ConfigError as e:
    assert "algo" in str(e)
  else:
    assert isinstance(rows, int) and rows >= 0 and (rows == 0 or 12 % rows == 0)


@fuzz(anything, examples=10, slow=3000)
@example(None)
def test_validate_not_a_config(value):
  try:
    common.validate(value)
  except common.ConfigError as e:
    assert "config" in str(e)


@fuzz(st.sampled_from(sorted(CELL_CONFIGS)), st.one_of(
    texts, st.lists(st.one_of(st.sampled_from(["tiny", "paper", "plan_path", "mas_shared",
                                               "dual", "action", "shared", "matpo", "agentprm",
                                               "nan", "inf", "-1", "1e400", ""]), texts),
                    max_size=5).map(",".join)), examples=10, slow=2000)
@example("at_grpo", "plan_path,mas_shared")
@example("at_grpo", "")
@example("maporl", "tiny,nan")
@example("matpo", "matpo,tiny,inf")
def test_config_cells(name, cell):
  """A cell is a config that validates, or one ValueError naming the cell."""
  module = importlib.import_module(f"experiments.configs.{name}")
  try:
    config = module.get_config(cell)
  except ValueError as e:
    assert repr(cell) in str(e), str(e)
  else:
    common.validate(config)
    for value in _leaves(config):
      assert not (isinstance(value, float) and not math.isfinite(value)), (cell, value)


def _leaves(config):
  for value in config.values():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value)
    else:
      yield value


def test_accepted_cells():
  for name, cells in CELL_CONFIGS.items():
    module = importlib.import_module(f"experiments.configs.{name}")
    for cell in cells:
      common.validate(module.get_config(cell))


@fuzz(st.lists(st.one_of(texts, st.builds(lambda k, v: f"{k}={v}", texts, texts), wrong_types),
               max_size=3), examples=10, slow=3000)
@example([None])
@example(["a=1,2", 3])
def test_sweep_expand(axes):
  try:
    grid = sweep.expand(axes)
  except app.UsageError as e:
    assert "--sweep" in str(e)
  else:
    assert all(isinstance(axis, str) for axis in axes)
    assert len(grid) == math.prod(len(axis.partition("=")[2].split(",")) for axis in axes)
    for point in grid:
      assert len(point) == len(axes) and all(o.startswith("--config.") for o in point)
