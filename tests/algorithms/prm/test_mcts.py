"""MCTS tree functions against hand-computed numbers, numpy formulas written in the test, an
exhaustive solver in plain Python, and DeepMind's mctx."""
import functools

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from algorithms.prm import mcts

# A deterministic single-player game: a complete ternary tree of depth 4, nodes numbered in
# heap order (the children of code k are 3k + 1 + a); the 81 leaves pay fixed random numbers.
DEPTH, BRANCH = 4, 3
NUM_CODES = (BRANCH**(DEPTH + 1) - 1) // (BRANCH - 1)  # 121
FIRST_LEAF = (BRANCH**DEPTH - 1) // (BRANCH - 1)  # 40


def _payoffs(seed: int) -> np.ndarray:
  """Leaf payoffs uniform in [-1, 0.5] and one leaf at 1.0, so the optimum is unique."""
  rng = np.random.default_rng(seed)
  payoff = np.zeros(NUM_CODES, np.float32)
  payoff[FIRST_LEAF:] = rng.uniform(-1.0, 0.5, BRANCH**DEPTH)
  payoff[FIRST_LEAF + rng.integers(BRANCH**DEPTH)] = 1.0
  return payoff


def _solve(payoff: np.ndarray, code: int = 0, depth: int = 0) -> tuple[float, list[int]]:
  """Exhaustive search: the best payoff below `code` and the actions that reach it."""
  if depth == DEPTH:
    return float(payoff[code]), []
  results = [_solve(payoff, BRANCH * code + 1 + a, depth + 1) for a in range(BRANCH)]
  best = max(range(BRANCH), key=lambda a: results[a][0])
  return results[best][0], [best] + results[best][1]


def _game_recurrent(payoff: jax.Array, key: jax.Array, emb: dict) -> mcts.Expansion:
  """All children of a node: a leaf pays its payoff as the edge reward; its value estimate
  (9, nonsense) must be ignored, a terminal's value being 0; interior estimates are 0."""
  del key
  codes = BRANCH * emb["code"] + 1 + jnp.arange(BRANCH)
  depth = jnp.full((BRANCH,), emb["depth"] + 1)
  terminal = depth == DEPTH
  return mcts.Expansion(prior=jnp.full((BRANCH,), 1.0 / BRANCH),
                        reward=jnp.where(terminal, payoff[codes], 0.0),
                        value=jnp.where(terminal, 9.0, 0.0), terminal=terminal,
                        embedding={"code": codes, "depth": depth})


@functools.partial(jax.jit, static_argnames="num_simulations")
def _game_search(payoff: jax.Array, key: jax.Array, num_simulations: int) -> mcts.SearchState:
  root = {"code": jnp.array(0, jnp.int32), "depth": jnp.array(0, jnp.int32)}
  return mcts.search(payoff, key, root_embedding=root, root_value=jnp.array(0.0),
                     recurrent_fn=_game_recurrent, num_simulations=num_simulations,
                     rule="uct", c=2.0)


def _path_actions(tree: mcts.Tree, max_depth: int) -> list[int]:
  ids = np.asarray(mcts.greedy_path(tree, max_depth))
  return [int(tree.action[i]) for i in ids[1:] if i >= 0]


def _slice(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def _hand_tree() -> mcts.Tree:
  """root --a0 (r .5)--> 1 --a0 (r .25)--> 3
                                --a1 (r 0)---> 4
     root --a1 (r -1, terminal)--> 2"""
  tree = mcts.init_tree(8, 2)
  tree, ids = mcts.expand(tree, 0, jnp.array([0.6, 0.4]), jnp.array([0.5, -1.0]),
                          jnp.array([False, True]))
  np.testing.assert_array_equal(ids, [1, 2])
  tree, ids = mcts.expand(tree, 1, jnp.array([0.5, 0.5]), jnp.array([0.25, 0.0]),
                          jnp.array([False, False]))
  np.testing.assert_array_equal(ids, [3, 4])
  return tree


# Hand arithmetic, discount 0.5 (G <- r_node + 0.5 G passing to the parent):
#   backup(3, 1):  n3 += 1;  G = .25 + .5*1 = .75 -> n1 += .75;  G = .5 + .5*.75 = .875 -> n0
#   backup(2, 0):  n2 += 0;  G = -1 + .5*0 = -1 -> n0
#   backup(4, -2): n4 += -2; G = 0 + .5*-2 = -1 -> n1;  G = .5 + .5*-1 = 0 -> n0
HAND_VISITS = [3, 2, 1, 1, 1, 0, 0, 0]
HAND_VALUE_SUM = [0.875 - 1.0 + 0.0, 0.75 - 1.0 + 0.0, 0.0, 1.0, -2.0, 0.0, 0.0, 0.0]


def test_backup_by_hand():
  tree = _hand_tree()
  for node, value in [(3, 1.0), (2, 0.0), (4, -2.0)]:
    tree = mcts.backup(tree, node, value, discount=0.5)
  np.testing.assert_array_equal(tree.visits, HAND_VISITS)
  np.testing.assert_array_equal(tree.value_sum, HAND_VALUE_SUM)
  np.testing.assert_allclose(mcts.node_values(tree)[:5], [-0.125 / 3, -0.125, 0.0, 1.0, -2.0],
                             rtol=1e-7)
  assert int(tree.num_nodes) == 5
  np.testing.assert_array_equal(tree.parent[:6], [-1, 0, 0, 1, 1, -1])
  np.testing.assert_array_equal(tree.action[:6], [-1, 0, 1, 0, 1, -1])
  np.testing.assert_array_equal(tree.terminal[:5], [False, False, True, False, False])


def test_backup_children_equals_sequential_backups_and_skips_minus_one():
  tree = mcts.backup_children(_hand_tree(), jnp.array([3, -1, 2, 4]),
                              jnp.array([1.0, 9.0, 0.0, -2.0]), discount=0.5)
  np.testing.assert_array_equal(tree.visits, HAND_VISITS)
  np.testing.assert_array_equal(tree.value_sum, HAND_VALUE_SUM)
  untouched = mcts.backup(_hand_tree(), -1, 5.0)
  np.testing.assert_array_equal(untouched.visits, np.zeros(8))


def test_select_greedy_and_root_statistics_by_hand():
  tree = mcts.init_tree(8, 2)
  assert [int(x) for x in mcts.select(tree, c=1.0)] == [0, 0]  # an unexpanded root
  tree = mcts.backup_children(_hand_tree(), jnp.array([3, 2, 4]), jnp.array([1.0, 0.0, -2.0]),
                              discount=0.5)
  # c = 0, discount .5: at the root Q1 = .5 + .5 * (-.25 / 2) = .4375 > Q2 = -1 + 0 = -1;
  # at node 1 Q3 = .25 + .5 * 1 = .75 > Q4 = 0 + .5 * -2 = -1; node 3 is unexpanded.
  leaf, depth = mcts.select(tree, rule="uct", c=0.0, discount=0.5)
  assert (int(leaf), int(depth)) == (3, 2)
  # UCT at the root (N = 3): UCT1 = .4375 + c sqrt(ln 3 / 2) = .4375 + .7411 c and
  # UCT2 = -1 + c sqrt(ln 3 / 1) = -1 + 1.0481 c; node 1 wins while c < 1.4375 / .3070 = 4.68.
  # c = 2 at node 1 (N = 2): UCT3 = .75 + 2 sqrt(ln 2) = 2.415 > UCT4 = -1 + 1.665 = .665.
  assert int(mcts.select(tree, c=2.0, discount=0.5)[0]) == 3
  # c = 8: UCT1 = .4375 + 5.929 = 6.366 < UCT2 = -1 + 8.385 = 7.385: the terminal node 2.
  assert [int(x) for x in mcts.select(tree, c=8.0, discount=0.5)] == [2, 1]
  np.testing.assert_array_equal(mcts.greedy_path(tree, 4, discount=0.5), [0, 1, 3, -1, -1])
  assert int(mcts.greedy_leaf(tree, discount=0.5)) == 3
  np.testing.assert_array_equal(mcts.root_action_visits(tree), [2, 1])
  assert int(mcts.most_visited_action(tree)) == 0
  # Greedy follows the highest mean, not the most visits: after backing up 0 from node 2
  # three times and -2 from node 4 once, node 2 has 4 visits and Q2 = -1; node 1 has 3 and
  # Q1 = .5 + .5 * (-.25 - 1) / 3 = .2917; below it node 4 (2 visits, Q4 = -1) and node 3
  # (1 visit, Q3 = .75).
  busier = mcts.backup_children(tree, jnp.array([2, 2, 2, 4]), jnp.array([0.0, 0.0, 0.0, -2.0]),
                                discount=0.5)
  np.testing.assert_array_equal(mcts.root_action_visits(busier), [3, 4])
  assert int(mcts.most_visited_action(busier)) == 1
  np.testing.assert_array_equal(mcts.greedy_path(busier, 3, discount=0.5), [0, 1, 3, -1])
  assert int(mcts.greedy_leaf(busier, discount=0.5)) == 3
  # A terminal node is a leaf even if a caller gave it children.
  odd, _ = mcts.expand(tree, 2, jnp.array([0.5, 0.5]), jnp.zeros(2), jnp.zeros(2, bool))
  assert [int(x) for x in mcts.select(odd, c=8.0, discount=0.5)] == [2, 1]
  # An unvisited expanded child is tried before any visited one (UCT +inf).
  tree, ids = mcts.expand(tree, 3, jnp.array([0.5, 0.5]), jnp.zeros(2), jnp.zeros(2, bool))
  tree = mcts.backup(tree, ids[1], 3.0, discount=0.5)
  assert int(mcts.select(tree, c=0.0, discount=0.5)[0]) == int(ids[0])


def _random_tree(seed: int, *, all_valid: bool, num_nodes: int = 60, num_actions: int = 4,
                 iterations: int = 14) -> mcts.Tree:
  """Grown at random: a random unexpanded non-terminal node gets random priors, rewards,
  terminal flags and invalid slots, and about 3 in 4 of its new children back up a random
  value (the rest stay unvisited)."""
  rng = np.random.default_rng(seed)
  tree = mcts.init_tree(num_nodes, num_actions)
  for _ in range(iterations):
    used = np.arange(int(tree.num_nodes))
    open_ = used[(np.asarray(tree.children)[used] < 0).all(1) & ~np.asarray(tree.terminal)[used]]
    leaf = int(rng.choice(open_))
    valid = np.ones(num_actions, bool) if all_valid else rng.random(num_actions) < 0.75
    priors = jnp.asarray(rng.dirichlet(np.ones(num_actions)), jnp.float32)
    rewards = jnp.asarray(rng.normal(size=num_actions), jnp.float32)
    tree, ids = mcts.expand(tree, leaf, priors, rewards,
                            jnp.asarray(rng.random(num_actions) < 0.2), jnp.asarray(valid))
    ids = np.where(rng.random(num_actions) < 0.75, np.asarray(ids), -1)
    tree = mcts.backup_children(tree, jnp.asarray(ids, jnp.int32),
                                jnp.asarray(rng.normal(size=num_actions), jnp.float32))
  return tree


def test_uct_scores_match_numpy():
  tree = _random_tree(0, all_valid=False)
  children, visits = np.asarray(tree.children), np.asarray(tree.visits).astype(np.float64)
  value_sum, reward = np.asarray(tree.value_sum, np.float64), np.asarray(tree.reward, np.float64)
  c, discount = 1.3, 0.9
  seen = {"-inf": 0, "+inf": 0, "finite": 0}
  for node in range(int(tree.num_nodes)):
    if visits[node] == 0:
      continue
    want = np.full(tree.num_actions, -np.inf)
    for a, k in enumerate(children[node]):
      if k < 0:
        seen["-inf"] += 1
      elif visits[k] == 0:
        want[a] = np.inf
        seen["+inf"] += 1
      else:
        want[a] = (reward[k] + discount * value_sum[k] / visits[k]
                   + c * np.sqrt(np.log(visits[node]) / visits[k]))
        seen["finite"] += 1
    got = np.asarray(mcts.uct_scores(tree, node, c=c, discount=discount))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert min(seen.values()) > 0, seen


def _to_mctx(tree: mcts.Tree, discount: float) -> mctx.Tree:
  """The same tree in mctx's layout (per-parent child statistics), unbatched."""
  kids = tree.children
  expanded = kids >= 0
  safe = jnp.maximum(kids, 0)
  values = mcts.node_values(tree)
  return mctx.Tree(
      node_visits=tree.visits, raw_values=jnp.zeros_like(values), node_values=values,
      parents=tree.parent, action_from_parent=tree.action, children_index=kids,
      children_prior_logits=jnp.log(tree.prior[safe]),
      children_visits=jnp.where(expanded, tree.visits[safe], 0),
      children_rewards=jnp.where(expanded, tree.reward[safe], 0.0),
      children_discounts=jnp.full(kids.shape, discount, jnp.float32),
      children_values=jnp.where(expanded, values[safe], 0.0),
      embeddings=jnp.zeros(tree.visits.shape), root_invalid_actions=jnp.zeros(kids.shape[1]),
      extra_data=None)


def _mctx_puct(tree: mcts.Tree, node: int, discount: float, c_init: float = 1.25,
               c_base: float = 19652.0) -> tuple[np.ndarray, np.ndarray]:
  """`(scores, policy part)` of a fully expanded node: mctx's Q transform plus the policy
  term of `mctx.muzero_action_selection` (its source, without the tie-breaking noise)."""
  ref = _to_mctx(tree, discount)
  n = float(tree.visits[node])
  child_visits = np.asarray(ref.children_visits[node])
  policy = (np.sqrt(n) * (c_init + np.log((n + c_base + 1) / c_base))
            * np.asarray(jax.nn.softmax(ref.children_prior_logits[node])) / (child_visits + 1))
  return np.asarray(mctx.qtransform_by_parent_and_siblings(ref, node)) + policy, policy


def test_puct_scores_match_mctx():
  tree = _random_tree(1, all_valid=True)
  discount = 0.9
  checked = 0
  for node in range(int(tree.num_nodes)):
    if int(tree.visits[node]) == 0 or int(tree.children[node, 0]) < 0:
      continue
    want, policy = _mctx_puct(tree, node, discount)
    got = np.asarray(mcts.puct_scores(tree, node, discount=discount))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    picked = mctx.muzero_action_selection(jax.random.PRNGKey(node), _to_mctx(tree, discount),
                                          node, 1)
    assert int(picked) == int(np.argmax(got))
    # Without normalisation: raw Q = r + discount V for visited children, 0 otherwise.
    kids = np.asarray(tree.children[node])
    q = np.where(np.asarray(tree.visits)[kids] > 0, np.asarray(tree.reward)[kids]
                 + discount * np.asarray(mcts.node_values(tree))[kids], 0.0)
    np.testing.assert_allclose(mcts.puct_scores(tree, node, discount=discount, normalize_q=False),
                               q + policy, rtol=1e-5, atol=1e-6)
    checked += 1
  assert checked >= 5
  # A spread of Q (6e-5) far above mctx's epsilon (1e-8) still normalises to exactly [0, 1].
  close, ids = mcts.expand(mcts.init_tree(4, 2), 0, jnp.array([0.3, 0.7]), jnp.zeros(2),
                           jnp.zeros(2, bool))
  close = mcts.backup_children(close, ids, jnp.array([0.25, 0.25 + 2.0**-14]))
  want, policy = _mctx_puct(close, 0, 1.0)
  np.testing.assert_allclose(want - policy, [0.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(mcts.puct_scores(close, 0), want, rtol=1e-5, atol=1e-6)
  partial, _ = mcts.expand(mcts.init_tree(4, 3), 0, jnp.full(3, 1 / 3), jnp.zeros(3),
                           jnp.zeros(3, bool), jnp.array([True, False, True]))
  assert np.isneginf(np.asarray(mcts.puct_scores(partial, 0))[1])


def test_uct_search_finds_the_exhaustive_optimum():
  payoffs = np.stack([_payoffs(s) for s in range(3)])
  trees = jax.vmap(lambda p: _game_search(p, jax.random.PRNGKey(0), 400).tree)(
      jnp.asarray(payoffs))
  for i in range(3):
    best, path = _solve(payoffs[i])
    tree = _slice(trees, i)
    assert int(mcts.most_visited_action(tree)) == path[0]
    assert _path_actions(tree, DEPTH) == path
    # Mean backed-up values average over explored leaves: below the optimum, but the optimal
    # first action's mean is the highest at the root.
    root_q = np.asarray(mcts.node_values(tree))[np.asarray(tree.children[0])]
    assert np.argmax(root_q) == path[0] and root_q.max() <= best + 1e-6
    assert int(tree.num_nodes) == NUM_CODES  # the whole game tree was expanded, no more
    terminal = np.asarray(tree.terminal)
    assert terminal.sum() == BRANCH**DEPTH and not np.asarray(tree.value_sum)[terminal].any()


def _mctx_value(e):
  return jax.random.uniform(jax.random.fold_in(e, 2), (), minval=-1.0, maxval=1.0)


def _mctx_reward(e):
  return jax.random.uniform(jax.random.fold_in(e, 1), (), minval=-1.0, maxval=1.0)


def _mctx_logits(e):
  return jax.random.normal(jax.random.fold_in(e, 3), (4,))


def _mctx_recurrent(discount, rng, action, emb):
  """A random deterministic game for mctx: a state is a PRNG key, the next is fold_in(s, a)."""
  del rng
  nxt = jax.vmap(jax.random.fold_in)(emb, action)
  out = mctx.RecurrentFnOutput(reward=jax.vmap(_mctx_reward)(nxt),
                               discount=jnp.full(action.shape, discount),
                               prior_logits=jax.vmap(_mctx_logits)(nxt),
                               value=jax.vmap(_mctx_value)(nxt))
  return out, nxt


def _own_recurrent(params, key, emb):
  """The same game for `mcts.search`: all four actions of a node at once."""
  del params, key
  nxt = jax.vmap(jax.random.fold_in, (None, 0))(emb, jnp.arange(4))
  return mcts.Expansion(prior=jax.nn.softmax(_mctx_logits(emb)),
                        reward=jax.vmap(_mctx_reward)(nxt), value=jax.vmap(_mctx_value)(nxt),
                        terminal=jnp.zeros(4, bool), embedding=nxt)


@functools.partial(jax.jit, static_argnames="num_simulations")
def _both_searches(roots, discount, num_simulations):
  root = mctx.RootFnOutput(prior_logits=jax.vmap(_mctx_logits)(roots),
                           value=jax.vmap(_mctx_value)(roots), embedding=roots)
  theirs = mctx.muzero_policy(discount, jax.random.PRNGKey(1), root, _mctx_recurrent,
                              num_simulations, dirichlet_fraction=0.0,
                              qtransform=mctx.qtransform_by_parent_and_siblings)
  ours = jax.vmap(lambda e: mcts.search(
      None, jax.random.PRNGKey(2), root_embedding=e, root_value=_mctx_value(e),
      recurrent_fn=_own_recurrent, num_simulations=num_simulations, rule="puct",
      discount=discount))(roots)
  return theirs.search_tree, ours.tree


def _visited_by_path(parents, actions, visits, values, count):
  """{actions from the root: (visits, value)} over the visited nodes of one tree."""
  out = {}
  for node in range(count):
    if visits[node] == 0:
      continue
    path, k = [], node
    while parents[k] >= 0:
      path.append(int(actions[k]))
      k = parents[k]
    out[tuple(reversed(path))] = (int(visits[node]), float(values[node]))
  return out


@pytest.mark.parametrize("num_simulations,discount", [(32, 1.0), (64, 0.9)])
def test_puct_search_matches_mctx_muzero_policy(num_simulations, discount):
  roots = jax.vmap(jax.random.PRNGKey)(jnp.arange(16))
  theirs, ours = _both_searches(roots, discount, num_simulations)
  np.testing.assert_array_equal(jax.vmap(mcts.root_action_visits)(ours),
                                theirs.children_visits[:, 0])
  np.testing.assert_allclose(jax.vmap(mcts.node_values)(ours)[:, 0], theirs.node_values[:, 0],
                             atol=1e-5)
  for b in range(16):  # the whole tree: every visited node, keyed by its action path
    o, t = _slice(ours, b), _slice(theirs, b)
    mine = _visited_by_path(np.asarray(o.parent), np.asarray(o.action), np.asarray(o.visits),
                            np.asarray(mcts.node_values(o)), int(o.num_nodes))
    ref = _visited_by_path(np.asarray(t.parents), np.asarray(t.action_from_parent),
                           np.asarray(t.node_visits), np.asarray(t.node_values),
                           num_simulations + 1)
    assert mine.keys() == ref.keys()
    for path, (visits, value) in ref.items():
      assert mine[path][0] == visits
      np.testing.assert_allclose(mine[path][1], value, atol=1e-5)


def test_search_vmap_equals_separate_runs_and_is_deterministic():
  payoffs = jnp.asarray(np.stack([_payoffs(s) for s in range(3)]))
  key = jax.random.PRNGKey(7)
  batched = jax.vmap(lambda p: _game_search(p, key, 60))(payoffs)
  for i in range(3):
    alone = _game_search(payoffs[i], key, 60)
    again = _game_search(payoffs[i], key, 60)
    for x, y, z in zip(jax.tree.leaves(_slice(batched, i)), jax.tree.leaves(alone),
                       jax.tree.leaves(again)):
      np.testing.assert_array_equal(x, y)
      np.testing.assert_array_equal(y, z)


def _text_mcts(payoffs: np.ndarray, iterations: int, select, expand, backup_children):
  """The text-MCTS caller loop over B trees: select one leaf per tree, propose all children of
  every non-terminal leaf at once, expand, and back up each new child's value (its payoff at a
  terminal, a PRM's 0 elsewhere); a re-selected terminal backs up its stored value again. The
  caller's per-node state (here the game code) lives in Python lists indexed by node id."""
  b = len(payoffs)
  capacity = 1 + (iterations + 1) * BRANCH
  trees = jax.tree.map(lambda *x: jnp.stack(x),
                       *[mcts.init_tree(capacity, BRANCH) for _ in range(b)])
  codes = [[0] + [-1] * (capacity - 1) for _ in range(b)]
  depths = [[0] * capacity for _ in range(b)]
  stored = np.zeros((b, capacity), np.float32)
  for _ in range(iterations):
    leaves = np.asarray(select(trees)[0])
    valid, terminal = np.zeros((b, BRANCH), bool), np.zeros((b, BRANCH), bool)
    ids_up, values_up = np.full((b, BRANCH), -1, np.int32), np.zeros((b, BRANCH), np.float32)
    for t, leaf in enumerate(leaves):
      if depths[t][leaf] == DEPTH:
        ids_up[t, 0], values_up[t, 0] = leaf, stored[t, leaf]
      else:
        valid[t], terminal[t] = True, depths[t][leaf] + 1 == DEPTH
    trees, ids = expand(trees, jnp.asarray(leaves), jnp.full((b, BRANCH), 1.0 / BRANCH),
                        jnp.zeros((b, BRANCH)), jnp.asarray(terminal), jnp.asarray(valid))
    for (t, a), k in np.ndenumerate(np.asarray(ids)):
      if k >= 0:
        codes[t][k] = BRANCH * codes[t][leaves[t]] + 1 + a
        depths[t][k] = depths[t][leaves[t]] + 1
        stored[t, k] = payoffs[t][codes[t][k]] if terminal[t, a] else 0.0
        ids_up[t, a], values_up[t, a] = k, stored[t, k]
    trees = backup_children(trees, jnp.asarray(ids_up), jnp.asarray(values_up))
  return trees


def _per_tree(fn):
  """Applies a jitted unbatched function to each tree of a batch in turn."""
  fn = jax.jit(fn)

  def apply(trees, *args):
    outs = [fn(_slice(trees, i), *[x[i] for x in args])
            for i in range(trees.visits.shape[0])]
    return jax.tree.map(lambda *x: jnp.stack(x), *outs)
  return apply


def test_text_mcts_loop_jitted_vmapped_equals_per_tree_and_finds_optimum():
  payoffs = np.stack([_payoffs(s) for s in range(3)])
  select = lambda tree: mcts.select(tree, rule="uct", c=2.0)  # noqa: E731
  batched = [jax.jit(jax.vmap(f)) for f in (select, mcts.expand, mcts.backup_children)]
  trees = _text_mcts(payoffs, 60, *batched)
  per_tree = _text_mcts(payoffs, 60, *[_per_tree(f) for f in
                                       (select, mcts.expand, mcts.backup_children)])
  for x, y in zip(jax.tree.leaves(trees), jax.tree.leaves(per_tree)):
    np.testing.assert_array_equal(x, y)
  trees = _text_mcts(payoffs, 300, *batched)
  for i in range(3):
    _, path = _solve(payoffs[i])
    tree = _slice(trees, i)
    assert int(mcts.most_visited_action(tree)) == path[0]
    assert _path_actions(tree, DEPTH) == path


def test_expand_past_capacity_keeps_existing_nodes():
  tree, ids = mcts.expand(mcts.init_tree(5, 3), 0, jnp.array([0.2, 0.3, 0.5]),
                          jnp.array([1.0, 2.0, 3.0]), jnp.zeros(3, bool))
  np.testing.assert_array_equal(ids, [1, 2, 3])
  tree = mcts.backup_children(tree, ids, jnp.array([0.5, -0.5, 1.5]))
  before = tree
  # Two valid actions, one free slot: action 0 gets node 4, action 2 does not fit.
  tree, ids = mcts.expand(tree, 1, jnp.array([0.7, 0.2, 0.1]), jnp.array([4.0, 5.0, 6.0]),
                          jnp.array([True, False, False]), jnp.array([True, False, True]))
  np.testing.assert_array_equal(ids, [4, -1, -1])
  assert int(tree.num_nodes) == 5
  np.testing.assert_array_equal(tree.children[1], [4, -1, -1])
  assert (int(tree.parent[4]), int(tree.action[4]), bool(tree.terminal[4])) == (1, 0, True)
  np.testing.assert_allclose([tree.prior[4], tree.reward[4]], [0.7, 4.0])
  for name in ("parent", "action", "visits", "value_sum", "prior", "reward", "terminal"):
    np.testing.assert_array_equal(getattr(tree, name)[:4], getattr(before, name)[:4])
  np.testing.assert_array_equal(np.delete(np.asarray(tree.children), 1, axis=0),
                                np.delete(np.asarray(before.children), 1, axis=0))
  full = tree
  for node in (2, 1):  # a full tree: nothing is added, nothing changes
    tree, ids = mcts.expand(tree, node, jnp.full(3, 1 / 3), jnp.ones(3), jnp.zeros(3, bool))
    np.testing.assert_array_equal(ids, [-1, -1, -1])
    for x, y in zip(jax.tree.leaves(tree), jax.tree.leaves(full)):
      np.testing.assert_array_equal(x, y)
  # Backups still work. Before: the root got (1 + .5) + (2 - .5) + (3 + 1.5) = 7.5.
  # backup(4, 1): n4 += 1; G = 4 + 1 = 5 -> n1 = .5 + 5; G = 1 + 5 = 6 -> root = 7.5 + 6.
  tree = mcts.backup(tree, 4, 1.0)
  np.testing.assert_array_equal(tree.visits[:5], [4, 2, 1, 1, 1])
  np.testing.assert_array_equal(tree.value_sum[:5], [13.5, 5.5, -0.5, 1.5, 1.0])


def test_expand_keeps_existing_children_and_allocates_in_action_order():
  tree, ids = mcts.expand(mcts.init_tree(10, 3), 0, jnp.full(3, 1 / 3), jnp.zeros(3),
                          jnp.zeros(3, bool), jnp.array([False, True, False]))
  np.testing.assert_array_equal(ids, [-1, 1, -1])
  tree, ids = mcts.expand(tree, 0, jnp.full(3, 1 / 3), jnp.zeros(3), jnp.zeros(3, bool))
  np.testing.assert_array_equal(ids, [2, -1, 3])
  np.testing.assert_array_equal(tree.children[0], [2, 1, 3])
  np.testing.assert_array_equal(tree.action[:4], [-1, 1, 0, 2])


def test_update_stop_after_patience_unchanged_iterations():
  tree = _hand_tree()
  state = mcts.init_stop()
  stops = []
  # Root action visits per iteration; the most-visited action: 0, 1, 1, 1, 0.
  for visits in ([1, 0], [1, 2], [1, 3], [2, 3], [5, 3]):
    tree = tree.replace(visits=tree.visits.at[1].set(visits[0]).at[2].set(visits[1]))
    state, stop = mcts.update_stop(state, tree, patience=2)
    stops.append((int(state.best_action), int(state.unchanged), bool(stop)))
  assert stops == [(0, 0, False), (1, 0, False), (1, 1, False), (1, 2, True), (0, 0, False)]


def test_init_tree_root_value_counts_as_visits():
  tree = mcts.init_tree(3, 2, root_value=0.5, root_visits=1)
  assert (int(tree.visits[0]), float(tree.value_sum[0]), int(tree.num_nodes)) == (1, 0.5, 1)
  with pytest.raises(ValueError):
    mcts.init_tree(0, 2)
  with pytest.raises(ValueError):
    mcts.select(tree, rule="ucb")
