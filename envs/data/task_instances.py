"""Fixed evaluation sets as tensorflow-datasets builders (array_record, read as a data source).

Every table evaluates on the same instances: a task's test split, generated once from seeds
`0..N-1` under a task config, or the records of a user-supplied JSONL file (GSM8K/MATH style),
stored as JSON strings. No TensorFlow is needed to build or read them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from envs.registry import get_task

DEFAULT_DATA_DIR = os.path.join("runs", "tfds")


@dataclasses.dataclass
class InstancesConfig(tfds.core.BuilderConfig):
  """Which instances: `task` + `task_config` + `num` test seeds, or the records of `jsonl`."""

  task: str = ""
  task_config_json: str = "{}"
  num: int = 0
  jsonl: str = ""


class TaskInstances(tfds.core.GeneratorBasedBuilder):
  """One record per instance: `{"index": int32, "task": JSON text}`."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "index": np.int32, "task": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"test": self._generate_examples()}

  def _generate_examples(self):
    config = self.builder_config
    if config.jsonl:
      task_module = get_task(config.task)
      for index, task in enumerate(task_module.load_jsonl(config.jsonl)):
        yield index, {"index": index, "task": json.dumps(task)}
      return
    task_module = get_task(config.task)
    task_config = json.loads(config.task_config_json)
    for index in range(config.num):
      task = task_module.generate_task(index, "test", task_config)
      yield index, {"index": index, "task": json.dumps(task)}


def _config(task: str, task_config: dict, num: int, jsonl: str) -> InstancesConfig:
  spec = json.dumps({"task": task, "config": task_config, "num": num, "jsonl": jsonl},
                    sort_keys=True)
  digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
  return InstancesConfig(name=f"{task}_{digest}", task=task,
                         task_config_json=json.dumps(task_config, sort_keys=True), num=num,
                         jsonl=os.path.abspath(jsonl) if jsonl else "")


def load_instances(task: str, task_config: dict, num: int = 0, *, jsonl: str = "",
                   data_dir: str = DEFAULT_DATA_DIR) -> list[dict]:
  """The fixed instances (building the dataset on first use), in index order.

  Runs started together may build the same dataset at once: the first to finish wins, and the
  others read its copy (the content is a function of the config).
  """
  config = _config(task, task_config, num, jsonl)
  builder = TaskInstances(config=config, data_dir=data_dir, file_format="array_record")
  try:
    builder.download_and_prepare()
  except FileExistsError:  # another process finished building it first
    builder = TaskInstances(config=config, data_dir=data_dir, file_format="array_record")
  source = builder.as_data_source(split="test")
  records = sorted((int(r["index"]), r["task"]) for r in source)
  return [json.loads(text.decode() if isinstance(text, bytes) else text) for _, text in records]
