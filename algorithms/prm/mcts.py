"""Monte Carlo tree search as pure functions on a tree held in fixed-size arrays.

Selection by UCT (Kocsis & Szepesvari 2006, "Bandit based Monte-Carlo Planning"; the rule of
MASPRM's MCTS section, Yazdani et al. 2025) or by MuZero's PUCT (Schrittwieser et al. 2020,
Appendix B, as DeepMind's mctx computes it). One `Tree` is one search problem; a caller
advancing B problems together vmaps `select`, `expand` and `backup_children` over a batch of
trees, so that the B selected leaves are extended in one batched model call.

Text MCTS (MASPRM), per iteration and per tree:
  1. `select` a leaf: the first unexpanded or terminal node on the argmax-score path;
  2. a terminal leaf backs up its stored value again; otherwise the caller samples A
     candidate continuations of the leaf (all leaves in one `generate` call) and `expand`s
     the leaf with their priors, edge rewards and terminal flags;
  3. the caller evaluates every new child (a PRM, or +-1 at a terminal) and backs up each
     child's value (`backup_children`, A backups).
The answer follows `greedy_path` (the highest-mean child from the root down); `update_stop`
ends a search whose root's most-visited action has stopped changing.

`search` is the same loop, fully jitted, for JAX-native environments: the recurrent function
expands all actions of a leaf in one call, and the leaf's own value estimate is backed up.
With PUCT and the root's value counted as one visit it reproduces `mctx.muzero_policy`
without Dirichlet noise, visit for visit: mctx evaluates the one unvisited action a
simulation selects; here a node's children are created together, unvisited, and a child's
value estimate is backed up when a simulation first selects it (it is expanded then).

Shapes: `[N]` one entry per node slot (node 0 is the root), `[A]` one per action.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Tree:
  """A search tree in N node slots with A actions per node; slots `[0, num_nodes)` are used.

  A node id (its slot) never changes once allocated, so a caller keeps its own per-node state
  (e.g. a Python list of cloned workflows, or an embedding array `[N, ...]`) indexed by it.
  A node's value is the mean return from it, `value_sum / visits`; the edge reward from its
  parent is added when a return passes to the parent.
  """

  parent: jax.Array  # int32[N], -1 for the root and unused slots
  action: jax.Array  # int32[N], the parent's action that led here (-1 for the root)
  children: jax.Array  # int32[N, A], child id per action, -1 = not expanded
  visits: jax.Array  # int32[N]
  value_sum: jax.Array  # float32[N], sum of backed-up returns
  prior: jax.Array  # float32[N], prior probability under the parent's policy
  reward: jax.Array  # float32[N], reward on the edge parent -> node (0 for the root)
  terminal: jax.Array  # bool[N]
  num_nodes: jax.Array  # int32[], slots used

  @property
  def capacity(self) -> int:
    return self.parent.shape[-1]

  @property
  def num_actions(self) -> int:
    return self.children.shape[-1]


def init_tree(num_nodes: int, num_actions: int, *, root_value: float | jax.Array = 0.0,
              root_visits: int = 0) -> Tree:
  """A tree of `num_nodes` slots holding only the root, whose `root_value` counts as
  `root_visits` backed-up returns (mctx counts the root's value estimate as one visit)."""
  if num_nodes < 1 or num_actions < 1:
    raise ValueError(f"need num_nodes >= 1 and num_actions >= 1, got {num_nodes}, {num_actions}")
  return Tree(
      parent=jnp.full((num_nodes,), -1, jnp.int32),
      action=jnp.full((num_nodes,), -1, jnp.int32),
      children=jnp.full((num_nodes, num_actions), -1, jnp.int32),
      visits=jnp.zeros((num_nodes,), jnp.int32).at[0].set(root_visits),
      value_sum=jnp.zeros((num_nodes,), jnp.float32).at[0].set(
          jnp.asarray(root_value, jnp.float32) * root_visits),
      prior=jnp.zeros((num_nodes,), jnp.float32).at[0].set(1.0),
      reward=jnp.zeros((num_nodes,), jnp.float32),
      terminal=jnp.zeros((num_nodes,), bool),
      num_nodes=jnp.array(1, jnp.int32))


def node_values(tree: Tree) -> jax.Array:
  """Every node's mean backed-up return, `value_sum / max(visits, 1)` (0 if unvisited)."""
  return tree.value_sum / jnp.maximum(tree.visits, 1).astype(jnp.float32)


def _children_stats(tree: Tree, node: jax.Array, discount: float
                    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """`(expanded: bool[A], child ids clipped to >= 0, visits: int32[A], Q: float32[A])` of a
  node's children, Q = r_child + discount * V_child."""
  node = jnp.asarray(node, jnp.int32)
  chex.assert_shape(node, ())
  kids = tree.children[node]
  expanded = kids >= 0
  safe = jnp.maximum(kids, 0)
  visits = jnp.where(expanded, tree.visits[safe], 0)
  q = tree.reward[safe] + discount * node_values(tree)[safe]
  return expanded, safe, visits, q


def uct_scores(tree: Tree, node: jax.Array, *, c: float, discount: float = 1.0) -> jax.Array:
  """UCT (Kocsis & Szepesvari 2006; MASPRM's MCTS section) of each action at `node`:

  UCT_a = Qbar_a + c sqrt(ln N_node / N_a),   Qbar_a = r_a + discount * W_a / N_a,

  over the node's children; an unvisited child scores +inf, an unexpanded action -inf.
  Returns float32[A].
  """
  expanded, _, visits, q = _children_stats(tree, node, discount)
  n_node = tree.visits[node].astype(jnp.float32)
  n_child = jnp.maximum(visits, 1).astype(jnp.float32)
  score = q + c * jnp.sqrt(jnp.log(n_node) / n_child)
  score = jnp.where(visits > 0, score, jnp.inf)
  return jnp.where(expanded, score, -jnp.inf)


def puct_scores(tree: Tree, node: jax.Array, *, c_init: float = 1.25, c_base: float = 19652.0,
                discount: float = 1.0, normalize_q: bool = True) -> jax.Array:
  """MuZero's PUCT (Schrittwieser et al. 2020, Appendix B) of each action at `node`, as
  `mctx.muzero_action_selection` computes it (without its 1e-7 tie-breaking noise):

  score_a = Qhat_a + P_a sqrt(N) (c_init + ln((N + c_base + 1) / c_base)) / (1 + N_a),

  N the node's visits, P_a the child's prior, N_a its visits. With `normalize_q`, Qhat is
  mctx's `qtransform_by_parent_and_siblings`: Q_a = r_a + discount * V_a min-max normalised
  over the node's value and its visited children's Q (denominator at least 1e-8), an
  unvisited child at the minimum (0); otherwise Qhat_a = Q_a, 0 for an unvisited child
  (MuZero's pseudocode). An unexpanded action scores -inf. Returns float32[A].
  """
  expanded, safe, visits, q = _children_stats(tree, node, discount)
  n = tree.visits[node]
  visited = visits > 0
  if normalize_q:
    node_value = node_values(tree)[node]
    safe_q = jnp.where(visited, q, node_value)
    low = jnp.minimum(node_value, jnp.min(safe_q))
    high = jnp.maximum(node_value, jnp.max(safe_q))
    value_score = (jnp.where(visited, q, low) - low) / jnp.maximum(high - low, 1e-8)
  else:
    value_score = jnp.where(visited, q, 0.0)
  pb_c = c_init + jnp.log((n + c_base + 1.0) / c_base)
  policy_score = jnp.sqrt(n) * pb_c * tree.prior[safe] / (visits + 1)
  return jnp.where(expanded, value_score + policy_score, -jnp.inf)


_RULES: dict[str, Callable[..., jax.Array]] = {"uct": uct_scores, "puct": puct_scores}


def _is_expanded(tree: Tree, node: jax.Array) -> jax.Array:
  return jnp.any(tree.children[node] >= 0)


def select(tree: Tree, *, rule: str = "uct", **kwargs: Any) -> tuple[jax.Array, jax.Array]:
  """The leaf to extend: from the root, while the current node is expanded (has a child) and
  not terminal, move to its argmax-score child (`rule` "uct" or "puct", `kwargs` its
  constants; ties go to the lowest action). Unvisited children score +inf under UCT, so
  they are tried first; an unexpanded action is never chosen.

  Returns `(leaf, depth)`, int32[] each: the first node on that path that is unexpanded (to
  expand) or terminal (to evaluate again), and its depth (the root's is 0). The walk is
  bounded by N steps.
  """
  if rule not in _RULES:
    raise ValueError(f"rule must be one of {sorted(_RULES)}, got {rule!r}")
  score = functools.partial(_RULES[rule], **kwargs)

  def descends(state):
    node, depth = state
    return (depth < tree.capacity) & _is_expanded(tree, node) & ~tree.terminal[node]

  def step(state):
    node, depth = state
    action = jnp.argmax(score(tree, node))
    return tree.children[node, action], depth + 1

  return jax.lax.while_loop(descends, step, (jnp.array(0, jnp.int32), jnp.array(0, jnp.int32)))


def expand(tree: Tree, node: jax.Array, priors: jax.Array, rewards: jax.Array,
           terminal: jax.Array, valid: jax.Array | None = None) -> tuple[Tree, jax.Array]:
  """Adds the children of `node` for every action that is `valid` (default all) and not yet
  expanded, with their priors, edge rewards and terminal flags (each `[A]`); new children
  are unvisited. Returns the tree and `child_ids: int32[A]`, -1 where no child was added.

  New ids are allocated in action order from `num_nodes`; children that do not fit in the N
  slots are not added (id -1) and the tree is otherwise unchanged. A search of S iterations
  that each expand one leaf needs N >= 1 + S * A.
  """
  a = tree.num_actions
  node = jnp.asarray(node, jnp.int32)
  chex.assert_shape(node, ())
  chex.assert_shape([priors, rewards, terminal], (a,))
  add = tree.children[node] < 0
  if valid is not None:
    chex.assert_shape(valid, (a,))
    add = add & valid
  ids = tree.num_nodes + jnp.cumsum(add, dtype=jnp.int32) - 1
  added = add & (ids < tree.capacity)
  child_ids = jnp.where(added, ids, -1)
  slots = jnp.where(added, ids, tree.capacity)  # out of range: dropped

  def put(x: jax.Array, values: jax.Array) -> jax.Array:
    return x.at[slots].set(jnp.broadcast_to(values, (a,)).astype(x.dtype), mode="drop")

  tree = tree.replace(
      parent=put(tree.parent, node),
      action=put(tree.action, jnp.arange(a)),
      children=tree.children.at[node].set(jnp.where(added, ids, tree.children[node])),
      visits=put(tree.visits, 0),
      value_sum=put(tree.value_sum, 0.0),
      prior=put(tree.prior, priors),
      reward=put(tree.reward, rewards),
      terminal=put(tree.terminal, terminal),
      num_nodes=tree.num_nodes + jnp.sum(added, dtype=jnp.int32))
  return tree, child_ids


def backup(tree: Tree, node: jax.Array, value: jax.Array, *, discount: float = 1.0) -> Tree:
  """Backs up the return `G = value` from `node` to the root: at each node on the way,
  `visits += 1` and `value_sum += G`, then `G <- r_node + discount * G` passing to the parent
  (mctx's convention). A `node` of -1 changes nothing."""
  node = jnp.asarray(node, jnp.int32)
  chex.assert_shape([node, value], ())

  def step(state):
    visits, value_sum, n, g = state
    return (visits.at[n].add(1), value_sum.at[n].add(g), tree.parent[n],
            tree.reward[n] + discount * g)

  visits, value_sum, _, _ = jax.lax.while_loop(
      lambda state: state[2] >= 0, step,
      (tree.visits, tree.value_sum, node, jnp.asarray(value, jnp.float32)))
  return tree.replace(visits=visits, value_sum=value_sum)


def backup_children(tree: Tree, child_ids: jax.Array, child_values: jax.Array, *,
                    discount: float = 1.0) -> Tree:
  """`backup` of `child_values[k]` from `child_ids[k]` for each k in order (`[K]` each; an id
  of -1 is skipped): the A new children of an expanded leaf each back up their own value,
  or a re-selected terminal its stored value."""
  chex.assert_rank([child_ids, child_values], 1)
  chex.assert_equal_shape([child_ids, child_values])
  return jax.lax.fori_loop(
      0, child_ids.shape[0],
      lambda k, t: backup(t, child_ids[k], child_values[k], discount=discount), tree)


def root_action_visits(tree: Tree) -> jax.Array:
  """Visits of each root action's child, 0 where unexpanded. Returns int32[A]."""
  kids = tree.children[0]
  return jnp.where(kids >= 0, tree.visits[jnp.maximum(kids, 0)], 0)


def most_visited_action(tree: Tree) -> jax.Array:
  """The root action with the most visits (ties: the lowest). Returns int32[]."""
  return jnp.argmax(root_action_visits(tree)).astype(jnp.int32)


def _greedy_child(tree: Tree, node: jax.Array, discount: float) -> jax.Array:
  """The visited child of `node` with the highest Q = r + discount * V (ties: lowest action),
  -1 if it has none or `node` is -1."""
  expanded, _, visits, q = _children_stats(tree, jnp.maximum(node, 0), discount)
  visited = expanded & (visits > 0) & (node >= 0)
  best = jnp.argmax(jnp.where(visited, q, -jnp.inf))
  return jnp.where(jnp.any(visited), tree.children[jnp.maximum(node, 0), best], -1)


def greedy_path(tree: Tree, max_depth: int, *, discount: float = 1.0) -> jax.Array:
  """MASPRM's answer rule: from the root, repeatedly take the visited child with the highest
  mean return Q = r + discount * V. Returns the node ids `int32[max_depth + 1]` from the
  root, -1 after the path ends (`tree.action[ids]` are its actions)."""
  def step(node, _):
    child = _greedy_child(tree, node, discount)
    return child, child

  _, rest = jax.lax.scan(step, jnp.array(0, jnp.int32), None, length=max_depth)
  return jnp.concatenate([jnp.zeros((1,), jnp.int32), rest])


def greedy_leaf(tree: Tree, *, discount: float = 1.0) -> jax.Array:
  """The last node of the greedy path (`greedy_path` followed to its end). Returns int32[]."""
  def step(state):
    node, child, depth = state
    return child, _greedy_child(tree, child, discount), depth + 1

  root = jnp.array(0, jnp.int32)
  leaf, _, _ = jax.lax.while_loop(
      lambda state: (state[1] >= 0) & (state[2] < tree.capacity), step,
      (root, _greedy_child(tree, root, discount), jnp.array(0, jnp.int32)))
  return leaf


class StopState(NamedTuple):
  """Early-stop bookkeeping: the root's most-visited action after the last iteration (-1
  before the first) and for how many consecutive iterations it has not changed."""

  best_action: jax.Array  # int32[]
  unchanged: jax.Array  # int32[]


def init_stop() -> StopState:
  """The bookkeeping before the first iteration."""
  return StopState(best_action=jnp.array(-1, jnp.int32), unchanged=jnp.array(0, jnp.int32))


def update_stop(state: StopState, tree: Tree, *, patience: int) -> tuple[StopState, jax.Array]:
  """After an iteration: stop once the root's most-visited action has stayed the same for
  `patience` consecutive iterations (MASPRM's MCTS section: 24). Returns `(state, stop)`."""
  best = most_visited_action(tree)
  unchanged = jnp.where(best == state.best_action, state.unchanged + 1, 0).astype(jnp.int32)
  return StopState(best_action=best, unchanged=unchanged), unchanged >= patience


class Expansion(NamedTuple):
  """A recurrent function's output for one node: for each of its A actions the prior under
  the node's policy, the edge reward, the resulting node's value estimate, whether it is
  terminal, its embedding (a pytree of `[A, ...]` arrays) and whether the action is legal."""

  prior: jax.Array  # float32[A]
  reward: jax.Array  # float32[A]
  value: jax.Array  # float32[A]
  terminal: jax.Array  # bool[A]
  embedding: Any  # pytree of [A, ...]
  valid: jax.Array | None = None  # bool[A], default all


# (params, key, embedding of one node) -> Expansion of its A actions.
RecurrentFn = Callable[[Any, jax.Array, Any], Expansion]


@flax.struct.dataclass
class SearchState:
  """`search`'s tree with each node's embedding (`[N, ...]`) and the value estimate it was
  created with (`raw_value: float32[N]`, the root's is `root_value`)."""

  tree: Tree
  embeddings: Any
  raw_value: jax.Array


def _expand_node(state: SearchState, node: jax.Array, out: Expansion) -> SearchState:
  a = state.tree.num_actions
  chex.assert_shape([out.prior, out.reward, out.value, out.terminal], (a,))
  tree, ids = expand(state.tree, node, out.prior, out.reward, out.terminal, out.valid)
  slots = jnp.where(ids >= 0, ids, tree.capacity)
  embeddings = jax.tree.map(lambda x, e: x.at[slots].set(e, mode="drop"),
                            state.embeddings, out.embedding)
  raw_value = state.raw_value.at[slots].set(out.value.astype(jnp.float32), mode="drop")
  return SearchState(tree=tree, embeddings=embeddings, raw_value=raw_value)


def search(params: Any, key: jax.Array, *, root_embedding: Any, root_value: jax.Array,
           recurrent_fn: RecurrentFn, num_simulations: int, rule: str = "uct",
           discount: float = 1.0, **rule_kwargs: Any) -> SearchState:
  """Jitted MCTS of one root for a JAX-native environment (vmap it over roots).

  The root (its value counted as one visit) is expanded by one `recurrent_fn` call; then each
  of `num_simulations` simulations `select`s a leaf (`rule`, `rule_kwargs`, `discount`),
  expands it by one `recurrent_fn` call on its embedding unless it is terminal, and backs up
  its value: the estimate it was created with, 0 at a terminal (a terminal's payoff is its
  edge reward). Deterministic given `key`, which is split among the `recurrent_fn` calls only
  (selection has no noise). Uses N = 1 + (num_simulations + 1) * A node slots.
  """
  chex.assert_shape(root_value, ())
  keys = jax.random.split(key, num_simulations + 1)
  root_out = recurrent_fn(params, keys[0], root_embedding)
  num_actions = root_out.prior.shape[0]
  capacity = 1 + (num_simulations + 1) * num_actions
  tree = init_tree(capacity, num_actions, root_value=root_value, root_visits=1)
  embeddings = jax.tree.map(
      lambda x: jnp.zeros((capacity,) + x.shape, x.dtype).at[0].set(x), root_embedding)
  raw_value = jnp.zeros((capacity,), jnp.float32).at[0].set(root_value)
  state = _expand_node(SearchState(tree=tree, embeddings=embeddings, raw_value=raw_value),
                       jnp.array(0, jnp.int32), root_out)

  def simulate(sim, state):
    leaf, _ = select(state.tree, rule=rule, discount=discount, **rule_kwargs)
    terminal = state.tree.terminal[leaf]
    state = jax.lax.cond(
        terminal, lambda s: s,
        lambda s: _expand_node(s, leaf, recurrent_fn(
            params, keys[sim + 1], jax.tree.map(lambda x: x[leaf], s.embeddings))),
        state)
    value = jnp.where(terminal, 0.0, state.raw_value[leaf])
    return state.replace(tree=backup(state.tree, leaf, value, discount=discount))

  return jax.lax.fori_loop(0, num_simulations, simulate, state)
