"""A run's transcripts and metric curves as one static HTML page (no server, nothing fetched).

  python -m launch.inspect --workdir=runs/at_grpo-0123456789           # RUN/transcripts.html
  python -m launch.inspect --workdir=RUN --max_steps=5 --out=/tmp/last5.html

Reads `RUN/transcripts.jsonl` (one record per sampled action, `marft.transcripts`) and
`RUN/metrics.jsonl`. The page groups the actions into episodes (step, episode), each with its
team return and outcome, every action with its role, turn, prompt, response, reward, advantage,
group and keep weight; filters by step, task, role, turn, outcome and invalid actions, which the
URL fragment preselects (`transcripts.html#role=verifier&outcome=failure&invalid=1`); and one
inline SVG plot per metric. All model text is escaped; the page's only script is allowed by its
hash (Content-Security-Policy), so no injected script runs and nothing is loaded from a network.
"""
from __future__ import annotations

import base64
import collections
import hashlib
import html
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from marft.logging import read_jsonl

_WORKDIR = flags.DEFINE_string("workdir", None, "The run directory.", required=True)
_OUT = flags.DEFINE_string("out", None, "The page to write (default RUN/transcripts.html).")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 0, "Show only the last K logged steps' "
                                  "episodes (0: all); the metric curves are always complete.")

FILTERS = ("step", "task", "role", "turn", "outcome", "invalid")

_SCRIPT = """
const names = %s;
function values() {
  const v = {};
  for (const name of names) {
    const el = document.getElementById("f-" + name);
    v[name] = el.type === "checkbox" ? (el.checked ? "1" : "") : el.value;
  }
  return v;
}
function apply() {
  const v = values();
  const ok = (value, wanted) => wanted === "" || value === wanted;
  let episodes = 0, actions = 0;
  for (const ep of document.querySelectorAll(".episode")) {
    const d = ep.dataset;
    const epOk = ok(d.step, v.step) && ok(d.task, v.task) && ok(d.outcome, v.outcome);
    let shown = 0;
    for (const act of ep.querySelectorAll(".action")) {
      const a = act.dataset;
      const show = epOk && ok(a.role, v.role) && ok(a.turn, v.turn) && ok(a.invalid, v.invalid);
      act.hidden = !show;
      shown += show ? 1 : 0;
    }
    ep.hidden = shown === 0;
    episodes += shown ? 1 : 0;
    actions += shown;
  }
  document.getElementById("shown").textContent =
      episodes + " episodes, " + actions + " actions shown";
  const params = new URLSearchParams();
  for (const name of names) if (v[name]) params.set(name, v[name]);
  try {
    history.replaceState(null, "", "#" + params.toString());
  } catch (error) {}  // a browser that keeps file: pages from rewriting their URL
}
function init() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const name of names) {
    const el = document.getElementById("f-" + name);
    const want = params.get(name);
    if (want === null) continue;
    if (el.type === "checkbox") el.checked = want === "1";
    else if ([...el.options].some(o => o.value === want)) el.value = want;
  }
  for (const name of names) document.getElementById("f-" + name).addEventListener("change", apply);
  apply();
}
document.addEventListener("DOMContentLoaded", init);
""" % json.dumps(FILTERS)

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 24px 40px; color: #1d2330;
       background: #f4f5f8; }
h1 { font-size: 20px; margin: 18px 0 4px; } h2 { font-size: 16px; margin: 22px 0 8px; }
.note { color: #5a6275; }
.plots { display: flex; flex-wrap: wrap; gap: 10px; }
.plot { background: #fff; border: 1px solid #d8dbe3; border-radius: 6px; }
.plot text { font-size: 10px; fill: #5a6275; } .plot .name { font-size: 11px; fill: #1d2330; }
.plot polyline { fill: none; stroke: #2f6fdf; stroke-width: 1.5; }
.plot circle { fill: #2f6fdf; } .plot .axis { stroke: #c4c8d2; }
.filters { position: sticky; top: 0; background: #f4f5f8; padding: 8px 0; z-index: 1;
           display: flex; flex-wrap: wrap; gap: 12px; align-items: center;
           border-bottom: 1px solid #d8dbe3; }
.episode { background: #fff; border: 1px solid #d8dbe3; border-radius: 6px; margin: 10px 0;
           padding: 8px 12px; }
.episode > header { font-weight: 600; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px;
         font-weight: 600; color: #fff; }
.success { background: #2e9d57; } .failure { background: #cf3b3b; }
.unknown { background: #8a90a0; } .invalid { background: #d9822b; }
.action { border-left: 4px solid var(--role); margin: 8px 0 0; padding: 2px 0 2px 10px; }
.role { background: var(--role); }
.meta { font-size: 12px; color: #3c4354; }
pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0; padding: 6px 8px;
      background: #f7f8fb; border-radius: 4px; font: 12px/1.35 ui-monospace, monospace; }
pre.response { background: #eef4ff; }
details > summary { cursor: pointer; font-size: 12px; color: #5a6275; }
summary h2 { display: inline; color: #1d2330; }
[hidden] { display: none !important; }
"""


class RunError(Exception):
  """A run directory the viewer cannot read; the message is one line for the command line."""


def load_run(workdir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """The metrics and transcript records of `workdir`, or a RunError naming what is missing."""
  if not os.path.isdir(workdir):
    raise RunError(f"{workdir} is not a directory")
  paths = {name: os.path.join(workdir, name) for name in ("metrics.jsonl", "transcripts.jsonl")}
  missing = [name for name, path in paths.items() if not os.path.exists(path)]
  if missing:
    raise RunError(f"{workdir} has no {' or '.join(missing)} (transcripts are written by "
                   "runs with log.transcripts=True, the default, of jobs that sample episodes)")
  records = read_jsonl(paths["transcripts.jsonl"])
  if not records:
    raise RunError(f"{paths['transcripts.jsonl']} holds no transcripts")
  return read_jsonl(paths["metrics.jsonl"]), records


def last_steps(records: Sequence[dict[str, Any]], max_steps: int
               ) -> tuple[list[dict[str, Any]], list[int]]:
  """The records of the last `max_steps` logged steps (all for 0) and every logged step."""
  steps = sorted({int(r["step"]) for r in records})
  kept = set(steps[-max_steps:] if max_steps > 0 else steps)
  return [r for r in records if int(r["step"]) in kept], steps


def episodes_of(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The records grouped into episodes by (step, episode), in step then episode order, each
  with its actions in rollout order and the prompts they share resolved (`prompt_row`)."""
  prompts = {(r["step"], r.get("row")): r["prompt"] for r in records if "prompt" in r}
  grouped = collections.defaultdict(list)
  for r in records:
    prompt = r["prompt"] if "prompt" in r else prompts.get((r["step"], r.get("prompt_row")), "")
    grouped[(int(r["step"]), int(r.get("episode", 0)))].append({**r, "prompt": prompt})
  out = []
  for (step, episode), actions in sorted(grouped.items()):
    success = next((a["success"] for a in actions if a.get("success") is not None), None)
    out.append({"step": step, "episode": episode, "task": actions[0].get("task"),
                "return": actions[0].get("return"), "actions": actions,
                "outcome": "unknown" if success is None else ("success" if success
                                                              else "failure")})
  return out


def metric_series(metrics: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
  """Each numeric metric's finite (step, value) points, in file order, by name."""
  series = collections.defaultdict(list)
  for record in metrics:
    step = record.get("step")
    for name, value in record.items():
      if (name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and isinstance(step, (int, float))):
        series[name].append((float(step), float(value)))
  return dict(sorted(series.items()))


def _fmt(value: Any) -> str:
  if value is None:
    return "–"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def svg_plot(name: str, points: Sequence[tuple[float, float]], width: int = 270,
             height: int = 130) -> str:
  """One metric's curve as an inline SVG line plot, its step and value ranges labelled."""
  left, right, top, bottom = 52, 10, 20, 22
  xs, ys = [p[0] for p in points], [p[1] for p in points]
  x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
  sx = lambda x: left + (x - x0) / ((x1 - x0) or 1.0) * (width - left - right)
  sy = lambda y: (height - bottom) - ((y - y0) / (y1 - y0) if y1 > y0 else 0.5) * (
      height - top - bottom)
  coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
  line = (f'<polyline points="{coords}"/>' if len(points) > 1
          else f'<circle cx="{sx(xs[0]):.1f}" cy="{sy(ys[0]):.1f}" r="3"/>')
  e = html.escape
  return (f'<svg class="plot" width="{width}" height="{height}" role="img" '
          f'aria-label="{e(name)}"><title>{e(name)}</title>'
          f'<text class="name" x="{left}" y="13">{e(name)}</text>'
          f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width - right}" '
          f'y2="{height - bottom}"/><line class="axis" x1="{left}" y1="{top}" x2="{left}" '
          f'y2="{height - bottom}"/>'
          f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{e(_fmt(y1))}</text>'
          f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{e(_fmt(y0))}</text>'
          f'<text x="{left}" y="{height - 8}">{e(_fmt(x0))}</text>'
          f'<text x="{width - right}" y="{height - 8}" text-anchor="end">step {e(_fmt(x1))}'
          f'</text>{line}</svg>')


def _select(name: str, options: Sequence[Any]) -> str:
  items = "".join(f'<option value="{html.escape(str(o))}">{html.escape(str(o))}</option>'
                  for o in options)
  return (f'<label>{name} <select id="f-{name}"><option value="">all</option>{items}</select>'
          '</label>')


def _action(action: dict[str, Any], colour: str) -> str:
  e = html.escape
  invalid = bool(action.get("invalid"))
  fields = [("turn", action.get("turn")), ("branch", action.get("branch")),
            ("policy", action.get("policy")), ("reward", action.get("reward")),
            ("team reward", action.get("team_reward")), ("advantage", action.get("advantage")),
            ("group", action.get("group")), ("weight", action.get("weight"))]
  if action.get("parent", -1) not in (-1, None):
    fields.append(("started by row", action["parent"]))
  meta = " · ".join(f"{k} {e(_fmt(v))}" for k, v in fields)
  prompt = str(action.get("prompt", ""))
  flag = ' <span class="badge invalid">invalid</span>' if invalid else ""
  return (f'<div class="action" style="--role: {colour}" data-role="{e(str(action.get("role")))}"'
          f' data-turn="{e(str(action.get("turn")))}" data-invalid="{"1" if invalid else ""}">'
          f'<div class="meta"><span class="badge role">{e(str(action.get("role")))}</span> '
          f'{meta}{flag}</div>'
          f'<details><summary>prompt ({len(prompt)} characters)</summary>'
          f'<pre class="prompt">{e(prompt)}</pre></details>'
          f'<pre class="response">{e(str(action.get("response", "")))}</pre></div>')


def _episode(ep: dict[str, Any], colours: dict[str, str]) -> str:
  e = html.escape
  invalid = sum(bool(a.get("invalid")) for a in ep["actions"])
  header = (f'step {ep["step"]} · episode {ep["episode"]} · task {e(_fmt(ep["task"]))} · '
            f'team return {e(_fmt(ep["return"]))} · '
            f'<span class="badge {ep["outcome"]}">{ep["outcome"]}</span> · '
            f'{len(ep["actions"])} actions' + (f', {invalid} invalid' if invalid else ""))
  actions = "".join(_action(a, colours[str(a.get("role"))]) for a in ep["actions"])
  return (f'<section class="episode" data-step="{ep["step"]}" data-task="{e(str(ep["task"]))}"'
          f' data-outcome="{ep["outcome"]}"><header>{header}</header>{actions}</section>')


def render(name: str, metrics: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]],
           max_steps: int = 0) -> str:
  """The page of a run called `name`: its metric curves and the episodes of `records` (those
  of the last `max_steps` steps; all for 0)."""
  e = html.escape
  shown, steps = last_steps(records, max_steps)
  episodes = episodes_of(shown)
  roles = list(dict.fromkeys(str(r.get("role")) for r in records))
  colours = {role: f"hsl({(i * 137 + 210) % 360}, 60%, 45%)" for i, role in enumerate(roles)}
  distinct = lambda key: sorted({r.get(key) for r in shown if r.get(key) is not None})
  if max_steps > 0 and len(steps) > max_steps:
    bound = f"the last {max_steps} of {len(steps)} logged steps (--max_steps={max_steps})"
  else:
    bound = f"all {len(steps)} logged steps"
  series = metric_series(metrics)
  plots = "".join(svg_plot(k, v) for k, v in series.items()) or '<p class="note">none</p>'
  filters = (_select("step", sorted({ep["step"] for ep in episodes}))
             + _select("task", distinct("task")) + _select("role", roles)
             + _select("turn", distinct("turn"))
             + _select("outcome", sorted({ep["outcome"] for ep in episodes}))
             + '<label><input type="checkbox" id="f-invalid"> invalid actions only</label>'
             + '<span id="shown" class="note"></span>')
  digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
  policy = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
            "img-src 'none'; connect-src 'none'")
  return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
          f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
          f'<title>{e(name)}: transcripts</title><style>{_STYLE}</style></head><body>'
          f'<h1>{e(name)}</h1><p class="note">{len(episodes)} episodes, {len(shown)} actions '
          f'from {bound}. Turns count from 0; the advantage of token-level credit is its mean '
          f'over the response tokens.</p>'
          f'<details open><summary><h2>Metrics ({len(series)} curves)</h2></summary>'
          f'<div class="plots">{plots}</div></details>'
          f'<h2>Episodes</h2><div class="filters">{filters}</div>'
          f'{"".join(_episode(ep, colours) for ep in episodes)}'
          f'<script>{_SCRIPT}</script></body></html>')


def main(argv: list[str]) -> None:
  del argv
  workdir = _WORKDIR.value
  try:
    metrics, records = load_run(workdir)
  except RunError as error:
    sys.exit(f"launch.inspect: {error}")
  out = _OUT.value or os.path.join(workdir, "transcripts.html")
  page = render(os.path.basename(os.path.abspath(workdir)), metrics, records, _MAX_STEPS.value)
  with open(out, "w", encoding="utf-8") as f:
    f.write(page)
  print(f"wrote {out} ({len(page) / 1e6:.1f} MB)")


if __name__ == "__main__":
  app.run(main)
