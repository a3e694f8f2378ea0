"""A two-role toy workflow whose every reward can be computed by hand."""
from marft.rollout.workflow import RoleOutcome, StageResult, Workflow


class GuessWorkflow(Workflow):
  """Tool proposes a digit (0.5 if right), then plan answers (1 if right: solved)."""

  roles = ("tool", "plan")

  def __init__(self, task, max_turns):
    super().__init__(task, max_turns)
    self.solved = False
    self.proposal = ""

  def stages(self):
    return (("tool",), ("plan",))

  def prompt(self, role):
    if role == "tool":
      return [{"role": "user", "content": f"T{self.turn}"}]
    return [{"role": "user", "content": f"P{self.turn}{self.proposal}"}]

  def act(self, responses):
    (role, text), = responses.items()
    right = text == self.task["target"]
    if role == "tool":
      self.proposal = text[:1]
      result = StageResult({"tool": RoleOutcome(0.5 if right else 0.0, invalid=not text.isdigit())})
    else:
      self.solved = right
      result = StageResult({"plan": RoleOutcome(1.0 if right else 0.0)}, team_reward=float(right))
    self.advance()
    return result

  def expert_response(self, role):
    return self.task["target"]

  @property
  def success(self):
    return self.solved
