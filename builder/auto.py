"""target=auto: the targets usable on this host are built as a sweep through the configured launcher
(a child `mdbuild -m target=a,b,...` with the same overrides), and the fastest that passed its gate is
the result: the choice and the measured table go to the lock (entry `auto`), to the chosen artifact's
report, and <recipe>-auto-latest points at it."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from backends import Unavailable, discovered
from builder.artifact import point_latest
from builder.build import open_cache
from builder.errors import MdbuildError
from builder.lock import lock_path, locked_entry, update
from builder.progress import Console
from builder.plan import make_plan
from builder.resources import resource_dir
from builder.schema import backend_options
from builder.signature import with_signature
from builder.spec import BuildSpec
from builder.steps import REPORT_FILE, REPORT_PAGE
from builder.sweep import read_results, recommend
from builder.validate import validate

AUTO = "auto"
# What the lock and the report keep of each candidate's row (not the paths of this machine's run).
_TABLE = ("target", "passed", "p50_ms", "p99_ms", "throughput_per_s", "rel_l2", "min_cosine", "metric", "score",
          "source_score", "model_bytes", "latency_note", "error")


def target_backends() -> dict[str, str]:
    """Every target of the `target` group but auto, with its backend."""
    found = {}
    for path in sorted((resource_dir("conf") / "target").glob("*.yaml")):
        if path.stem != AUTO:
            found[path.stem] = (yaml.safe_load(path.read_text()) or {}).get("backend")
    return found


def candidates(select: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """(the targets to build, {target: why it is not usable here}); refuses a select.targets value
    that names no target, and a margin that is not a fraction >= 0."""
    backends, known = discovered(), target_backends()
    margin = select["margin"]
    if not isinstance(margin, (int, float)) or math.isnan(margin) or math.isinf(margin) or margin < 0:
        raise MdbuildError(f"{margin!r} is not a fraction >= 0", "select.margin", "give e.g. 0.05 (5%), or 0 to always take the fastest")
    for name in select["targets"]:
        if name not in known:
            raise MdbuildError(f"no target named '{name}'", "select.targets", f"choose from: {', '.join(known)}")
    wanted = list(dict.fromkeys(select["targets"])) or list(known)
    usable, skipped = [], {}
    for name in wanted:
        backend = backends.get(known[name])
        why = backend.why if isinstance(backend, Unavailable) else backend.unusable_here() if backend else \
            f"unknown backend '{known[name]}'"
        if why:
            skipped[name] = why
        else:
            usable.append(name)
    if not usable:
        listed = "; ".join(f"{name}: {why}" for name, why in skipped.items())
        raise MdbuildError(f"no candidate target is usable on this host ({listed})", "select.targets",
                           "install a backend's extra (pip install 'mdbuild[cpu]'), or name targets usable here")
    return usable, skipped


def planned(spec: BuildSpec, usable: list[str]) -> dict[str, str]:
    """{candidate: why the recipe cannot be built for it}, from each candidate's plan-time checks (those of
    a build of it alone). When every candidate fails, the first one's error: the recipe's to fix."""
    failures: dict[str, MdbuildError] = {}
    with open_cache(spec) as cache:
        for name in usable:
            target = yaml.safe_load((resource_dir("conf") / "target" / f"{name}.yaml").read_text())
            target = {"precision": "fp32", "optimize": [], **target, "options": None}
            target.pop("defaults", None)
            try:
                backend_options(target)
                candidate = with_signature(dataclasses.replace(spec, config={**spec.config, "target": target}), cache)
                validate(candidate)
                make_plan(candidate)
            except MdbuildError as refused:
                failures[name] = refused
    if failures and len(failures) == len(usable):
        raise failures[usable[0]]
    return {name: refused.one_line() for name, refused in failures.items()}


def run_auto(spec: BuildSpec, task_overrides: list[str], hydra_overrides: list[str], run_dir: Path,
             console: Console) -> Path | None:
    select, mode = spec.config["select"], spec.config["mode"]
    if mode == "check":
        chosen = _locked(spec, required=True)["chosen"]
        console.line(f"target=auto: the lock chose {chosen}; checking it")
        _child(_with_target(task_overrides, chosen), hydra_overrides, console)
        return None
    usable, skipped = candidates(select)
    refused = planned(spec, usable)
    skipped.update(refused)
    usable = [name for name in usable if name not in refused]
    console.line(f"target=auto: {len(usable)} candidates: {', '.join(usable)}")
    for name, why in skipped.items():
        console.line(f"target=auto: skipping {name}: {why}")
    sweep_dir = run_dir / "candidates"
    code = _child(["--multirun", *_with_target(task_overrides, ",".join(usable)), f"hydra.sweep.dir={sweep_dir}"],
                  hydra_overrides, console, check=False)
    if mode == "plan":
        if code:
            raise MdbuildError(f"planning the candidates failed (exit {code}); the error is above", "target")
        return None
    rows = read_results(sweep_dir)
    if not rows:
        raise MdbuildError(f"the candidates' sweep ended (exit {code}) before any job ran; its error is above", "target",
                           "build one candidate alone (target=NAME) to see it")
    locked = _locked(spec, required=False)
    chosen, why = choose(rows, locked.get("chosen"), select["margin"])
    if chosen is None:
        raise MdbuildError(f"no candidate passed its gate with a measured latency ({_outcomes(rows)})", "target",
                           f"see {sweep_dir / 'summary.md'}; loosen verify.tolerances or choose candidates in select.targets")
    artifact = Path(chosen["artifact"])
    record = {"chosen": chosen["target"], "why": why, "artifact": artifact.name, "margin": select["margin"],
              "skipped": skipped, "table": [{key: row.get(key) for key in _TABLE} for row in rows]}
    _add_to_report(artifact, record)
    (sweep_dir / "selection.json").write_text(json.dumps(record, indent=2) + "\n")
    console.line(f"target=auto: chose {chosen['target']}: {why}")
    failed = [row["target"] for row in rows if not row["passed"]]
    if failed:
        console.line(f"target=auto: not chosen, failed: {', '.join(failed)} (errors in {sweep_dir / 'summary.md'})")
    unpointed = point_latest(spec, artifact)
    if unpointed:
        console.line(f"warning: {unpointed}")
    if spec.config["lock"]["update"]:
        update(lock_path(spec), spec.recipe, AUTO, record)
        console.line(f"lock: {lock_path(spec)} ({AUTO}: {chosen['target']})")
    console.line(f"artifact: {artifact}")
    return artifact


def choose(rows: list[dict[str, Any]], locked: str | None, margin: float) -> tuple[dict[str, Any] | None, str]:
    """The fastest row that passed; the lock's earlier choice instead while it passed within `margin`."""
    fastest = recommend(rows)
    if fastest is None:
        return None, ""
    passed = [row for row in rows if row["passed"] and row.get("p50_ms") is not None]
    kept = next((row for row in passed if row["target"] == locked), None)
    if kept is not None and kept is not fastest and kept["p50_ms"] <= fastest["p50_ms"] * (1 + margin):
        return kept, (f"the lock's choice, kept: its p50 ({kept['p50_ms']:.4g} ms) is within select.margin ({margin:.0%}) "
                      f"of the fastest, {fastest['target']} ({fastest['p50_ms']:.4g} ms)")
    return fastest, f"the fastest p50 ({fastest['p50_ms']:.4g} ms) of the {len(passed)} of {len(rows)} candidates that passed their gates"


def _outcomes(rows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{row['target']}: {row['error'] or row.get('latency_note') or 'passed'}" for row in rows)


def _locked(spec: BuildSpec, required: bool) -> dict[str, Any]:
    path = lock_path(spec)
    entry = locked_entry(path, AUTO, for_check=required)
    if entry is None and required:
        raise MdbuildError(f"{path} has no entry for target '{AUTO}'", "target", "build target=auto once to add it to the lock")
    return entry or {}


def _with_target(overrides: list[str], target: str) -> list[str]:
    """The job's overrides with target=auto replaced (or, where a recipe chose auto, added)."""
    kept = [item for item in overrides if item.split("=", 1)[0] not in ("target", "+target", "++target")]
    return [*kept, f"target={target}"]


def _child(args: list[str], hydra_overrides: list[str], console: Console, check: bool = True) -> int:
    """`mdbuild ARGS` in a child process with this run's launcher and Hydra settings; its output is ours."""
    passed_on = [item for item in hydra_overrides if not item.startswith(("hydra.mode=", "hydra.run.dir="))]
    command = [sys.executable, "-m", "builder", *args, *passed_on]
    console.line(f"target=auto: mdbuild {' '.join(args + passed_on)}")
    code = subprocess.run(command, env=os.environ.copy()).returncode
    if code and check:
        raise MdbuildError(f"the check of the locked choice failed (exit {code}); its error is above", "target")
    return code


def _add_to_report(artifact: Path, record: dict[str, Any]) -> None:
    """The choice and the table in the chosen artifact's reports (measurements, outside its identity)."""
    report_path = artifact / REPORT_FILE
    report = json.loads(report_path.read_text())
    report["selection"] = record
    _replace(report_path, json.dumps(report, indent=2) + "\n")
    page = artifact / REPORT_PAGE
    if page.is_file():
        text = page.read_text().split("\n## Chosen by target=auto\n")[0]
        _replace(page, text.rstrip("\n") + "\n\n## Chosen by target=auto\n\n" + _table(record) + "\n")


def _table(record: dict[str, Any]) -> str:
    lines = [f"{record['why'][0].upper()}{record['why'][1:]}.", "",
             "| target | result | p50 ms | p99 ms | rel L2 | min cosine |", "|---|---|---|---|---|---|"]
    for row in record["table"]:
        cells = [row["target"], "passed" if row["passed"] else f"FAILED: {row['error']}",
                 *(f"{row[key]:.4g}" if isinstance(row[key], float) else "-" for key in ("p50_ms", "p99_ms", "rel_l2")),
                 f"{row['min_cosine']:.6f}" if isinstance(row["min_cosine"], float) else "-"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if record["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- {name}: {why}" for name, why in record["skipped"].items()]
    return "\n".join(lines)


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
