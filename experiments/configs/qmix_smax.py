"""QMIX on SMAX `3m` (three marines a side against JaxMARL's heuristic enemy), JaxMARL's recipe.

  python -m launch.train --config=experiments/configs/qmix_smax.py
  python -m launch.train --config=experiments/configs/qmix_smax.py --config.env.scenario=2s3z
  python -m launch.train --config=experiments/configs/qmix_smax.py:cpu  # 64-unit networks

JaxMARL's `baselines/QLearning/config/alg/ql_rnn_smax.yaml` in this codebase's terms (its map
is 3s_vs_5z; `3m` is the smallest SMAC map): GRU agents of 512 units, mixer embedding 64,
hypernetworks 256, orthogonal init (mixer gain 0.001), RAdam at a constant lr 5e-5, gradient
norm 10, gamma 0.99, rewards times 10 in the targets, 16 envs stepped 128 times per update
(`fragment_steps`: the envs restart when an episode ends, and a fragment's episodes each start
the agents' recurrent state from 0), 5,000 fragments stored, 8 gradient steps per update on 32
stored fragments each, a hard target copy every 10 updates, epsilon 1 -> 0.05 over the first
10% of the env steps. Learning starts once 512 fragments are stored (JaxMARL's buffer can be
sampled once it holds 32 updates of 16 envs; its 10,000-step threshold is passed earlier).
Env options as JaxMARL's: enemies' last actions visible, walls kill, the heuristic enemy
attacks the closest unit. A run is 488 updates = 999,424 env steps (61 trainer steps of 8).

Where this differs from JaxMARL's script, on purpose:
- A fragment's TD target at step t is cut by the done of step t (the episode ended there).
  JaxMARL's script reads the done stored with step t, which is step t-1's (the flag it keeps
  for restarting the recurrent state), so it bootstraps an episode's last step from the next
  episode's first state and does not bootstrap that first step; its maintainers call this a
  small bug (JaxMARL issue #119).
- All 128 transitions of a fragment are trained: the observation after the last one is
  stored. JaxMARL's script trains the first 127.

`:cpu` is the same recipe with narrower networks (GRU 64, mixer embedding 32, hypernetworks
64, `CPU_WIDTHS`): 1e6 env steps take about 4 minutes a seed on 2 CPU cores, against about 75
at the published widths (measured: 0.5 s against 10 s per learning update).

The return is SMAX's shared team reward (unscaled), what JaxMARL's `SMAXLogWrapper` reports.
"""
import ml_collections

from experiments import common

UPDATES_PER_STEP = 8
NUM_ENVS, FRAGMENT_STEPS = 16, 128
ENV_STEPS = 1_000_000  # JaxMARL's TOTAL_TIMESTEPS for this budget: 488 updates
RECIPES = ("published", "cpu")
CPU_WIDTHS = dict(hidden_dim=64, mixer_embed_dim=32, hypernet_hidden=64)


def get_config(recipe: str = "published") -> ml_collections.ConfigDict:
  if recipe not in RECIPES:
    raise ValueError(f"qmix_smax.py:{recipe}: choose from {RECIPES}")
  updates = ENV_STEPS // FRAGMENT_STEPS // NUM_ENVS
  c = common.base_config(total_steps=updates // UPDATES_PER_STEP, eval_every=6,
                         checkpoint_every=6, log_every=1)
  c.env = dict(name="jaxmarl", env_id="HeuristicEnemySMAX", scenario="3m",
               see_enemy_actions=True, walls_cause_death=True, attack_mode="closest")
  c.algo = dict(name="qmix", mixer="qmix", agent="gru", hidden_dim=512, mixer_embed_dim=64,
                hypernet_hidden=256, gamma=0.99, td_lambda=0.0, double_q=True,
                optimizer="radam", lr=5e-5, lr_schedule="constant", lr_decay_updates=0,
                max_grad_norm=10.0, init="orthogonal", agent_init_scale=1.0,
                mixer_init_scale=0.001, train_terminal=True, reward_scale=10.0,
                num_envs=NUM_ENVS, fragment_steps=FRAGMENT_STEPS, epochs=8, batch_size=32,
                buffer_size=5000, learning_starts=512, target_update_interval=10,
                target_tau=0.0, epsilon_start=1.0, epsilon_finish=0.05,
                epsilon_anneal_steps=updates * NUM_ENVS * FRAGMENT_STEPS // 10,
                eval_episodes=512, num_seeds=1, seeds_in="vmap",
                updates_per_step=UPDATES_PER_STEP)
  if recipe == "cpu":
    c.algo.update(CPU_WIDTHS)
  return c
