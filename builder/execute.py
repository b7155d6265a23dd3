"""Run a plan: for each step compute its key, reuse the cache entry or run the step in a private
work directory and commit it atomically. Steps only write files; everything else happens here."""

from __future__ import annotations

import importlib
import multiprocessing
import os
import shutil
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from builder.cache import Cache, DamagedEntry, Entry
from builder.errors import GateFailed, MdbuildError, first_line
from builder.keys import walk
from builder.plan import Plan, StepNode
from builder.progress import Console
from builder.steps import REPORT_FILE
from builder.reasons import explain


@dataclass
class StepResult:
    node: StepNode
    key: str
    description: dict[str, Any]
    entry: Entry
    cached: bool
    seconds: float


@dataclass
class StepContext:
    """What a running step may use besides its input directories: its node's config and files (never
    the whole config: what a step reads is in its key), where the user's modules import from, and
    the results of the steps before it."""

    node: StepNode
    key: str
    description: dict[str, Any]
    results: dict[str, StepResult]
    workdir: Path
    progress: Callable[[str], None]

    @property
    def config(self) -> dict[str, Any]:
        return self.node.config

    @property
    def paths(self) -> dict[str, Path]:
        return self.node.files


# How often a build starts over after finding a damaged cache entry, before it gives up.
_RESTARTS = 3


def execute(plan: Plan, cache: Cache, console: Console, failure_dir: Path | None = None) -> dict[str, StepResult]:
    """Runs the plan. An input entry found damaged (its content no longer matches its sha256) is
    discarded and the walk starts over, which rebuilds it."""
    cache.clean_stale_workdirs()
    local = 0
    try:
        while True:
            try:
                return _walk(plan, cache, console, failure_dir)
            except DamagedEntry as damaged:
                _warn(cache, console)  # what the download said first
                # A remote copy that cannot be downloaded is a miss: its key is not taken from the remote again,
                # so those restarts end. Local damage that recurs is the disk's.
                local += not damaged.remote
                if local > _RESTARTS:
                    raise MdbuildError(f"{damaged.what}, again after {_RESTARTS} rebuilds", "cache.dir",
                                       "check the disk under the cache, or point cache.dir elsewhere") from damaged
                console.line(f"warning: {damaged.what}; discarded, starting over to rebuild it")
    finally:
        cache.digests.save()


def _walk(plan: Plan, cache: Cache, console: Console, failure_dir: Path | None) -> dict[str, StepResult]:
    results: dict[str, StepResult] = {}
    digests: dict[str, str] = {}
    for index, keyed in enumerate(walk(plan, cache, digests), 1):
        node, description, key = keyed.node, keyed.description, keyed.key
        label = f"[{index}/{len(plan.steps)}] {node.id:<13}"
        entry = _find(cache, console, key)
        if entry is None:
            # One build computes a key at a time; the others wait for it, then take its entry.
            waited: list[str] = []

            def waiting(who: str, label: str = label, key: str = key) -> None:
                waited.append(who)
                console.line(f"{label} waiting  {key[:12]}  ({who} is building it)")

            with cache.lease(key, waiting) as held:
                entry = _find(cache, console, key)
                if entry is None:
                    failure = {name: value for name, value in held.previous.items() if name.startswith("failed")}
                    if waited and failure.get("failed"):  # the same key fails the same way: not again, in turn
                        held.note(**failure)  # for the builds still waiting
                        raise MdbuildError(f"{failure['failed']} (the failure of the build this one waited for, pid "
                                           f"{failure.get('failed_by')}, at step {node.id}: not repeated)",
                                           failure.get("failed_where"), failure.get("failed_fix"))
                    why = cache.discarded.get(key)
                    reason = f"its cache entry was damaged: {why}" if why else \
                        explain(cache.last_description(plan.slot(node)), description)
                    started = time.monotonic()
                    context = StepContext(node, key, description, results, plan.spec.workdir, _silent)
                    try:
                        entry = _run_step(context, cache, console, label, reason, failure_dir)
                    except DamagedEntry:  # an input's damage, not this step's failure: rebuilt on the restart
                        raise
                    except Exception as exc:
                        ours = isinstance(exc, MdbuildError)
                        held.note(failed=first_line(exc.what if ours else exc), failed_where=exc.where if ours else node.id,
                                  failed_fix=exc.fix if ours else None, failed_by=os.getpid())
                        raise
                    cache.remember(plan.slot(node), description)
                    cache.push(entry)
                    _warn(cache, console)
                    results[node.id] = StepResult(node, key, description, entry, False, time.monotonic() - started)
                    digests[node.id] = entry.digest
                    console.line(f"{label} done     {results[node.id].seconds:.1f}s")
                    continue
        results[node.id] = StepResult(node, key, description, entry, True, 0.0)
        digests[node.id] = entry.digest
        here = (entry.out.parent / "meta.json").is_file()  # else the remote tier's: downloaded when read
        console.line(f"{label} {'cached' if here else 'remote'}   {key[:12]}")
    return results


def _find(cache: Cache, console: Console, key: str) -> Entry | None:
    """The entry of `key` in the local cache, else the remote tier's (by its manifest)."""
    entry = cache.lookup(key) or cache.remote_entry(key)
    _warn(cache, console)
    return entry


def _warn(cache: Cache, console: Console) -> None:
    for warning in cache.warnings:
        console.line(f"warning: {warning}")
    cache.warnings.clear()


def _silent(_message: str) -> None:
    """A step's progress callback until its process installs the real one."""


def _run_step(context: StepContext, cache: Cache, console: Console, label: str, reason: str,
              failure_dir: Path | None) -> Entry:
    """Runs one step in a private work directory and commits it; on any failure nothing is kept
    in the cache (a failed verification's report is copied to failure_dir for inspection)."""
    for step_id in sorted(set(context.node.upstream.values())):  # what the step reads is checked by content
        cache.check_content(context.results[step_id].entry, step_id)
    before = {step_id: _stats(context.results[step_id].entry.out) for step_id in set(context.node.upstream.values())}
    started = time.monotonic()
    inputs = {name: context.results[sid].entry.out for name, sid in context.node.upstream.items()}
    work = None
    try:  # from the work directory's creation on: a signal at any point removes it
        work = cache.new_workdir()
        console.line(f"{label} running  {context.key[:12]}  ({reason})")
        with console.step(label) as progress:
            (_run_isolated if context.node.isolated else _run_here)(context, inputs, work, progress)
    except GateFailed as failure:
        kept = _keep(work / "out", failure_dir)
        cache.abandon(work)
        if kept:
            failure.what += f" (report kept in {kept})"
        raise
    except BaseException as exc:
        if work is not None:
            cache.abandon(work)
        gone = [sid for sid in before if not (context.results[sid].entry.out.parent / "meta.json").is_file()]
        if gone and isinstance(exc, Exception):  # removed under it (mdbuild cache gc): rebuilt, not this step's failure
            raise DamagedEntry(gone[0], context.results[gone[0]].key, "it was removed while a step read it") from exc
        raise
    for step_id, files in before.items():  # a step writes its own output only (onnx2tf saved over its input)
        now = _stats(context.results[step_id].entry.out)
        changed = min((rel for rel in files.keys() | now.keys() if files.get(rel) != now.get(rel)), default=None)
        if changed:
            cache.abandon(work)
            cache.discard(context.results[step_id].key, f"{changed} was changed by step '{context.node.id}'")
            raise MdbuildError(f"the step changed {changed} in the output of step '{step_id}', which it only reads",
                               context.node.id, "a bug of mdbuild or of the tool the step runs: please report it; the "
                               "changed entry is discarded")
    return cache.commit(context.key, work, context.description, time.monotonic() - started, context.node.reports)


def _stats(directory: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime)} of every file under `directory`."""
    return {str(path.relative_to(directory)): (stat.st_size, stat.st_mtime_ns)
            for path in directory.rglob("*") if path.is_file() for stat in [path.stat()]}


def _run_here(context: StepContext, inputs: dict[str, Path], work: Path, progress: Callable[[str], None]) -> None:
    """Runs the step in this process, in its scratch directory (tools that write scratch files into
    the current directory write them there)."""
    previous = os.getcwd()
    os.chdir(work / "scratch")
    context.progress = progress
    try:
        _resolve(context.node.run)(context, inputs, work / "out")
    except SystemExit as exc:  # an SDK calling sys.exit() fails the step; it does not end the build quietly
        raise _stopped(exc, context.node.id) from exc
    finally:
        os.chdir(previous)


def _start(child) -> None:
    """Starts a spawned child from any process. In a launcher's worker (joblib's loky) the default start
    method is one a fresh interpreter cannot set up, and the child is told it: spawn is told instead."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method in (None, "spawn", "fork", "forkserver"):
        child.start()
        return
    multiprocessing.set_start_method("spawn", force=True)
    try:
        child.start()
    finally:
        multiprocessing.set_start_method(method, force=True)


def _run_isolated(context: StepContext, inputs: dict[str, Path], work: Path, progress: Callable[[str], None]) -> None:
    """Runs the step in a fresh interpreter: for steps that load TensorFlow (loaded before PyTorch's
    Triton or before MindSpore, it crashes the interpreter; measured: `import tensorflow, torchvision`
    is a SIGSEGV), so this process never loads it, and for steps whose output depends on what the
    process did before (OpenVINO names new nodes from a per-process counter). A crash inside the
    child becomes a one-line error.
    Other steps run in-process: a fresh interpreter per step costs a torch import (seconds) each.
    Only plain data crosses the pipe: unpickling an SDK's exception would import the SDK here."""
    spawn = multiprocessing.get_context("spawn")
    receiver, sender = spawn.Pipe(duplex=False)
    child = spawn.Process(target=_step_process, args=(context, inputs, work, sender), daemon=True)
    outcome = None
    try:
        _start(child)
        sender.close()
        while outcome is None:
            ready = wait([receiver, child.sentinel])
            if receiver in ready:
                try:
                    kind, payload = receiver.recv()
                except EOFError:
                    break
                if kind == "progress":
                    progress(payload)
                else:
                    outcome = (kind, payload)
            elif not receiver.poll():  # the child ended without a word
                break
        child.join(timeout=_EXIT_GRACE_S)
    finally:
        if child.is_alive():  # interrupted, or stuck in its interpreter's shutdown
            child.kill()
            child.join()
        receiver.close()
        sender.close()
    if outcome is None:
        raise MdbuildError(f"the step's process died ({_exit_description(child.exitcode)}) without an error message",
                           context.node.id, "rerun with traceback=true; the SDK's own output above says more")
    if outcome[0] == "error":
        raise _rebuilt(outcome[1])


_EXIT_GRACE_S = 30.0


def _step_process(context: StepContext, inputs: dict[str, Path], work: Path, sender) -> None:
    """Child side: tools that write scratch files into the current directory write them into the
    step's own; progress and the outcome go back through the pipe."""
    os.chdir(work / "scratch")
    context.progress = lambda message: sender.send(("progress", message))
    try:
        _resolve(context.node.run)(context, inputs, work / "out")
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            exc = _stopped(exc, context.node.id)
        sender.send(("error", _described(exc)))
    else:
        sender.send(("done", None))
    finally:
        sender.close()


def _stopped(exc: BaseException, step: str) -> MdbuildError:
    detail = type(exc).__name__ + (f" {exc.code}" if isinstance(exc, SystemExit) else "")
    return MdbuildError(f"the step exited ({detail})", step,
                        "rerun with traceback=true; the SDK's own output above says why")


def _described(exc: BaseException) -> dict[str, Any]:
    """The exception as plain data (strings only)."""
    fields = {"what": exc.what, "where": exc.where, "fix": exc.fix} if isinstance(exc, MdbuildError) else {}
    return {"gate": isinstance(exc, GateFailed), "user": isinstance(exc, MdbuildError), **fields,
            "type": type(exc).__name__, "first_line": first_line(exc),
            "trace": "".join(traceback.format_exception(exc))}


def _rebuilt(described: dict[str, Any]) -> Exception:
    """The parent's copy: the same user-facing error, or a RuntimeError naming the SDK's exception;
    either way carrying the child's traceback for traceback=true."""
    if described["user"]:
        kind = GateFailed if described["gate"] else MdbuildError
        error: Exception = kind(described["what"], described["where"], described["fix"])
    else:
        error = RuntimeError(f"{described['type']}: {described['first_line']}")
    error.add_note(f"in the step's process:\n{described['trace']}")
    return error


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _resolve(path: str) -> Callable[..., None]:
    module, function = path.split(":")
    return getattr(importlib.import_module(module), function)


def _keep(out: Path, failure_dir: Path | None) -> Path | None:
    """A failed verification's report, for inspection (a step failing before any report keeps nothing)."""
    if failure_dir is None or not (out / REPORT_FILE).is_file():
        return None
    target = failure_dir / "failed-verification"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out, target)
    return target
