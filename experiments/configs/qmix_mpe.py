"""QMIX on MPE simple spread (3 agents, 3 landmarks), JaxMARL's published recipe.

  python -m launch.train --config=experiments/configs/qmix_mpe.py
  python -m launch.train --config=experiments/configs/qmix_mpe.py --config.algo.mixer=vdn
  python -m launch.reproduce --table=qmix_jaxmarl --seeds=4  # QMIX and VDN, 4 seeds, beside JaxMARL

JaxMARL's `baselines/QLearning/config/alg/ql_rnn_mpe.yaml` in this codebase's terms: GRU agents
of 64 units sharing parameters, mixer embedding 32, hypernetworks 128, every layer orthogonally
initialised (mixer gain 0.001), RAdam at lr 0.005 decayed linearly to 0 over the run, gradient
norm 25, gamma 0.9, 1-step double-Q targets, 8 episodes collected per update, 5,000 stored, 32
per gradient step, a hard target copy every 200 updates, epsilon 1 -> 0.05 over the first 10% of
the run, no TD error on an episode's last transition. Learning starts once 392 episodes are
stored (JaxMARL: after more than 10,000 env steps, i.e. at its 49th update). A run is 4,800
updates = 998,400 env steps (24 trainer steps of 200 updates; an episode is 26 transitions).

The return is the benchmark's: the team reward is the sum of the three agents' rewards, as
JaxMARL's `MPELogWrapper` and the MPE papers report it. `eval/greedy_return` is the mean
greedy return of 512 test episodes (JaxMARL's `TEST_NUM_ENVS`).

Measured: see `results/qmix_jaxmarl.md`.
"""
import ml_collections

from experiments import common

UPDATES_PER_STEP = 200
EPISODE_STEPS = 26  # transitions of an MPE episode (max_steps = 25, done on the 26th)


def get_config() -> ml_collections.ConfigDict:
  c = common.base_config(total_steps=24, eval_every=2, checkpoint_every=6, log_every=1)
  c.env = dict(name="jaxmarl", env_id="MPE_simple_spread_v3", team_reward="sum")
  updates = c.total_steps * UPDATES_PER_STEP
  c.algo = dict(name="qmix", mixer="qmix", agent="gru", hidden_dim=64, mixer_embed_dim=32,
                hypernet_hidden=128, gamma=0.9, td_lambda=0.0, double_q=True,
                optimizer="radam", lr=0.005, lr_schedule="linear", lr_decay_updates=0,
                max_grad_norm=25.0, init="orthogonal", agent_init_scale=1.0,
                mixer_init_scale=0.001, train_terminal=False, reward_scale=1.0, num_envs=8,
                batch_size=32, buffer_size=5000, learning_starts=392,
                target_update_interval=200, target_tau=0.0, epsilon_start=1.0,
                epsilon_finish=0.05, epsilon_anneal_steps=updates // 10 * 8 * EPISODE_STEPS,
                eval_episodes=512, num_seeds=1, seeds_in="vmap",
                updates_per_step=UPDATES_PER_STEP)
  return c
