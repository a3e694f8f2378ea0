"""Tiny base model for Plan-Path: SFT on demonstrations of every role, half of them the myopic
planner's (straight at the goal, blind to walls), then 30% randomly edited.

  python -m launch.pretrain --config=experiments/configs/pretrain_plan_path.py

The base model walks straight at the goal: it solves the grids that need no detour and bumps
into walls on the others — the habit AT-GRPO must unlearn.
"""
from experiments import pretrain


def get_config():
  return pretrain.default_config("plan_path", corruption_alphabet="UDLR", total_steps=400,
                                 heuristic=0.5)
