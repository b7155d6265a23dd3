"""target=auto: the targets usable on this host are built as a sweep through the configured launcher
(a child `mdbuild -m target=a,b,...` with the same overrides), those that passed their gates are raced
(builder.race), and the fastest is the result: the choice and the measured table go to the lock (entry
`auto`), to the chosen artifact's report, and <recipe>-auto-latest points at it."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from backends import Unavailable, discovered
from builder.artifact import point_latest
from builder.build import check_outputs, open_cache
from builder.errors import MdbuildError, Terminated
from builder.hashing import write_atomically
from builder.lock import lock_path, locked_entry, update
from builder.plan import make_plan
from builder.progress import Console
from builder.race import race
from builder.schema import backend_options
from builder.signature import with_signature
from builder.spec import BuildSpec
from builder.steps import REPORT_FILE, REPORT_PAGE
from builder.sweep import RESULT_FILE, cell, read_results, recommend, speed, write_summary
from builder.validate import validate

AUTO = "auto"
# What the lock and the report keep of each candidate's row (not the paths of this machine's run).
_RECORDED = ("target", "passed", "p50_ms", "p99_ms", "race_p50_ms", "race_p99_ms", "race_error", "throughput_per_s",
             "rel_l2", "min_cosine", "metric", "score", "source_score", "model_bytes", "latency_note", "error")


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this run was started, for the child that builds the candidates: Hydra's own overrides
    (hydra/launcher=...), the task's, the command-line flags naming config directories, and the
    directories the `target` group is read from, in Hydra's search order."""

    task: list[str]
    hydra: list[str]
    flags: list[str]
    config_dirs: list[Path]


def targets(config_dirs: list[Path]) -> dict[str, str]:
    """Every target of the `target` group but auto, with its backend (the first config directory with a file
    of that name wins, as in Hydra's search path)."""
    files: dict[str, Path] = {}
    for directory in config_dirs:
        for path in sorted((directory / "target").glob("*.yaml")):
            files.setdefault(path.stem, path)
    return {name: (yaml.safe_load(path.read_text()) or {}).get("backend") for name, path in sorted(files.items())
            if name != AUTO}


def check_select(select: dict[str, Any], known: dict[str, str]) -> None:
    margin = select["margin"]
    if not isinstance(margin, (int, float)) or math.isnan(margin) or math.isinf(margin) or margin < 0:
        raise MdbuildError(f"{margin!r} is not a fraction >= 0", "select.margin", "give e.g. 0.05 (5%), or 0 to always take the fastest")
    for name in select["targets"]:
        if name not in known:
            raise MdbuildError(f"no target named '{name}'", "select.targets", f"choose from: {', '.join(known)}")


def candidates(select: dict[str, Any], known: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(the targets to build, {target: why it is not usable here})."""
    backends = discovered()
    usable, skipped = [], {}
    for name in list(dict.fromkeys(select["targets"])) or list(known):
        backend = backends.get(known[name])
        why = backend.why if isinstance(backend, Unavailable) else backend.unusable_here() if backend else \
            f"no backend named '{known[name]}'"
        if why:
            skipped[name] = why
        else:
            usable.append(name)
    if not usable:
        listed = "; ".join(f"{name}: {why}" for name, why in skipped.items())
        raise MdbuildError(f"no candidate target is usable on this host ({listed})", "select.targets",
                           "name targets usable here, or install or provide what a reason above names")
    return usable, skipped


def planned(spec: BuildSpec, usable: list[str], config_dirs: list[Path]) -> dict[str, str]:
    """{candidate: why the recipe cannot be built for it}, from each candidate's plan-time checks (those of
    a build of it alone), and where the build writes checked once. When every candidate fails, the first
    one's error: the recipe's to fix."""
    failures: dict[str, MdbuildError] = {}
    with open_cache(spec) as cache:
        if spec.config["mode"] == "build":
            check_outputs(spec, cache)
        for name in usable:
            path = next(d / "target" / f"{name}.yaml" for d in config_dirs if (d / "target" / f"{name}.yaml").is_file())
            target = {"precision": "fp32", "optimize": [], **yaml.safe_load(path.read_text()), "options": None}
            target.pop("defaults", None)
            try:
                backend_options(target)
                candidate = with_signature(dataclasses.replace(spec, config={**spec.config, "target": target}), cache)
                validate(candidate)
                make_plan(candidate)
            except MdbuildError as refused:
                failures[name] = refused
    if failures and len(failures) == len(usable):
        first = failures[usable[0]]
        raise MdbuildError(f"{first.what} (target=auto: the recipe cannot be built for any candidate usable here: "
                           f"{', '.join(usable)})", first.where, first.fix)
    return {name: refused.one_line() for name, refused in failures.items()}


def run_auto(spec: BuildSpec, launch: Launch, run_dir: Path, console: Console) -> Path | None:
    select, mode = spec.config["select"], spec.config["mode"]
    for item in launch.task:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith("target."):
            raise MdbuildError("set with target=auto, whose candidates each have their own", key,
                               "drop it (select.targets chooses the candidates), or build one target with it")
    known = targets(launch.config_dirs)
    check_select(select, known)
    if mode == "check":
        _check(spec, launch, console)
        return None
    usable, skipped = candidates(select, known)
    for name, why in skipped.items():
        console.line(f"target=auto: skipping {name}: {why}")
    refused = planned(spec, usable, launch.config_dirs)
    for name, why in refused.items():
        console.line(f"target=auto: skipping {name}: {why}")
    skipped.update(refused)
    usable = [name for name in usable if name not in refused]
    console.line(f"target=auto: {_count(len(usable), 'candidate')}: {', '.join(usable)}")
    sweep_dir = run_dir / "candidates"
    for stale in sweep_dir.glob(f"*/{RESULT_FILE}"):  # a run directory given again (hydra.run.dir)
        stale.unlink()
    code = _child(["--multirun", *_with_target(launch.task, ",".join(usable)), f"hydra.sweep.dir={sweep_dir}",
                   "hydra.callbacks.sweep_summary.candidates=true"], launch, spec.workdir, console)
    if mode == "plan":
        if code:
            raise MdbuildError(f"planning the candidates failed (exit {code}); the error is above", "target")
        return None
    rows = [row for row in read_results(sweep_dir) if row["target"] in usable]
    missing = [name for name in usable if name not in {row["target"] for row in rows}]
    if missing:
        raise MdbuildError(f"the candidates' sweep ended (exit {code}) before {', '.join(missing)} reported; "
                           "its error is above", "target", "build that candidate alone (target=NAME) to see it")
    _race(rows, console)
    return _choose(spec, rows, usable, skipped, sweep_dir, console)


def _race(rows: list[dict[str, Any]], console: Console) -> None:
    """The candidates that passed, measured again side by side (where there are two to compare)."""
    contestants = {row["target"]: Path(row["artifact"]) for row in rows if row["passed"] and row.get("p50_ms") is not None}
    if len(contestants) < 2:
        return
    console.line(f"target=auto: racing {', '.join(contestants)} (each in its own process, in turns)")
    started = time.perf_counter()
    measured = race(contestants)
    console.line(f"target=auto: raced in {time.perf_counter() - started:.1f} s")
    for row in rows:
        result = measured.get(row["target"], {})
        row.update({"race_p50_ms": result.get("p50_ms"), "race_p99_ms": result.get("p99_ms")} if result else {})
        if result.get("error"):
            row["race_error"] = result["error"]


def _choose(spec: BuildSpec, rows: list[dict[str, Any]], usable: list[str], skipped: dict[str, str], sweep_dir: Path,
            console: Console) -> Path:
    select, path = spec.config["select"], lock_path(spec)
    locked = _locked(spec, required=False)
    chosen, why = choose(rows, locked.get("chosen"), select["margin"])
    if chosen is None:
        raise MdbuildError(f"no candidate passed its gate with a measured latency ({_outcomes(rows)}; each job's error "
                           "is above)", "target", f"see {sweep_dir / 'summary.md'}")
    write_summary(sweep_dir, rows, (chosen, why))  # its Ship line: this choice, also where the lock's was kept
    artifact = Path(chosen["artifact"])
    record = {"chosen": chosen["target"], "why": why, "artifact": artifact.name, "candidates": usable,
              "margin": select["margin"], "skipped": skipped, "table": [{key: row.get(key) for key in _RECORDED} for row in rows]}
    (sweep_dir / "selection.json").write_text(json.dumps(record, indent=2) + "\n")
    was = f" (was {locked['chosen']})" if locked.get("chosen") not in (None, chosen["target"]) else ""
    console.line(f"target=auto: chose {chosen['target']}{was}: {why}")
    if not spec.config["lock"]["update"]:  # the lock, the reports and <recipe>-auto-latest stay as the lock says
        console.line(f"artifact: {artifact}")
        return artifact
    # The chosen build's steps (its job wrote them under its target): check and gc keep to them.
    entry = {**record, "steps": (locked_entry(path, chosen["target"], for_check=False) or {}).get("steps", [])}
    if all(entry[key] == locked.get(key) for key in ("chosen", "artifact", "candidates", "skipped", "steps")):
        if "selection" not in json.loads((artifact / REPORT_FILE).read_text()):  # its directory was made anew
            _add_to_report(artifact, {key: value for key, value in locked.items() if key != "steps"})
        console.line(f"lock: {path} ({AUTO}: {chosen['target']}, as locked: its record of the choice is kept)")
    else:
        if locked.get("artifact") not in (None, artifact.name):
            _drop_from_report(artifact.parent / locked["artifact"])  # the previous choice is no longer one
        _add_to_report(artifact, record)
        update(path, spec.recipe, AUTO, entry)
        console.line(f"lock: {path} ({AUTO}: {chosen['target']})")
    unpointed = point_latest(spec, artifact)
    if unpointed:
        console.line(f"warning: {unpointed}")
    console.line(f"artifact: {artifact}")
    return artifact


def _check(spec: BuildSpec, launch: Launch, console: Console) -> None:
    """mode=check: the locked choice is still a candidate and still the build its target's entry names; then
    that target's check."""
    record, path = _locked(spec, required=True), lock_path(spec)
    chosen, wanted = record["chosen"], spec.config["select"]["targets"]
    if wanted and chosen not in wanted:
        raise MdbuildError(f"the lock's choice, {chosen}, is not among select.targets ({', '.join(wanted)})", "select.targets",
                           "build target=auto again to choose among them, or add it")
    own = locked_entry(path, chosen, for_check=True) or {}
    if [step["key"] for step in own.get("steps", [])] != [step["key"] for step in record.get("steps", [])]:
        raise MdbuildError(f"the lock's entry for {chosen} is not the build target=auto chose (a later build of {chosen} "
                           "with other settings replaced it)", str(path),
                           f"build target=auto again, or build {chosen} as it was chosen")
    console.line(f"target=auto: the lock chose {chosen}; checking it")
    code = _child(_with_target(launch.task, chosen), launch, spec.workdir, console)
    if code:
        raise SystemExit(code)  # the check's own error line is above


def choose(rows: list[dict[str, Any]], locked: str | None, margin: float) -> tuple[dict[str, Any] | None, str]:
    """The fastest row that passed; the lock's earlier choice instead while it passed within `margin`."""
    fastest = recommend(rows)
    if fastest is None:
        return None, ""
    passed = [row for row in rows if row["passed"] and speed(row) is not None]
    kept = next((row for row in passed if row["target"] == locked), None)
    if kept is not None and kept is not fastest and speed(kept) <= speed(fastest) * (1 + margin):
        return kept, (f"the lock's choice, kept: its p50 ({speed(kept):.4g} ms) is within select.margin "
                      f"({margin * 100:g}%) of the fastest, {fastest['target']} ({speed(fastest):.4g} ms)")
    gated = sum(1 for row in rows if row["passed"])
    return fastest, (f"the fastest p50 ({speed(fastest):.4g} ms) of the {gated} of "
                     f"{_count(len(rows), 'candidate')} that passed their gates")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _outcomes(rows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{row['target']}: {'failed' if row['error'] else row.get('race_error') or row.get('latency_note') or 'passed'}"
                     for row in rows)


def _locked(spec: BuildSpec, required: bool) -> dict[str, Any]:
    """The lock's auto entry ({} where there is none); `required` (mode=check): one line when it is missing."""
    path = lock_path(spec)
    if required and not path.is_file():
        raise MdbuildError(f"no lock file at {path}", "lock.path", "build target=auto once to write it, or point lock.path at it")
    entry = locked_entry(path, AUTO, for_check=required)
    if entry is None and required:
        raise MdbuildError(f"{path} has no entry for target '{AUTO}'", "target", "build target=auto once to add it to the lock")
    return entry or {}


def _with_target(overrides: list[str], target: str) -> list[str]:
    """The job's overrides with target=auto replaced (or, where a recipe chose auto, added)."""
    kept = [item for item in overrides if item.split("=", 1)[0] not in ("target", "+target", "++target")]
    return [*kept, f"target={target}"]


# Hydra settings of this run that are not the candidates': where it runs and where an outer sweep writes.
_OWN = ("hydra.mode=", "hydra.run.dir=", "hydra.sweep.dir=", "hydra.sweep.subdir=", "hydra.job.chdir=")


def _child(args: list[str], launch: Launch, workdir: Path, console: Console) -> int:
    """`mdbuild ARGS` in a child process with this run's launcher and Hydra settings, in the working directory;
    its output is ours. A signal that reached this process alone (SIGTERM to it) is passed on, and the child's
    own cleanup awaited."""
    passed_on = [item for item in launch.hydra if not item.startswith(_OWN)]
    command = [*launch.flags, *args, *passed_on]
    console.line(f"target=auto: mdbuild {shlex.join(command)}")
    child = subprocess.Popen([sys.executable, "-m", "builder", *command], cwd=workdir)
    try:
        return child.wait()
    except KeyboardInterrupt as stop:
        try:
            return child.wait(timeout=2)  # Ctrl-C reached the whole process group: the child stops by itself
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


_SECTION = "\n## Chosen by target=auto\n"


def _add_to_report(artifact: Path, record: dict[str, Any]) -> None:
    """The choice and the table in the chosen artifact's reports (measurements, outside its identity)."""
    _edit_report(artifact, record, "\n\n" + _SECTION.lstrip("\n") + "\n" + _table(record) + "\n")


def _drop_from_report(artifact: Path) -> None:
    if (artifact / REPORT_FILE).is_file():
        _edit_report(artifact, None, "\n")


def _edit_report(artifact: Path, record: dict[str, Any] | None, section: str) -> None:
    report = json.loads((artifact / REPORT_FILE).read_text())
    report.pop("selection", None)
    write_atomically(artifact / REPORT_FILE, json.dumps({**report, **({"selection": record} if record else {})}, indent=2) + "\n")
    page = artifact / REPORT_PAGE
    if page.is_file():
        write_atomically(page, page.read_text().split(_SECTION)[0].rstrip("\n") + section)


_COLUMNS = (("target", "target"), ("passed", "result"), ("race_p50_ms", "p50 ms, raced"), ("p50_ms", "p50 ms at verify"),
            ("rel_l2", "rel L2"), ("min_cosine", "min cosine"), ("score", "score"), ("model_bytes", "size MB"))


def _table(record: dict[str, Any]) -> str:
    lines = [f"{record['why'][0].upper()}{record['why'][1:]}.", "",
             "| " + " | ".join(title for _, title in _COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in record["table"]:
        cells = [cell(row, key) + (f": {row['error']}" if key == "passed" and row["error"] else "") for key, _ in _COLUMNS]
        lines.append("| " + " | ".join(text.replace("|", "\\|") for text in cells) + " |")
    if record["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- {name}: {why}" for name, why in record["skipped"].items()]
    return "\n".join(lines)
