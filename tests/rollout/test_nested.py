"""Nested rollouts in the engine: MATPO's planner delegating to workers, on a scripted policy."""
import numpy as np

import jax

from envs import search_qa
from marft.rollout.engine import RolloutConfig, Sample, collect
from marft.tokenizers import CharTokenizer

TOK = CharTokenizer()


def _task(name, answer):
  return {"question": f"{name} boss", "answer": answer, "hops": 1,
          "chain": [[name, "boss", answer]]}


def scripted_by_prompt(reply):
  """A sampler whose reply is a function of the decoded prompt; records every call."""
  calls = []

  def sample(prompts, key):
    texts = [TOK.decode(p) for p in prompts]
    calls.append(texts)
    out = []
    for text in texts:
      ids = TOK.encode(reply(text)) + [TOK.eos_id]
      out.append(Sample(np.asarray(ids, np.int32), np.full(len(ids), -0.5, np.float32)))
    return out

  sample.calls = calls
  return sample


def _reply(text):
  """Planner of task Bavo delegates twice then answers; planner of Gimo answers at once;
  workers search once then summarise the first result's tail."""
  lines = text.rstrip(">").strip().split("\n")
  if lines[0].startswith("P Bavo"):
    return {1: "D Bavo boss", 3: "D Bavo boss"}.get(len(lines), "A Kelu")
  if lines[0].startswith("P "):
    return "A Dita"
  if len(lines) == 1:
    return "S " + lines[0].split("|")[1]
  return "F " + lines[-1].split(";")[0].split()[-1]


def test_nested_rows_point_at_their_planner_delegations_and_share_generate_calls():
  tasks = [_task("Bavo", "Kelu"), _task("Gimo", "Dita")]
  cfg = {"max_turns": 4, "worker_turns": 3}
  workflows = [search_qa.make_workflow(t, "mas", cfg, 4) for t in tasks]
  sampler = scripted_by_prompt(_reply)
  rollout = collect(workflows, [sampler], TOK, jax.random.key(0),
                    mapping={"planner": 0, "worker": 0}, config=RolloutConfig(k=2, tree=False))
  b = rollout.batch
  roles = [("planner", "worker")[r] for r in b.role_id]
  # Iteration 1: all 4 planners (2 tasks x 2 copies) in one call; then Bavo's two copies run
  # their workers while Gimo's copies have answered; then ... one call per iteration, never
  # one per nested episode.
  assert len(sampler.calls) == rollout.metrics["rollout/generate_calls"] == \
      rollout.metrics["rollout/iterations"] == 7
  assert [len(c) for c in sampler.calls] == [4, 2, 2, 2, 2, 2, 2]
  for row in range(b.num_rows):
    if roles[row] == "planner":
      assert b.parent_id[row] == -1
    else:  # the latest planner row of the same episode before it, a delegation
      parent = b.parent_id[row]
      assert roles[parent] == "planner" and b.episode_id[parent] == b.episode_id[row]
      assert parent < row and TOK.decode(b.tokens[parent][b.loss_mask[parent] > 0]).startswith(
          "D ")
      later = [r for r in range(parent + 1, row) if roles[r] == "planner"
               and b.episode_id[r] == b.episode_id[row]]
      assert not later
  # Bavo's episodes: 3 planner rows, 2 delegations x 2 worker rows each.
  bavo = b.episode_id == 0
  assert (np.asarray(roles)[bavo] == "worker").sum() == 4
  assert len(set(b.parent_id[bavo & (b.role_id == 1)])) == 2
  assert rollout.metrics["rollout/search_calls"] == 4  # 2 copies x 2 delegations x 1 search


def test_tool_output_tokens_are_outside_the_loss_mask():
  wf = search_qa.make_workflow(_task("Bavo", "Kelu"), "single", {}, 3)
  replies = iter(["S Bavo boss", "A Kelu"])
  sampler = scripted_by_prompt(lambda text: next(replies))
  b = collect([wf], [sampler], TOK, jax.random.key(0), mapping={"agent": 0},
              config=RolloutConfig(k=1, tree=False)).batch
  second = TOK.decode(b.tokens[1])
  result = search_qa.tool_for({}).documents[search_qa.tool_for({}).retrieve("Bavo boss", 1)[0]]
  start = second.index(result)  # the search result is in the second row's prompt ...
  assert np.all(b.loss_mask[1, start:start + len(result)] == 0)  # ... and gets no gradient
  trained = TOK.decode(b.tokens[1][b.loss_mask[1] > 0])
  assert trained.startswith("A Kelu")
  assert TOK.decode(b.tokens[0][b.loss_mask[0] > 0]).startswith("S Bavo boss")
