"""Tiny base model of the MATPO table: search QA (single agent, planner and worker) SFT on
corrupted expert demonstrations, a quarter of the answers and summaries the top hit's tail.

  python -m launch.pretrain --config=experiments/configs/pretrain_search_qa.py

Questions of 1 to 2 hops over the default knowledge base (200 invented people, 3 relations),
clean top-3 search. seq_len: the longest prompt (a worker or single agent after three searches)
is under 200 characters.

Measured (2 CPU cores, shared, seed 0): about 45 min; on 64 test questions greedy 54.7% single
agent / 51.6% planner and worker, temperature 1 21.9% / 18.8%. At 800 steps (loss still
falling) the same recipe gave 9.4% / 4.7% greedy and 1.6% sampled: too weak for RL to learn
from.
"""
from experiments import pretrain


def get_config():
  c = pretrain.default_config("search_qa", corruption_alphabet="abdefgiklmnoprstuvzSADF ",
                              seq_len=224, total_steps=2400, corruption=0.1, heuristic=0.25,
                              max_new_tokens=14)
  c.task.env = dict(min_hops=1, max_hops=2)
  c.task.num_train_tasks = 2000
  return c
