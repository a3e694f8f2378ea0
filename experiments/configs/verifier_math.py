"""The MAPoRL verifier of the math discussions (`experiments/verifier.py`).

  python -m launch.train --config=experiments/configs/verifier_math.py

The tiny base of the MAPoRL table (`pretrain_math_maporl.py`) answers 1,000 training questions
in 2-agent, 3-turn discussions, 2 discussions each at temperature 1 (12 answers a question),
plus the expert's and a corrupted answer; the set is balanced per question (at most 6 of each
class); the whole model (trunk and a linear head) trains 400 steps of 64 examples. Held out: the
base's answers to 256 test questions, unbalanced, as the verifier meets them in a discussion.
"""
from experiments import common


def get_config():
  c = common.base_config(total_steps=400, eval_every=200, checkpoint_every=200, log_every=20,
                         max_to_keep=1)
  c.model = dict(name="tiny", path="", tokenizer="", base="math_maporl", dtype="float32")
  c.task = dict(name="math", workflow="discussion", prompt_style="compact",
                env=dict(min_steps=2, max_steps=2, max_number=5, max_turns=3, agents=2))
  c.policies = dict(mapping={"agent1": 0, "agent2": 0})
  c.rollout = dict(max_new_tokens=8)
  c.algo = dict(name="verifier")
  c.verifier = dict(samples=2, train_questions=1000, eval_questions=256, per_class=6,
                    hidden_dims=(), batch_size=64)
  c.optimizer = dict(lr=3e-4, warmup_steps=40, schedule="cosine", weight_decay=0.0, b1=0.9,
                     b2=0.999, eps=1e-8, max_grad_norm=1.0)
  return c
