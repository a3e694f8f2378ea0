"""AgentPRM / InversePRM (`experiments/agentprm.py`), one config per `<phase>,<scale>`.

  python -m launch.train --config=experiments/configs/agentprm.py:agentprm,tiny \\
      --workdir=runs/agentprm/prm0                                     # PRM phase, AgentPRM
  python -m launch.train --config=experiments/configs/agentprm.py:inverse,tiny \\
      --workdir=runs/agentprm/inverse0                                 # PRM phase, InversePRM
  python -m launch.train --config=experiments/configs/agentprm.py:policy,tiny \\
      --workdir=runs/agentprm/policy1 --config.prm.path=runs/agentprm/prm0/hf_prm
  python -m launch.train --config=experiments/configs/agentprm.py:agentprm,tiny \\
      --workdir=runs/agentprm/prm1 --config.model.path=runs/agentprm/policy1/hf_policy0 \\
      --config.model.tokenizer=char                                    # the next iteration
  python -m launch.train --config=experiments/configs/agentprm.py:policy,paper \\
      --config.model.path=/ckpt/Qwen3-1.7B --config.prm.path=<PRM phase workdir>/hf_prm
  python -m launch.train --config=experiments/configs/at_grpo.py:plan_path,mas_shared,tiny \\
      --config.algo.prm_path=runs/agentprm/prm0/hf_prm --config.algo.prm_coef=1.0  # dense reward

phases: `agentprm` and `inverse` train a PRM (`algo.name = "agentprm"`, `prm.method`);
`policy` improves the policy against one by online DPO (`algo.name = "agentprm_policy"`). An
iteration of AgentPRM's loop is a PRM phase then a policy phase; the next PRM phase starts from
the policy phase's export (`model.path`, and `model.tokenizer=char` for the tiny models, whose
exports hold no tokenizer files).

The task is Plan-Path's two-role workflow (tool, plan; one shared policy) with the AT-GRPO
table's tiny settings, so the base model and the test instances (the first 128 of its 256) are
those of its `plan_path` cells. tiny (the task's 1M-parameter base, 2 CPU cores): 64 training
tasks x 16 rollouts at temperature 0.3 (the paper's 16 per task), the whole PRM (trunk and a
linear head) trained 200 steps on batches of 64 steps, evaluated on 128 test tasks x 4
episodes; the policy phase 30 steps of 64 DPO pairs (beta 0.03) from 16 tasks' states,
evaluated greedy, sampled and by per-step Best-of-16 on 128 test tasks. paper: a real
checkpoint given by `model.path`, chat prompts, Plan-Path at the AT-GRPO paper's scale; its
data sizes and learning rates are this repository's choices, the DPO lr the reference code's.
"""
import ml_collections

from experiments import common

PHASES = ("agentprm", "inverse", "policy")
SCALES = ("tiny", "paper")
ROLES = ("tool", "plan")
# Plan-Path as in experiments/configs/at_grpo.py (tiny: its shaping is unused by AgentPRM, which
# reads only success, and keeps the task settings those of the AT-GRPO plan_path cells).
ENV = {"tiny": dict(shaping=1.0, potential="bfs"),
       "paper": dict(size=10, min_path=6, max_path=18, max_moves_per_turn=40, max_turns=5)}


def get_config(cell: str = "agentprm,tiny") -> ml_collections.ConfigDict:
  parts = cell.split(",")
  if len(parts) != 2 or parts[0] not in PHASES or parts[1] not in SCALES:
    raise ValueError(f"config cell {cell!r}: expected <phase>,<scale> with phase in {PHASES}, "
                     f"scale in {SCALES}")
  phase, scale = parts
  tiny, policy = scale == "tiny", phase == "policy"
  steps = (30 if tiny else 200) if policy else (200 if tiny else 1000)
  c = common.base_config(total_steps=steps, eval_every=15 if policy else 100,
                         checkpoint_every=15 if policy else 100, log_every=1 if policy else 10,
                         max_to_keep=1)
  c.model = dict(name="tiny" if tiny else "qwen3-1.7b", path="", tokenizer="",
                 base="plan_path" if tiny else "", dtype="float32" if tiny else "bfloat16",
                 enable_thinking=tiny,
                 remat="none", logprob_chunk=0)
  c.task = dict(name="plan_path", env=ENV[scale], workflow="mas",
                prompt_style="compact" if tiny else "chat")
  c.policies = dict(mapping={role: 0 for role in ROLES})
  c.rollout = dict(max_new_tokens=8 if tiny else 2048)
  if policy:
    c.task.num_tasks = 16 if tiny else 32
    c.task.eval_tasks = 128 if tiny else 256
    c.rollout.temperature = 1.0
    c.prm = dict(path="")
    # Best-of-N samples at the PRM data's temperature, as the reference code's evaluation does;
    # at temperature 1 the tiny PRM's best of 16 is mostly a response it never saw (an invalid
    # one), and success falls far below greedy.
    c.algo = dict(name="agentprm_policy", beta=0.03, states_per_step=64 if tiny else 128,
                  temperature=1.0, best_of_n=16, best_of_n_temperature=0.3)
    lr = 3e-5 if tiny else 8e-7
  else:
    c.prm = dict(method=phase, questions=64 if tiny else 512, rollouts=16, temperature=0.3,
                 top_p=1.0, gamma=0.95, shaping=False, hidden_dims=(), batch_size=64,
                 eval_questions=128 if tiny else 256, eval_samples=4)
    c.algo = dict(name="agentprm")
    lr = 3e-4 if tiny else 1e-5
  c.optimizer = dict(lr=lr, warmup_steps=0 if policy else 20,
                     schedule="constant" if policy else "cosine", weight_decay=0.0, b1=0.9,
                     b2=0.999, eps=1e-8, max_grad_norm=1.0)
  return c
