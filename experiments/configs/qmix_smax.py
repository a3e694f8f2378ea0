"""QMIX on SMAX `3m` (three marines a side against JaxMARL's heuristic enemy), JaxMARL's recipe.

  python -m launch.train --config=experiments/configs/qmix_smax.py
  python -m launch.train --config=experiments/configs/qmix_smax.py --config.env.scenario=2s3z

JaxMARL's `baselines/QLearning/config/alg/ql_rnn_smax.yaml` in this codebase's terms (its map
is 3s_vs_5z; `3m` is the smallest SMAC map): GRU agents of 512 units, mixer embedding 64,
hypernetworks 256, orthogonal init (mixer gain 0.001), RAdam at a constant lr 5e-5, gradient
norm 10, gamma 0.99, rewards times 10 in the targets, 16 episodes collected per update and 8
gradient steps on 32 stored episodes each, a hard target copy every 10 updates, epsilon 1 ->
0.05 over the first 10% of the env steps. Learning starts once 512 episodes are stored (JaxMARL
samples its buffer once it holds 32 updates of 16 envs). Env options as JaxMARL's: enemies'
last actions visible, walls kill, the heuristic enemy attacks the closest unit.

The one structural difference: JaxMARL stores 128-step slices of auto-resetting envs, this
codebase whole episodes (at most 101 transitions on SMAX), so an update here collects 16
episodes rather than 2,048 steps. The return is SMAX's shared team reward (unscaled).
"""
import ml_collections

from experiments import common

UPDATES_PER_STEP = 10
ENV_STEPS = 1_000_000  # the budget the epsilon schedule is a fraction of


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config(total_steps=50, eval_every=5, checkpoint_every=10, log_every=1)
  c.env = dict(name="jaxmarl", env_id="HeuristicEnemySMAX", scenario="3m",
               see_enemy_actions=True, walls_cause_death=True, attack_mode="closest")
  c.algo = dict(name="qmix", mixer="qmix", agent="gru", hidden_dim=512, mixer_embed_dim=64,
                hypernet_hidden=256, gamma=0.99, td_lambda=0.0, double_q=True,
                optimizer="radam", lr=5e-5, lr_schedule="constant", lr_decay_updates=0,
                max_grad_norm=10.0, init="orthogonal", agent_init_scale=1.0,
                mixer_init_scale=0.001, train_terminal=True, reward_scale=10.0, num_envs=16,
                epochs=8, batch_size=32, buffer_size=5000, learning_starts=512,
                target_update_interval=10, target_tau=0.0, epsilon_start=1.0,
                epsilon_finish=0.05, epsilon_anneal_steps=ENV_STEPS // 10,
                eval_episodes=512, num_seeds=1, updates_per_step=UPDATES_PER_STEP)
  return c
