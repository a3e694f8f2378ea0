"""Pretrain a tiny base model: `python -m launch.pretrain [--config=experiments/configs/pretrain_X.py]`.

Writes `runs/base/<task>-<config hash>/` (checkpoints, metrics) and its Hugging Face export
`hf/`; rerunning the same config reuses (or resumes) it. RL configs find it by the same hash.
"""
from __future__ import annotations

import os

from absl import app, flags

import experiments.configs
from experiments import pretrain
from launch import train
from marft import trainer

DEFAULT_CONFIG = os.path.join(os.path.dirname(experiments.configs.__file__),
                              "pretrain_plan_path.py")


def main(argv: list[str]) -> None:
  config, mesh = train.prepare_run(argv)
  workdir = flags.FLAGS.workdir or pretrain.base_model_dir(config)
  print(f"workdir: {workdir}", flush=True)
  trainer.run(config, workdir, pretrain.build(config, mesh))


if __name__ == "__main__":
  train.define_config_flag(DEFAULT_CONFIG)
  app.run(main, flags_parser=train.parse_flags)
