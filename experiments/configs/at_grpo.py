"""AT-GRPO / GRPO: one config per cell of the AT-GRPO table, `<task>,<regime>,<scale>`.

  python -m launch.train --config=experiments/configs/at_grpo.py          # plan_path,mas_shared,tiny
  python -m launch.train --config=experiments/configs/at_grpo.py:sokoban,mas_per_role,tiny
  python -m launch.train --config=experiments/configs/at_grpo.py:plan_path,mas_lora_per_role,paper \\
      --config.model.path=/ckpt/Qwen3-1.7B

tasks: plan_path, sokoban, sudoku, math, code.
regimes (rows of the table; the "no RL" rows are each run's step-0 evaluation):
- single_grpo: one agent, GRPO over its K samples per (task, turn); also evaluated in the MAS
  workflow with both roles on the trained policy (the "trained single agent in MAS" ablation).
- mas_shared: the two-role workflow, AT-GRPO, one policy for both roles.
- mas_per_role: one policy per role (P = 2 stacked, one vmapped update); also evaluated with the
  role policies swapped.
- mas_lora_per_role: as mas_per_role, each role a LoRA adapter over one frozen base.
scales: tiny (the task's 1M-parameter pretrained base model, on CPU), small (the same recipe
with the 10.9M-parameter `small` model: Plan-Path's greedy gain is far outside noise there,
about 15 minutes a run on 2 CPU cores) and paper (a real checkpoint given by `model.path`; the
reference configs' K, batch, turn limit, lr and LoRA rank; `chat` prompts with the checkpoint's
chat template, Qwen3's thinking switched off as in the reference's rollouts).
"""
import ml_collections

from experiments import common

ROLES = {"plan_path": ("tool", "plan"), "sokoban": ("tool", "plan"), "sudoku": ("tool", "plan"),
         "math": ("tool", "reasoner"), "code": ("coder", "tester")}
REGIMES = ("single_grpo", "mas_shared", "mas_per_role", "mas_lora_per_role")
SCALES = ("tiny", "small", "paper")

# Tiny scale: the environment overrides, answer lengths and test-set sizes of each task. 256 test
# instances (binomial standard error <= 3.1 points) where evaluation is cheap; 64 for code, whose
# evaluation runs sandboxed tests.
TINY_TASKS = {
    # Potential-based shaping gives every turn's group a signal of progress (envs/plan_path.py).
    "plan_path": dict(env=dict(shaping=1.0, potential="bfs"), max_new_tokens=8, eval_tasks=256),
    "sokoban": dict(env={}, max_new_tokens=8, eval_tasks=256),
    "sudoku": dict(env={}, max_new_tokens=8, eval_tasks=256),
    "math": dict(env={}, max_new_tokens=8, eval_tasks=256),
    "code": dict(env={}, max_new_tokens=32, eval_tasks=64),
}
# Paper scale (Stronger Together, Sec. 5; the reference's stateful/code/math configs): 10x10
# Plan-Path with 22% blocked, 6x6 Sokoban with one box, 4x4 Sudoku, 5 turns.
PAPER_TASKS = {
    "plan_path": dict(env=dict(size=10, min_path=6, max_path=18, max_moves_per_turn=40,
                               max_turns=5)),
    "sokoban": dict(env=dict(size=6, max_solution=20, max_moves_per_turn=40, max_turns=5)),
    "sudoku": dict(env=dict(max_turns=5)),
    "math": dict(env=dict(max_turns=5)),
    "code": dict(env=dict(max_turns=5, max_code_chars=2000, timeout_s=5.0)),
}


def get_config(cell: str = "plan_path,mas_shared,tiny") -> ml_collections.ConfigDict:
  parts = cell.split(",")
  if len(parts) != 3 or parts[0] not in ROLES or parts[1] not in REGIMES or parts[2] not in SCALES:
    raise ValueError(f"config cell {cell!r}: expected <task>,<regime>,<scale> with task in "
                     f"{sorted(ROLES)}, regime in {REGIMES}, scale in {SCALES}")
  task, regime, scale = parts
  on_cpu = scale != "paper"  # a base model pretrained here (tiny or small)
  c = common.base_config(total_steps=30 if on_cpu else 200, eval_every=10,
                         checkpoint_every=10, log_every=1, max_to_keep=2)
  c.model = dict(name=scale if on_cpu else "qwen3-1.7b", path="", tokenizer="",
                 dtype="float32" if on_cpu else "bfloat16", enable_thinking=on_cpu,
                 base="", remat="none", logprob_chunk=0)
  settings = (TINY_TASKS if on_cpu else PAPER_TASKS)[task]
  roles = ROLES[task]
  if regime == "single_grpo":
    workflow, mapping = "single", {"agent": 0}
  elif regime == "mas_shared":
    workflow, mapping = "mas", {role: 0 for role in roles}
  else:
    workflow, mapping = "mas", {role: i for i, role in enumerate(roles)}
  c.task = dict(name=task, env=settings["env"], workflow=workflow,
                prompt_style="compact" if on_cpu else "chat",
                num_tasks=16 if on_cpu else 32, eval_tasks=settings.get("eval_tasks", 256))
  c.policies = dict(mapping=mapping,
                    lora_rank=(4 if on_cpu else 16) if regime == "mas_lora_per_role" else 0)
  c.eval = dict(other_workflow="mas" if regime == "single_grpo" else "",
                swap_roles=regime in ("mas_per_role", "mas_lora_per_role"))
  c.rollout = dict(max_new_tokens=settings.get("max_new_tokens", 2048), temperature=1.0)
  # ScalingInter-RL horizon curriculum; () trains at the task's max_turns throughout. E.g.
  # --config.curriculum.max_turns='(2, 4, 6)' --config.curriculum.every=10.
  c.curriculum = dict(max_turns=(), every=100)
  c.algo = dict(name="grpo", k=4, tree=True, continuation="best", minibatches=1,
                micro_batch_rows=0, alpha=1.0,
                eps=1e-6, normalize_std=True, drop_zero_variance=True, clip_eps=0.2, dual_clip=3.0,
                aggregation="token-mean", kl_coef=0.0,
                # AgentPRM's PRM as a dense reward (Choudhury 2025, Sec. 2): each action's local
                # reward gains prm_coef x the PRM's value Q(s, a) in [-1, 1] of its step; the
                # PRM is a PRM phase's export (experiments/configs/agentprm.py), "" for none.
                prm_path="", prm_coef=0.0)
  # Tiny: lr 3e-5 was the most stable of 3e-5..1e-3 on Plan-Path (1e-4 and up lose the greedy
  # gains after ~20 steps); paper: the reference's actor lr.
  c.optimizer = dict(lr=3e-5 if on_cpu else 1e-6, warmup_steps=0, schedule="constant",
                     weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, max_grad_norm=1.0)
  return c
