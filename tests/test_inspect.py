"""The transcript viewer (`launch.inspect`) on a run written by hand and on a real tiny AT-GRPO
run: every action's text, role and credit on the page, model text escaped, the filters, the
metric curves; the browser checks render it in headless Chromium (skipped without one)."""
import html
import html.parser
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from launch import inspect

_ATTACK = "<script>alert(1)</script>"
_IMAGE = '<img src=x onerror="document.body.dataset.pwned=1">'
_UNICODE = "naïve ∑ 日本語 — ok"


def _action(step, row, episode, role, turn, response, **extra):
  return {"step": step, "row": row, "episode": episode, "task": episode // 2,
          "branch": episode % 2, "role": role, "turn": turn, "policy": 0, "parent": -1,
          "prompt": f"prompt of step {step} row {row}\n>", "response": response,
          "response_tokens": len(response), "reward": 0.25 * row, "team_reward": 0.5,
          "return": 1.5 if episode % 2 else -1.0, "score": 0.0, "invalid": False,
          "success": bool(episode % 2), "advantage": 0.1 * row - 0.2, "group": row % 3,
          "weight": 1.0, **extra}


def _write_run(path):
  """Three logged steps; step 3 holds the adversarial and unicode responses, an invalid action
  and a prompt shared by reference (`prompt_row`)."""
  path.mkdir()
  records = []
  for step in (1, 2):
    records += [_action(step, 0, 0, "reasoner", 0, f"answer {step}"),
                _action(step, 1, 0, "verifier", 0, f"check {step}")]
  records += [_action(3, 0, 0, "reasoner", 0, _ATTACK),
              _action(3, 1, 0, "verifier", 0, _UNICODE),
              _action(3, 2, 1, "reasoner", 0, _IMAGE, invalid=True),
              _action(3, 3, 1, "verifier", 1, "x < y && y > z"),
              _action(3, 4, 1, "reasoner", 1, "revised", prompt_row=2)]
  del records[-1]["prompt"]
  with open(path / "transcripts.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  metrics = [{"step": s, "train/loss": 1.0 / s, "rollout/success_rate": 0.25 * s,
              "train/grad_norm": math.nan if s == 2 else 2.0} for s in (1, 2, 3)]
  metrics.append({"step": 3, "eval/greedy_success": 0.5})
  with open(path / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(m) + "\n" for m in metrics)
  return records, metrics


class _Page(html.parser.HTMLParser):
  """The elements of a page: tag, attributes and text (its text nodes) of each, in order."""

  def __init__(self, text):
    super().__init__()
    self.elements, self.open = [], []
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    element = {"tag": tag, "attrs": dict(attrs), "text": "", "within": [id(e) for e in self.open]}
    self.elements.append(element)
    if tag not in ("meta", "input", "br", "img", "line", "circle", "polyline"):
      self.open.append(element)

  def handle_endtag(self, tag):
    while self.open and self.open.pop()["tag"] != tag:
      pass

  def handle_data(self, data):
    for element in self.open:
      element["text"] += data

  def find(self, cls, within=None):
    """The elements of class `cls` (inside element `within`, if given)."""
    return [e for e in self.elements if cls in e["attrs"].get("class", "").split()
            and (within is None or id(within) in e["within"])]

  def response(self, action):
    (pre,) = self.find("response", within=action)
    return pre["text"]


def test_page_shows_every_action_with_model_text_escaped(tmp_path):
  records, _ = _write_run(tmp_path / "run")
  metrics, read = inspect.load_run(str(tmp_path / "run"))
  assert read == records
  page_text = inspect.render("run", metrics, read)
  assert page_text.count("<script") == 1 and "onerror=" not in page_text.replace(
      html.escape(_IMAGE), "")
  assert "http://" not in page_text and "https://" not in page_text  # nothing to fetch
  page = _Page(page_text)
  actions = page.find("action")
  assert len(actions) == len(records)
  for element, record in zip(actions, records):  # the page keeps the rollout order here
    assert element["attrs"]["data-role"] == record["role"]
    assert element["attrs"]["data-turn"] == str(record["turn"])
    assert element["attrs"]["data-invalid"] == ("1" if record["invalid"] else "")
    assert page.response(element) == record["response"]  # text: no markup of its own
    assert f"reward {record['reward']:.4g} " in element["text"]
    assert f"advantage {record['advantage']:.4g} " in element["text"]
    assert f"group {record['group']} " in element["text"]
  # The shared prompt is resolved to the prompt of row 2 of the same step.
  assert "prompt of step 3 row 2" in actions[-1]["text"]
  assert not [e for e in page.elements if e["tag"] in ("img", "b")]
  episodes = page.find("episode")
  assert [(e["attrs"]["data-step"], e["attrs"]["data-outcome"]) for e in episodes] == [
      ("1", "failure"), ("2", "failure"), ("3", "failure"), ("3", "success")]
  assert "team return 1.5" in episodes[-1]["text"] and "1 invalid" in episodes[-1]["text"]
  # One plot per numeric metric; NaN points are left out (grad_norm keeps steps 1 and 3).
  plots = {e["attrs"]["aria-label"]: e for e in page.elements if e["tag"] == "svg"}
  assert set(plots) == {"train/loss", "rollout/success_rate", "train/grad_norm",
                        "eval/greedy_success"}
  polylines = [e for e in page.elements if e["tag"] == "polyline"]
  assert sorted(len(p["attrs"]["points"].split()) for p in polylines) == [2, 3, 3]


def test_max_steps_keeps_the_last_steps_and_says_so(tmp_path):
  records, metrics = _write_run(tmp_path / "run")
  page = _Page(inspect.render("run", metrics, records, max_steps=1))
  assert {e["attrs"]["data-step"] for e in page.find("episode")} == {"3"}
  (body,) = [e for e in page.elements if e["tag"] == "body"]
  assert "from the last 1 of 3 logged steps (--max_steps=1)" in body["text"]
  assert len(page.find("action")) == len([r for r in records if r["step"] == 3]) == 5


def test_command_line_writes_the_page_and_rejects_a_run_without_transcripts(tmp_path):
  _write_run(tmp_path / "run")
  ok = subprocess.run([sys.executable, "-m", "launch.inspect", f"--workdir={tmp_path / 'run'}"],
                      capture_output=True, text=True, timeout=60)
  assert ok.returncode == 0, ok.stderr
  assert "<!DOCTYPE html>" in (tmp_path / "run" / "transcripts.html").read_text()
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "metrics.jsonl").write_text('{"step": 1, "train/loss": 1.0}\n')
  bad = subprocess.run([sys.executable, "-m", "launch.inspect",
                        f"--workdir={tmp_path / 'empty'}"], capture_output=True, text=True,
                       timeout=60)
  assert bad.returncode == 1 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines() == [
      f"launch.inspect: {tmp_path / 'empty'} has no transcripts.jsonl (transcripts are written "
      "by runs with log.transcripts=True, the default, of jobs that sample episodes)"]


# ---------------------------------------------------------------------------------------------
# In a browser.


def _chromium():
  return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
              None)


def _browse(tmp_path, url, *args):
  browser = _chromium()
  if browser is None:
    pytest.skip("no Chromium on PATH (CI installs the Debian package `chromium`)")
  profile = tmp_path / "profile"
  out = subprocess.run(
      [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
       "--no-first-run", "--disable-background-networking", "--disable-component-update",
       "--disable-sync", f"--user-data-dir={profile}", *args, url],
      capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout


def test_page_in_a_browser_escapes_filters_and_draws(tmp_path):
  import matplotlib.image
  records, metrics = _write_run(tmp_path / "run")
  path = tmp_path / "page.html"
  path.write_text(inspect.render("run", metrics, records), encoding="utf-8")
  url = path.as_uri()

  dom = _Page(_browse(tmp_path, url, "--dump-dom"))
  actions = dom.find("action")
  assert [a["attrs"]["data-role"] for a in actions] == [r["role"] for r in records]
  assert not [a for a in actions if "hidden" in a["attrs"]]  # no filter: everything shown
  assert [dom.response(a) for a in actions] == [r["response"] for r in records]
  assert sum(e["tag"] == "script" for e in dom.elements) == 1  # the page's own script only
  assert not [e for e in dom.elements if e["tag"] == "img"]
  assert "data-pwned" not in str([e["attrs"] for e in dom.elements if e["tag"] == "body"])
  shown = dom.find("note")[-1]["text"]
  assert shown == f"4 episodes, {len(records)} actions shown"

  # Filters preselected by the URL fragment: the verifier's actions at turn 0, then the
  # invalid actions of successful episodes.
  dom = _Page(_browse(tmp_path, url + "#role=verifier&turn=0", "--dump-dom"))
  visible = [a for a in dom.find("action") if "hidden" not in a["attrs"]]
  want = [r for r in records if r["role"] == "verifier" and r["turn"] == 0]
  assert len(visible) == len(want) == 3
  assert [dom.response(a) for a in visible] == [r["response"] for r in want]
  # Step 3's episode 1 has no verifier action at turn 0: it is hidden as a whole.
  assert [(e["attrs"]["data-step"], e["attrs"]["data-outcome"]) for e in dom.find("episode")
          if "hidden" in e["attrs"]] == [("3", "success")]
  dom = _Page(_browse(tmp_path, url + "#outcome=success&invalid=1", "--dump-dom"))
  visible = [a for a in dom.find("action") if "hidden" not in a["attrs"]]
  assert [dom.response(a) for a in visible] == [_IMAGE]
  assert [e["attrs"]["data-step"] for e in dom.find("episode") if "hidden" not in e["attrs"]
          ] == ["3"]

  shot = tmp_path / "page.png"
  _browse(tmp_path, url, f"--screenshot={shot}", "--window-size=1200,900",
          "--hide-scrollbars")
  pixels = matplotlib.image.imread(str(shot))[..., :3]
  assert pixels.shape[:2] == (900, 1200)
  colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
  assert len(colours) > 50 and pixels.std() > 0.05  # text, plots and badges, not a blank page


# ---------------------------------------------------------------------------------------------
# A real run.


def test_at_grpo_run_logs_one_record_per_rollout_row(tmp_path):
  """One step of the AT-GRPO job on a random tiny model: `transcripts.jsonl` holds one record
  per rollout row, its text the tokenizer's decoding of the row, its advantage and weight what
  the credit gave, its group the row's (task, role, turn); the page shows every response."""
  from experiments import rl
  from experiments.configs import at_grpo
  from marft import sharding, trainer
  from marft.logging import read_jsonl
  from marft.models.config import get_model_config
  from marft.models.decoder import build_model
  from marft.models.hf import save_pretrained
  from marft.tokenizers import CharTokenizer
  model_config = get_model_config("tiny", num_layers=1)
  save_pretrained(build_model(model_config), model_config, str(tmp_path / "hf"))
  config = at_grpo.get_config("plan_path,mas_shared,tiny")
  config.model.path, config.model.tokenizer = str(tmp_path / "hf"), "char"
  config.task.num_tasks, config.task.eval_tasks, config.algo.k = 2, 2, 2
  config.task.env.max_turns = 1
  config.update_from_flattened_dict({"total_steps": 1, "eval_every": 0, "checkpoint_every": 1,
                                     "log.wandb_mode": "disabled"})
  seen = []

  def credit(batch, algo):
    seen.append((batch, *rl.at_grpo_credit(batch, algo)))
    return seen[-1][1:]

  workdir = tmp_path / "run"
  trainer.run(config, str(workdir), rl.build(config, sharding.make_mesh(data=1, fsdp=1,
                                                                         tensor=1), credit))
  ((batch, advantages, weight),) = seen
  records = read_jsonl(str(workdir / "transcripts.jsonl"))
  assert len(records) == batch.num_rows and [r["row"] for r in records] == list(
      range(batch.num_rows))
  tokenizer, roles = CharTokenizer(model_config.vocab_size), ("tool", "plan")
  prompts = {}
  groups = {}
  for r, tokens, mask in zip(records, batch.tokens, batch.loss_mask):
    row = r["row"]
    start = int(np.argmax(mask > 0))
    assert r["step"] == 1 and r["response"] == tokenizer.decode(tokens[mask > 0])
    prompts[row] = r.get("prompt", prompts.get(r.get("prompt_row")))
    assert prompts[row] == tokenizer.decode(tokens[:start]) and prompts[row].endswith(">")
    assert r["role"] == roles[batch.role_id[row]] and r["turn"] == batch.turn_id[row]
    assert r["reward"] == batch.reward[row] and r["return"] == batch.episode_return[row]
    assert r["advantage"] == advantages[row] and r["weight"] == weight[row]
    assert r["episode"] == batch.task_id[row]  # tree sampling: one trajectory per task
    groups.setdefault((r["task"], r["role"], r["turn"]), set()).add(r["group"])
  assert all(len(g) == 1 for g in groups.values())  # a group per (task, role, turn)
  assert len(set().union(*groups.values())) == len(groups)
  assert any("prompt_row" in r for r in records)  # the K branches share their prompts

  page = _Page(inspect.render("run", *inspect.load_run(str(workdir))))
  by_episode = sorted(records, key=lambda r: (r["episode"], r["row"]))
  assert [page.response(a) for a in page.find("action")] == [r["response"] for r in by_episode]
  assert [a["attrs"]["data-role"] for a in page.find("action")] == [
      r["role"] for r in by_episode]
