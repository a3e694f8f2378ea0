"""MARFT's sequential math workflows (`dual`: reasoner -> actor, `trio`: + verifier): stages,
rewards and the team reward on the last stage by hand, prompts that show this step's earlier
outputs and the judged history, compact and chat, demonstrations that fit the base model's
seq_len, and the `single`/`mas` prompts left as they were."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import math_task
from experiments import pretrain
from experiments.configs import pretrain_math_marft
from marft.rollout.demonstrations import demonstrations
from marft.rollout.workflow import RoleOutcome
from marft.tokenizers import CharTokenizer

CFG = math_task.default_config()
TASK = {"question": "Ann has 3 bags of 4 nuts and loses 2. Left?", "answer": 10,
        "expression": "3*4-2"}
Q = TASK["question"]
ROLES = {"dual": ("reasoner", "actor"), "trio": ("reasoner", "actor", "verifier")}
KINDS = tuple(ROLES)
STYLES = ("compact", "chat")


def make(kind, style="compact", max_turns=3, task=TASK):
  return math_task.make_workflow(task, kind, CFG, max_turns, style)


def content(wf, role):
  """The compact prompt text, or the chat user message."""
  return wf.prompt(role)[-1]["content"]


def tagged(text, style):
  return f"<answer>{text}</answer>" if style == "chat" else text


def verdict(yes, style):
  return {"compact": "yn", "chat": ("yes", "no")}[style][0 if yes else 1]


def step(wf, responses):
  """Acts one stage per response (`{role: text}` in stage order); returns the results."""
  results = []
  for role, text in responses.items():
    assert wf.acting_roles() == (role,) and not wf.done
    results.append(wf.act({role: text}))
  return results


def wrong_step(kind, style):
  """A step whose actor answers 12 (wrong) after the reasoner's `3*4`; the verifier says no."""
  responses = {"reasoner": tagged("3*4", style), "actor": tagged("12", style)}
  if kind == "trio":
    responses["verifier"] = tagged(verdict(False, style), style)
  return responses


# ---------------------------------------------------------------- stages and the expert


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("style", STYLES)
def test_stages_roles_and_expert_success_in_one_step(kind, style):
  wf = make(kind, style)
  assert wf.roles == ROLES[kind]
  assert wf.stages() == tuple((r,) for r in ROLES[kind])
  assert not wf.failed and not wf.success
  results = []
  while not wf.done:
    (role,) = wf.acting_roles()
    expert = wf.expert_response(role)
    assert expert == {"reasoner": "3*4-2", "actor": "10", "verifier": verdict(True, style)}[role]
    results.append(wf.act({role: tagged(expert, style)}))
  assert wf.success and not wf.failed and wf.turn == 1 and wf.stage == 0
  assert [r.outcomes for r in results] == [{r: RoleOutcome(1.0, False)} for r in ROLES[kind]]
  assert [r.team_reward for r in results] == [0.0] * (len(ROLES[kind]) - 1) + [1.0]


@pytest.mark.parametrize("kind", KINDS)
def test_expert_solves_every_generated_instance(kind):
  for seed in range(200):
    task = math_task.generate_task(seed, "test" if seed % 2 else "train", CFG)
    wf = make(kind, task=task)
    rewards = []
    while not wf.done:
      result = wf.act({r: wf.expert_response(r) for r in wf.acting_roles()})
      assert all(o == RoleOutcome(1.0, False) for o in result.outcomes.values())
      rewards.append(result.team_reward)
    assert wf.success and wf.turn == 1 and rewards[-1] == 1.0 and sum(rewards) == 1.0


def test_trio_is_not_done_between_a_correct_actor_and_the_verifier():
  wf = make("trio")
  reasoner, actor = step(wf, {"reasoner": "3*4-2", "actor": "10"})
  assert actor.team_reward == 0.0 and actor.outcomes == {"actor": RoleOutcome(1.0, False)}
  assert not wf.done and not wf.success and wf.acting_roles() == ("verifier",)
  assert wf.expert_response("verifier") == "y"
  (result,) = step(wf, {"verifier": "n"})  # a wrong verdict does not undo the success
  assert result.outcomes == {"verifier": RoleOutcome(0.0, False)} and result.team_reward == 1.0
  assert wf.done and wf.success


# ---------------------------------------------------------------- wrong answers and the horizon


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_answer_continues_with_judged_history_compact(kind):
  wf = make(kind, max_turns=2)
  results = step(wf, wrong_step(kind, "compact"))
  assert [r.team_reward for r in results] == [0.0] * len(results)
  assert results[1].outcomes == {"actor": RoleOutcome(0.0, False)}
  assert results[0].outcomes == {"reasoner": RoleOutcome(0.0, False)}  # 12 is not the answer
  assert not wf.done and wf.turn == 1 and not wf.success
  past = " P3*4 A12 x" if kind == "dual" else " P3*4 A12 Vn x"
  assert content(wf, "reasoner") == f"P {Q}{past}"
  assert wf.expert_response("actor") == "10"
  results = step(wf, wrong_step(kind, "compact"))
  assert [r.team_reward for r in results] == [0.0] * len(results)
  assert wf.done and not wf.success and not wf.failed and wf.turn == 2
  assert wf.history[-1][:2] == ("3*4", "12")


@pytest.mark.parametrize("kind", KINDS)
def test_second_step_prompts_show_the_history_compact(kind):
  wf = make(kind)
  step(wf, wrong_step(kind, "compact"))
  past = " P3*4 A12 x" if kind == "dual" else " P3*4 A12 Vn x"
  step(wf, {"reasoner": "3*4-2"})
  assert content(wf, "actor") == f"A {Q}{past} P3*4-2"
  step(wf, {"actor": "10"})
  if kind == "trio":
    assert content(wf, "verifier") == f"V {Q}{past} P3*4-2 A10"
    step(wf, {"verifier": "y"})
  assert wf.done and wf.success and wf.turn == 2


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_answer_continues_with_judged_history_chat(kind):
  wf = make(kind, "chat", max_turns=2)
  results = step(wf, wrong_step(kind, "chat"))
  assert [r.team_reward for r in results] == [0.0] * len(results) and not wf.done
  said = "" if kind == "dual" else "; the Verifier said no"
  past = (f"Turn 1: the Reasoner proposed 3*4; the Actor answered 12{said}. The judge found "
          "the answer incorrect.")
  for role in ROLES[kind]:
    messages = wf.prompt(role)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "<answer>" in messages[0]["content"]
    assert messages[1]["content"].startswith(f"Turn 2 of 2.\n\nQuestion: {Q}\n\n{past}")
  step(wf, wrong_step(kind, "chat"))
  assert wf.done and not wf.success


# ---------------------------------------------------------------- invalid actions and verdicts


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("style", STYLES)
def test_invalid_expression_and_unparseable_answer(kind, style):
  wf = make(kind, style)
  (result,) = step(wf, {"reasoner": tagged("3*(4", style)})
  assert result.outcomes == {"reasoner": RoleOutcome(0.0, True)} and result.team_reward == 0.0
  assert not wf.done
  (result,) = step(wf, {"actor": tagged("ten", style)})
  assert result.outcomes == {"actor": RoleOutcome(0.0, True)} and not wf.success
  if kind == "trio":
    assert content(wf, "verifier").endswith(
        " P3*(4 A?" if style == "compact" else
        "This turn: the Reasoner proposed 3*(4; the Actor gave no valid answer.")
    assert wf.expert_response("verifier") == verdict(False, style)
    step(wf, {"verifier": tagged(verdict(False, style), style)})
  assert not wf.done and wf.turn == 1
  reasoner = content(wf, "reasoner")
  if style == "compact":
    assert reasoner == f"P {Q} P3*(4 A?{' V' + 'n' if kind == 'trio' else ''} x"
  else:
    assert "the Reasoner proposed 3*(4; the Actor gave no valid answer" in reasoner


@pytest.mark.parametrize("style", STYLES)
def test_chat_reasoner_may_state_the_value_and_answers_need_the_tag(style):
  wf = make("dual", style)
  text = "<answer>3*4-2 = 10</answer>" if style == "chat" else "3*4-2"
  (result,) = step(wf, {"reasoner": text})
  assert result.outcomes == {"reasoner": RoleOutcome(1.0, False)}
  assert "3*4-2" in content(wf, "actor") and "= 10" not in content(wf, "actor")
  (result,) = step(wf, {"actor": "I think it is 10."})  # no tag in chat; not a number compact
  assert result.outcomes == {"actor": RoleOutcome(0.0, True)} and not wf.done


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("actor_right", [True, False])
def test_verifier_rewards(style, actor_right):
  answers = {"compact": ("y", "n", "Y", "yes", "", "x"),
             "chat": ("<answer>yes</answer>", "<answer>no</answer>", "<answer>YES</answer>",
                      "yes", "<answer>maybe</answer>", "")}[style]
  truth = verdict(actor_right, style)
  rewards = {}
  for answer in answers:
    wf = make("trio", style)
    step(wf, {"reasoner": tagged("3*4-2", style), "actor": tagged("10" if actor_right else "9",
                                                                  style)})
    assert wf.expert_response("verifier") == truth
    (result,) = step(wf, {"verifier": answer})
    assert result.team_reward == float(actor_right)
    assert wf.done is actor_right and wf.success is actor_right
    rewards[answer] = result.outcomes["verifier"]
  right, wrong = (RoleOutcome(1.0, False), RoleOutcome(0.0, False))
  yes, no = (right, wrong) if actor_right else (wrong, right)
  invalid = RoleOutcome(0.0, True)
  if style == "compact":  # exactly y or n
    assert list(rewards.values()) == [yes, no, invalid, invalid, invalid, invalid]
  else:  # yes or no in the tag, any case
    assert list(rewards.values()) == [yes, no, yes, invalid, invalid, invalid]


# ---------------------------------------------------------------- the sequential dependency


@pytest.mark.parametrize("kind", KINDS)
def test_later_roles_see_this_steps_earlier_outputs_compact(kind):
  wf = make(kind)
  assert content(wf, "reasoner") == f"P {Q}"
  step(wf, {"reasoner": "4*3-2"})
  assert content(wf, "actor") == f"A {Q} P4*3-2"
  step(wf, {"actor": "10"})
  if kind == "trio":
    assert content(wf, "verifier") == f"V {Q} P4*3-2 A10"


@pytest.mark.parametrize("kind", KINDS)
def test_later_roles_see_this_steps_earlier_outputs_chat(kind):
  wf = make(kind, "chat")
  system, user = (m["content"] for m in wf.prompt("reasoner"))
  assert user == f"Turn 1 of 3.\n\nQuestion: {Q}"
  assert "Reasoner" in system and "without computing it" in system and "3*4-2" in system
  step(wf, {"reasoner": "<think>SECRET</think><answer>4*3-2</answer>"})
  system, user = (m["content"] for m in wf.prompt("actor"))
  assert "Follow the Reasoner's guidance" in system and "<answer>12</answer>" in system
  assert user.endswith("This turn: the Reasoner proposed 4*3-2.") and "SECRET" not in user
  step(wf, {"actor": "<answer>\\boxed{10}</answer>"})
  if kind == "trio":
    system, user = (m["content"] for m in wf.prompt("verifier"))
    assert "Check the Actor's result" in system and "yes or no" in system
    assert user.endswith("This turn: the Reasoner proposed 4*3-2; the Actor answered 10.")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(KINDS), st.sampled_from(STYLES),
       st.lists(st.one_of(st.text(max_size=30), st.sampled_from(
           ["3*4-2", "10", "y", "n", "<answer>10</answer>", "<answer>yes</answer>", "1/0"])),
           min_size=9, max_size=9))
def test_fuzzed_responses_never_raise(kind, style, responses):
  wf = make(kind, style)
  responses = iter(responses)
  while not wf.done:
    (role,) = wf.acting_roles()
    result = wf.act({role: next(responses)})
    assert result.outcomes[role].reward in (0.0, 1.0) and result.team_reward in (0.0, 1.0)
    if result.team_reward:
      assert wf.done and wf.success
  assert wf.turn <= 3 and not wf.failed


# ---------------------------------------------------------------- demonstrations and seq_len


@pytest.mark.parametrize("kind", KINDS)
def test_demonstrations_fit_the_pretrain_seq_len(kind):
  config = pretrain_math_marft.get_config()
  assert kind in config.task.workflows and config.task.seq_len % 8 == 0
  tokenizer = CharTokenizer(128)
  workflows = pretrain.make_workflows(config, "train", 300, kind)
  assert all(w.max_turns == 3 for w in workflows)
  clean = demonstrations(workflows, tokenizer, corruption=0.0, seed=0,
                         alphabet=config.task.corruption_alphabet)
  assert len(clean) == 300 * len(ROLES[kind])  # every expert episode ends after one step
  noisy = demonstrations(workflows, tokenizer, corruption=config.task.corruption, seed=0,
                         alphabet=config.task.corruption_alphabet)
  assert len(noisy) > len(clean)  # corrupted answers play later steps
  longest = max(len(p) + len(r) for p, r in clean + noisy)
  assert longest <= config.task.seq_len
  assert max(len(p) for p, _ in noisy) + config.rollout.max_new_tokens + 1 <= config.task.seq_len


# ---------------------------------------------------------------- kinds and the old workflows


def test_unknown_kind_names_every_kind():
  with pytest.raises(ValueError, match="'single', 'mas', 'dual', 'trio'"):
    math_task.make_workflow(TASK, "quad", CFG, 3)
  with pytest.raises(ValueError):
    math_task.MathWorkflow(TASK, "dual", 3)
  with pytest.raises(ValueError):
    math_task.SequentialMathWorkflow(TASK, "mas", 3)


def test_single_and_mas_prompts_are_unchanged():
  single = math_task.make_workflow(TASK, "single", CFG, 3)
  assert type(single) is math_task.MathWorkflow
  assert single.prompt("agent") == [
      {"role": "user", "content": "Ann has 3 bags of 4 nuts and loses 2. Left?"}]
  mas = math_task.make_workflow(TASK, "mas", CFG, 3)
  assert mas.roles == ("tool", "reasoner") and mas.stages() == (("tool", "reasoner"),)
  result = mas.act({"tool": "3*4", "reasoner": "10"})
  assert result.team_reward == 1.0 and not mas.done
  assert mas.prompt("tool") == [
      {"role": "user", "content": "T Ann has 3 bags of 4 nuts and loses 2. Left? T3*4=12 R10"}]
  assert mas.prompt("reasoner")[0]["content"] == (
      "R Ann has 3 bags of 4 nuts and loses 2. Left? T3*4=12 R10")
  chat = math_task.make_workflow(TASK, "mas", CFG, 3, "chat")
  chat.act({"tool": "<answer>3*4</answer>", "reasoner": "<answer>10</answer>"})
  assert chat.prompt("reasoner")[1]["content"] == (
      "Turn 2 of 3.\n\nQuestion: Ann has 3 bags of 4 nuts and loses 2. Left?\n\nTurn 1: the "
      "tool agent wrote 3*4 (the calculator computed 12); the reasoner answered 10.")
