"""Search QA: the knowledge base, the BM25 tool and its noise, the workflows' rules and their
bad input, checked against the task's definition."""
import json
import math
import random

import pytest

from envs import search_qa as s
from envs.data.task_instances import load_instances


def _play(workflow, responses):
  """Acts `responses` (role -> list of strings, consumed in order) until done; the outcomes."""
  outcomes = []
  queues = {role: list(r) for role, r in responses.items()}
  while not workflow.done:
    role = workflow.acting_roles()[0]
    outcomes.append((role, workflow.act({role: queues[role].pop(0)})))
  return outcomes


def test_knowledge_base_is_functional_and_splits_never_share_an_answer():
  kb = s.knowledge_base(200, ("boss", "pal", "foe"), 0, 0)
  assert len(kb["facts"]) == 600 and len(set(kb["entities"])) == 200
  assert all(h != t for h, _, t in kb["facts"])
  answers = {split: {s.generate_task(i, split, {})["answer"] for i in range(300)}
             for split in ("train", "test")}
  assert answers["train"] and answers["test"] and not answers["train"] & answers["test"]
  task = s.generate_task(7, "test", {"min_hops": 3, "max_hops": 3})
  head = task["question"].split()[0]
  for relation in task["question"].split()[1:]:  # follow the chain in the raw facts
    head = next(t for h, r, t in kb["facts"] if h == head and r == relation)
  assert head == task["answer"] and task["hops"] == 3


def test_distractors_add_decoy_facts_about_each_entity():
  kb = s.knowledge_base(50, ("boss", "pal"), 1, 2)
  assert len(kb["facts"]) == 50 * 2 + 50 * 2
  decoys = {h for h, _, _ in kb["facts"]} - set(kb["entities"])
  assert len(decoys) == 100


def test_gold_fact_is_in_the_top_5_for_95_percent_of_single_hop_questions():
  cfg = {"min_hops": 1, "max_hops": 1, "distractors": 1}
  tool = s.tool_for(cfg)
  hits = 0
  for seed in range(300):
    fact = s.generate_task(seed, "test", cfg)["chain"][0]
    found = [tool.documents[i] for i in tool.retrieve(f"{fact[0]} {fact[1]}", 5)]
    hits += s.fact_text(fact) in found
  assert hits / 300 >= 0.95


def test_measured_noise_rate_equals_the_knob_within_sampling_error():
  tool = s.tool_for({})
  rng = random.Random(0)
  for noise in (0.25, 0.5):
    results = replaced = 0
    for seed in range(400):
      fact = s.generate_task(seed, "train", {})["chain"][0]
      texts, n = tool.search(f"{fact[0]} {fact[1]}", 3, noise, rng)
      results += len(texts)
      replaced += n
      for text in texts:  # a replaced result keeps the head and relation of a real fact
        assert len(text.split()) == 3
    rate = replaced / results
    assert abs(rate - noise) < 4 * math.sqrt(noise * (1 - noise) / results), (noise, rate)
  assert tool.search("Zzzz", 3, 0.5, rng) == ([], 0)


def test_expert_solves_clean_questions_in_both_workflows_and_earns_the_full_reward():
  for kind in ("single", "mas"):
    solved = 0
    for seed in range(60):
      wf = s.make_workflow(s.generate_task(seed, "train", {}), kind, {}, 4)
      outcomes = []
      while not wf.done:
        role = wf.acting_roles()[0]
        outcomes.append(wf.act({role: wf.expert_response(role)}))
      solved += wf.success
      if wf.success:
        assert outcomes[-1].team_reward == pytest.approx(1.0)
    assert solved >= 55, kind


def _task():
  return {"question": "Bavo boss foe", "answer": "Dita", "hops": 2,
          "chain": [["Bavo", "boss", "Kelu"], ["Kelu", "foe", "Dita"]]}


def test_single_agent_reward_is_accuracy_plus_parsed_fraction():
  wf = s.make_workflow(_task(), "single", {}, 4)
  out = _play(wf, {"agent": ["S Bavo boss", "???", "A dita."]})
  # 2 of 3 actions parsed; the answer is right up to case and punctuation.
  assert wf.success and [o.outcomes["agent"].invalid for _, o in out] == [False, True, False]
  assert out[-1][1].team_reward == pytest.approx(0.9 + 0.1 * 2 / 3)
  assert all(o.team_reward == 0 for _, o in out[:-1])


def test_matpo_reward_format_is_half_planner_half_mean_worker_success():
  wf = s.make_workflow(_task(), "mas", {"worker_turns": 2}, 4)
  out = _play(wf, {"planner": ["D Bavo boss", "D Kelu foe", "A Dita"],
                   "worker": ["S Bavo boss", "F Kelu",  # worker 1 succeeds
                              "S", "F Dita"]})  # worker 2: one unparseable search
  assert [r for r, _ in out] == ["planner", "worker", "worker", "planner", "worker", "worker",
                                 "planner"]
  assert wf.delegations == [("Bavo boss", "Kelu"), ("Kelu foe", "Dita")]
  assert out[-1][1].team_reward == pytest.approx(0.9 + 0.1 * (0.5 * 1.0 + 0.5 * 0.5))


def test_worker_that_never_summarises_is_invalid_and_returns_none():
  wf = s.make_workflow(_task(), "mas", {"worker_turns": 2}, 3)
  out = _play(wf, {"planner": ["D Bavo boss", "A Kelu"], "worker": ["S Bavo boss", "S x y"]})
  assert [o.outcomes[r].invalid for r, o in out] == [False, False, True, False]
  assert wf.delegations == [("Bavo boss", "none")] and not wf.success
  # accuracy 0; format 0.5 * 1 (planner) + 0.5 * 0 (its only worker failed)
  assert out[-1][1].team_reward == pytest.approx(0.1 * 0.5)


def test_planner_delegating_past_the_turn_limit_is_invalid_and_ends_the_episode():
  wf = s.make_workflow(_task(), "mas", {}, 2)
  out = _play(wf, {"planner": ["D Bavo boss", "D Kelu foe"], "worker": ["F Kelu"]})
  assert [r for r, _ in out] == ["planner", "worker", "planner"]
  assert out[-1][1].outcomes["planner"].invalid and wf.done and not wf.success
  assert out[-1][1].team_reward == pytest.approx(0.1 * (0.5 * 0.5 + 0.5 * 1.0))


@pytest.mark.parametrize("query", ["", "  ", "!!! ??", "x" * 80])
def test_empty_or_garbled_queries_are_invalid_and_never_reach_the_tool(query):
  wf = s.make_workflow(_task(), "single", {}, 2)
  out = wf.act({"agent": f"S {query}"})
  assert out.outcomes["agent"].invalid and wf.metrics()["search_calls"] == 0
  wf = s.make_workflow(_task(), "mas", {}, 3)
  wf.act({"planner": "D Bavo boss"})
  assert wf.act({"worker": f"S {query}"}).outcomes["worker"].invalid
  assert wf.metrics()["search_calls"] == 0


def test_query_recap_and_final_summary_switches():
  recap = s.make_workflow(_task(), "mas", {}, 4)
  bare = s.make_workflow(_task(), "mas", {"query_recap": False, "final_summary": False}, 4)
  for wf in (recap, bare):
    wf.act({"planner": "D Bavo boss"})
  assert recap.prompt("worker")[0]["content"] == "W Bavo boss foe|Bavo boss"
  assert bare.prompt("worker")[0]["content"] == "W Bavo boss"
  for wf in (recap, bare):
    wf.act({"worker": "S Bavo boss"})
    wf.act({"worker": "F Kelu"})
  assert recap.delegations[0][1] == "Kelu"
  results = bare.delegations[0][1]  # the whole worker transcript instead of the summary
  assert results.startswith("S Bavo boss =") and results.endswith("F Kelu")


def test_chat_prompts_and_tags():
  wf = s.make_workflow(_task(), "mas", {}, 4, "chat")
  system, user = wf.prompt("planner")
  assert "<delegate>" in system["content"] and "Bavo boss foe" in user["content"]
  out = wf.act({"planner": "<think>hmm <answer>x</answer></think>I will ask. "
                           "<delegate>**Bavo boss**</delegate>"})
  assert not out.outcomes["planner"].invalid and wf.subtask == "Bavo boss"
  assert "[CONTEXT]" in wf.prompt("worker")[1]["content"]
  assert wf.act({"worker": "<search>Bavo boss</search>"}).outcomes["worker"].invalid is False
  assert wf.act({"worker": "S Bavo boss"}).outcomes["worker"].invalid  # compact in chat style
  assert s.parse_action("<summary>Kelu</summary>", "chat", ("search", "summary")) == (
      "summary", "Kelu")


def test_user_questions_and_corpus_load_through_the_tfds_builder(tmp_path):
  questions = tmp_path / "q.jsonl"
  questions.write_text("\n".join(json.dumps(r) for r in [
      {"question": "Who wrote Hamlet", "answer": "Shakespeare", "id": 1},
      {"question": "Capital of France", "answer": "Paris"}]) + "\n")
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text("\n".join(json.dumps({"text": t}) for t in [
      "Shakespeare wrote Hamlet", "Paris is the capital of France", "Rome is old"]))
  tasks = load_instances("search_qa", {}, jsonl=str(questions), data_dir=str(tmp_path / "tfds"))
  assert [t["answer"] for t in tasks] == ["Shakespeare", "Paris"]
  cfg = {"corpus": str(corpus)}
  wf = s.make_workflow(tasks[1], "single", cfg, 3)
  wf.act({"agent": "S capital France"})
  assert wf.steps[0][1].split(";")[0] == "Paris is the capital of France"
  wf.act({"agent": "A paris"})
  assert wf.success
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"question": "q"}\n')
  with pytest.raises(ValueError, match="bad.jsonl:1"):
    s.load_jsonl(str(bad))
