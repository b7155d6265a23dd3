"""The three modes on a resolved BuildSpec: build (run the DAG, write the artifact and the lock),
plan (print the DAG with keys and cache state), check (compare with the lock file)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from backends import get_backend
from builder import __version__
from builder.artifact import artifact_path, materialize, point_latest
from builder.cache import Cache, DamagedEntry, default_cache_dir
from builder.errors import MdbuildError
from builder.execute import execute
from builder.keys import walk
from builder.lock import check_lock, check_writable, lock_path, write_lock
from builder.plan import Plan, make_plan
from builder.progress import Console
from builder.reasons import explain
from builder.remote import Remote
from builder.signature import with_signature
from builder.sources import get_source
from builder.spec import BuildSpec, writable_directory
from builder.validate import validate


@contextmanager
def open_cache(spec: BuildSpec) -> Iterator[Cache]:
    """The configured cache; with cache.enabled=false a scratch directory removed after the build."""
    if not spec.config["cache"]["enabled"]:
        scratch = Path(tempfile.mkdtemp(prefix="mdbuild-nocache-"))
        try:
            yield Cache(scratch, enabled=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    settings = spec.config["cache"]
    remote_url = settings["remote"] or os.environ.get("MDBUILD_CACHE_REMOTE")
    remote = Remote(remote_url, settings["remote_options"]) if remote_url else None
    yield Cache(spec.resolve_path(settings["dir"]) if settings["dir"] else default_cache_dir(), remote=remote,
                push=settings["push"])


def run(spec: BuildSpec, console: Console, run_dir: Path | None = None) -> Path | None:
    with open_cache(spec) as cache:
        spec = with_signature(spec, cache)
        for warning in validate(spec):
            console.line(f"warning: {warning}")
        return _run_mode(make_plan(spec), cache, console, run_dir)


def _run_mode(plan: Plan, cache: Cache, console: Console, run_dir: Path | None) -> Path | None:
    spec = plan.spec
    mode = spec.config["mode"]
    if mode == "plan":
        print_plan(plan, cache, console)
        return None
    if mode == "check":
        path, count, note = check_lock(plan, cache)
        if note:
            console.line(f"note: {note}")
        console.line(f"lock check passed: {count} steps of {spec.recipe}/{spec.target['name']} match {path}")
        return None
    get_source(spec.model).require()
    get_backend(spec.target["backend"]).require("target.backend")
    check_outputs(spec, cache)
    console.line(f"mdbuild {__version__} · recipe {spec.recipe} · target {spec.target['name']} · cache {cache.root}")
    results = execute(plan, cache, console, failure_dir=run_dir)
    try:
        destination, replaced = materialize(results["package"].entry, artifact_path(spec, results["package"].key), cache)
    except DamagedEntry as damaged:  # the entry to copy from: rebuilt, then copied
        console.line(f"warning: {damaged.what}; discarded, starting over to rebuild it")
        results = execute(plan, cache, console, failure_dir=run_dir)
        destination, replaced = materialize(results["package"].entry, artifact_path(spec, results["package"].key), cache)
    if replaced:
        console.line(f"warning: the artifact directory was damaged ({replaced}); replaced with the build's own copy")
    unpointed = point_latest(spec, destination)
    if unpointed:
        console.line(f"warning: {unpointed}")
    report = _report_line(destination)
    if report:
        console.line(report)
    if spec.config["lock"]["update"]:  # after the artifact: a lock never names a build that was not written
        path, note = write_lock(spec, results)
        if note:
            console.line(f"note: {note}")
        console.line(f"lock: {path}")
    if cache.remote is not None:
        console.line(f"remote cache {cache.remote.url}: {cache.remote.downloaded / 1e6:.1f} MB downloaded, "
                     f"{cache.remote.uploaded / 1e6:.1f} MB uploaded")
    console.line(f"artifact: {destination}")
    return destination


def check_outputs(spec: BuildSpec, cache: Cache) -> None:
    """Where a build writes (lock, artifacts, cache, remote tier) can be written, before any step runs."""
    if spec.config["lock"]["update"]:
        if lock_path(spec).is_dir():
            raise MdbuildError(f"{lock_path(spec)} is a directory", "lock.path", "give the lock file's path, e.g. recipes/NAME.lock.json")
        writable_directory(lock_path(spec).parent, "lock.path")
        check_writable(spec)
    writable_directory(spec.resolve_path(spec.config["output"]["dir"]), "output.dir")
    writable_directory(cache.root, "cache.dir")
    if cache.remote is not None:
        cache.remote.check()


def print_plan(plan: Plan, cache: Cache, console: Console) -> None:
    spec = plan.spec
    console.line(f"plan · recipe {spec.recipe} · target {spec.target['name']} · cache {cache.root}")
    digests: dict[str, str] = {}
    for keyed in walk(plan, cache, digests):
        node = keyed.node
        after = ", ".join(sorted(set(node.upstream.values()))) or "-"
        if keyed.pending:
            console.line(f"  {node.id:<13} after {after:<36} key pending until {', '.join(keyed.pending)} have run")
            continue
        digest = cache.peek_digest(keyed.key)
        if digest is not None:
            digests[node.id] = digest
            console.line(f"  {node.id:<13} after {after:<36} {keyed.key}  cached")
        else:
            reason = explain(cache.last_description(plan.slot(node)), keyed.description)
            console.line(f"  {node.id:<13} after {after:<36} {keyed.key}  will run: {reason}")
    cache.digests.save()


def _ms(value: float) -> str:
    """Three significant digits (0.0193, 11.7), without an exponent for a second or more (1234)."""
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def _report_line(artifact: Path) -> str | None:
    try:
        report = json.loads((artifact / "report.json").read_text())
    except (OSError, ValueError):
        return None
    worst = {name: r["metrics"] for name, r in report["outputs"].items()}
    parts = [f"{name}: rel_l2 {m['rel_l2']:.2e}, cosine {m['min_cosine']:.6f}" for name, m in worst.items()]
    evaluation = report.get("evaluation")
    if evaluation:
        parts.append(f"{evaluation['metric']} {evaluation['artifact_score']:.2f} (source {evaluation['source_score']:.2f})")
    if report.get("compute"):
        parts.insert(0, f"computed in {report['compute']['words']}")
    parts.insert(0, f"tolerances {report['tolerance_level']}")
    if report.get("proxy"):
        parts.insert(0, f"on {report['proxy']['model_file']} with ONNX Runtime CPU ({report['proxy']['why']})")
    latency = report["latency"]
    speed = latency["why"] if latency.get("measured") is False else \
        f"p50 {_ms(latency['p50_ms'])} ms, p99 {_ms(latency['p99_ms'])} ms"
    lines = [f"verify: {'passed' if report['passed'] else 'FAILED'} · " + " · ".join(parts) + f" · {speed}"]
    lines += [f"engine: {engine['file']} ({engine['sdk']}) runs on {engine['runs_on']}" for engine in report.get("engines") or []]
    if report.get("deferred"):
        lines.append(f"engine: deferred full TensorRT build, for {report['deferred']['runs_on']}")
    if report.get("profiles"):
        lines.append("engine profile [min, opt, max]: " + ", ".join(f"{dim} {r}" for dim, r in report["profiles"].items()))
    lines += [f"note: {note}" for note in report.get("notes") or []]
    lines += [f"note: exported with {r['exporter']}, as the {r['fallback_from']} exporter failed ({r['why']}); {r['hint']}"
              for r in report.get("optimizations") or [] if r.get("fallback_from")]
    lines += [f"pending on the target: {check}" for check in report.get("pending") or []]
    return "\n".join(lines + [f"WARNING: {warning}" for warning in report.get("warnings", [])])
