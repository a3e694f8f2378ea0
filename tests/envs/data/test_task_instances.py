"""Evaluation sets round-trip through tensorflow-datasets (array_record, no TensorFlow)."""
import json
import sys
import types

import pytest

from envs import registry
from envs.data.task_instances import load_instances


@pytest.fixture
def fake_task(monkeypatch):
  module = types.ModuleType("fake_counting_task")
  module.generate_task = lambda seed, split, cfg: {"seed": seed, "split": split,
                                                   "n": seed * cfg["scale"]}
  module.load_jsonl = lambda path: [json.loads(line) for line in open(path)]
  monkeypatch.setitem(sys.modules, "fake_counting_task", module)
  monkeypatch.setitem(registry.TASKS, "fake", "fake_counting_task")
  return module


def test_instances_equal_the_generator_and_are_reused(tmp_path, fake_task):
  data_dir = str(tmp_path / "tfds")
  got = load_instances("fake", {"scale": 3}, 7, data_dir=data_dir)
  assert got == [{"seed": i, "split": "test", "n": 3 * i} for i in range(7)]
  fake_task.generate_task = lambda *a: pytest.fail("the stored set must be reused")
  assert load_instances("fake", {"scale": 3}, 7, data_dir=data_dir) == got
  # Another config is another dataset.
  fake_task.generate_task = lambda seed, split, cfg: {"seed": seed, "scale": cfg["scale"]}
  assert load_instances("fake", {"scale": 5}, 2, data_dir=data_dir)[1] == {"seed": 1, "scale": 5}


def test_jsonl_records_go_through_the_same_path(tmp_path, fake_task):
  path = tmp_path / "problems.jsonl"
  records = [{"question": f"q{i}", "answer": str(i)} for i in range(4)]
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  assert load_instances("fake", {}, jsonl=str(path), data_dir=str(tmp_path / "tfds")) == records
