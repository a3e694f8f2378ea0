"""Inference-time strategies on a toy sequential task whose outcomes are known by hand: samples
and tokens spent, one sampler call per iteration, votes, Best-of-N, beam search and PRM-MCTS
with an oracle PRM."""
import jax
import numpy as np
import pytest

from algorithms.prm import search
from marft.rollout.engine import Sample
from marft.rollout.workflow import RoleOutcome, StageResult, Workflow
from marft.tokenizers import CharTokenizer

TOK = CharTokenizer()


class DigitsWorkflow(Workflow):
  """Roles write one digit each, one role per stage, in one turn; success: the digits spell
  the task's target. The prompt shows the target (for the oracle PRM) and the digits so far."""

  def __init__(self, target: str):
    super().__init__({"target": target}, max_turns=1)
    self.roles = tuple(f"r{i}" for i in range(len(target)))
    self.digits = ""

  def stages(self):
    return tuple((role,) for role in self.roles)

  def prompt(self, role):
    return [{"role": "user", "content": f"Q{self.task['target']} {self.digits}"}]

  def act(self, responses):
    (role, text), = responses.items()
    self.digits += text[:1] or "?"
    self.advance()
    return StageResult({role: RoleOutcome(0.0)})

  def expert_response(self, role):
    return self.task["target"][len(self.digits)]

  def final_answer(self):
    return self.digits if len(self.digits) == len(self.task["target"]) else None

  @property
  def success(self):
    return self.digits == self.task["target"]


class CyclingSampler:
  """Responses cycle through `options` over every prompt of every call, in order; counts
  calls and prompts."""

  def __init__(self, options, scripted=None):
    self.options, self.scripted, self.count, self.calls, self.sizes = options, scripted, 0, 0, []

  def __call__(self, prompts, key):
    del key
    self.calls += 1
    self.sizes.append(len(prompts))
    out = []
    for _ in prompts:
      text = (self.scripted[self.count] if self.scripted else
              self.options[self.count % len(self.options)])
      self.count += 1
      ids = TOK.encode(text) + [TOK.eos_id]
      out.append(Sample(np.asarray(ids, np.int32), np.full(len(ids), -0.25, np.float32)))
    return out


def oracle_prm(steps):
  """+1 if the step's digits so far (prompt's digits + the response's) are a prefix of the
  target shown in the prompt, else -1."""
  values = []
  for tokens in steps:
    text = TOK.decode([t for t in tokens if t >= 4])
    target, _, rest = text.partition("Q")[2].partition(" ")
    values.append(1.0 if target.startswith("".join(c for c in rest if c.isdigit())) else -1.0)
  return np.asarray(values, np.float32)


KEY = jax.random.key(0)


def test_straight_through_spends_one_sample_per_agent_step_in_one_call_per_stage():
  sampler = CyclingSampler("0123")
  workflows = [DigitsWorkflow(t) for t in ("012", "123", "222", "301")]
  outcomes, spend = search.straight_through(workflows, sampler, TOK, KEY)
  # Stage s of question q gets option (s * 4 + q) % 4 = q: every question answers q, q, q.
  assert [o.answer for o in outcomes] == ["000", "111", "222", "333"]
  assert [o.success for o in outcomes] == [False, False, True, False]
  assert spend.samples == 12 and spend.tokens == 24  # a digit and the stop token each
  assert [o.samples for o in outcomes] == [3] * 4 and [o.tokens for o in outcomes] == [6] * 4
  assert spend.generate_calls == sampler.calls == 3 and spend.leaves_per_call == [4, 4, 4]


def test_majority_vote_counts_final_answers_and_breaks_ties_by_the_first_reached():
  # One single-step question, five copies answering 3, 1, 3, 2, 1: a 2-2 tie, "3" came first.
  sampler = CyclingSampler(None, scripted=["3", "1", "3", "2", "1"])
  outcomes, spend = search.majority_vote([DigitsWorkflow("1")], sampler, TOK, KEY, n=5)
  assert outcomes[0].answer == "3" and not outcomes[0].success
  assert spend.samples == 5 and sampler.calls == 1
  sampler = CyclingSampler(None, scripted=["1", "3", "1", "2", "3", "1"])
  outcomes, _ = search.majority_vote([DigitsWorkflow("1")], sampler, TOK, KEY, n=6)
  assert outcomes[0].answer == "1" and outcomes[0].success


def test_best_of_n_takes_the_highest_outcome_score():
  # The four copies answer 00, 11, 22 and 33 (the cycle runs over copies within a stage);
  # the oracle scores only the third's last step +1.
  sampler = CyclingSampler("0123")
  outcomes, spend = search.best_of_n([DigitsWorkflow("22")], sampler, TOK, KEY, n=4,
                                     scorer=oracle_prm)
  assert outcomes[0].answer == "22" and outcomes[0].success
  assert spend.samples == 8 and spend.scorer_calls == 1 and spend.scored_steps == 4


def test_beam_search_with_an_oracle_prm_solves_what_one_pass_rarely_does():
  targets = ["0123", "3210", "2222", "1302"]
  outcomes, spend = search.beam_search([DigitsWorkflow(t) for t in targets],
                                       CyclingSampler("0123"), TOK, KEY, scorer=oracle_prm,
                                       width=5)
  # Five consecutive options of a 4-cycle cover every digit, so the oracle keeps the right one.
  assert all(o.success for o in outcomes)
  # 4 steps x 4 questions x 5 candidates, one sampler and one PRM call per step.
  assert spend.samples == 80 and spend.generate_calls == 4 and spend.scorer_calls == 4
  assert spend.leaves_per_call == [4, 4, 4, 4]
  assert [o.samples for o in outcomes] == [20] * 4


def test_prm_mcts_with_an_oracle_prm_follows_the_right_path():
  targets = ["012", "210", "111"]
  sampler = CyclingSampler("012")
  outcomes, spend = search.prm_mcts([DigitsWorkflow(t) for t in targets], sampler, TOK, KEY,
                                    scorer=oracle_prm, children=3, simulations=40, c=2.0)
  assert all(o.success for o in outcomes), [o.answer for o in outcomes]
  # Leaves of all three trees go into each sampler call while every tree is still searching,
  # and each iteration makes one PRM call (the PRM is its own ORM here).
  assert spend.leaves_per_call[0] == 3 and spend.generate_calls == sampler.calls
  _, again = search.prm_mcts([DigitsWorkflow(t) for t in targets], CyclingSampler("012"), TOK,
                             KEY, scorer=oracle_prm, orm=oracle_prm, children=3,
                             simulations=40, c=2.0)
  assert again.scorer_calls == again.generate_calls
  assert spend.samples == sum(o.samples for o in outcomes)


@pytest.mark.parametrize("rule", ["uct", "puct"])
def test_data_mcts_grades_terminals_and_backs_up_their_mean(rule):
  # Two steps over {0, 1, 2}: 3 + 9 nodes below the root; target "12".
  sampler = CyclingSampler("012")
  found = search.run_mcts([DigitsWorkflow("12")], sampler, TOK, KEY, children=3,
                          simulations=30, c=4.0, rule=rule)
  tree = jax.tree.map(lambda x: np.asarray(x[0]), found.trees)
  nodes = int(tree.num_nodes)
  assert nodes == 13  # every node expanded once, never twice
  for node in range(1, nodes):
    wf = found.states[0][node]
    if wf.done:  # a terminal's every backup is its grade
      mean = tree.value_sum[node] / tree.visits[node]
      assert mean == (1.0 if wf.digits == "12" else -1.0)
  # A first-digit node's value is the visit-weighted mean of its terminals' grades.
  for node in tree.children[0]:
    kids = tree.children[node]
    assert tree.visits[node] == tree.visits[kids].sum()
    np.testing.assert_allclose(tree.value_sum[node], tree.value_sum[kids].sum())
  # A simulation is a graded terminal backed up; all terminal siblings back up at once.
  assert 30 <= tree.visits[0] < 30 + 3
  right = [n for n in tree.children[0] if found.states[0][n].digits == "1"][0]
  wrong = [n for n in tree.children[0] if found.states[0][n].digits != "1"]
  assert all(tree.value_sum[right] / tree.visits[right] > tree.value_sum[n] / tree.visits[n]
             for n in wrong)


def test_data_mcts_stops_early_when_the_root_choice_settles():
  # The root's most-visited action settles within a few backups, so with patience 3 the
  # search stops long before its 1000-simulation budget; no node is expanded twice.
  found = search.run_mcts([DigitsWorkflow("12")], CyclingSampler("012"), TOK, KEY, children=3,
                          simulations=1000, c=4.0, patience=3)
  tree = jax.tree.map(lambda x: np.asarray(x[0]), found.trees)
  assert 3 <= tree.visits[0] < 100 and int(tree.num_nodes) <= 13
