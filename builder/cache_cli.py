"""`mdbuild cache ls | du | gc | verify | push | pull`: the cache as a thing to look at and keep
(argparse, no Hydra: these act on the cache, not on a recipe).

An entry's last use is its meta.json's mtime (a hit touches it). gc never removes an entry a lock file
of the current repository names (`recipes/*.lock.json`, `*.lock.json`, or --locks) unless told to:
those are what `mode=check` and a rebuild of the checked-in builds need."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from builder.cache import HOST, Cache, default_cache_dir
from builder.errors import MdbuildError
from builder.hashing import sha256_file
from builder.locking import free_leases
from builder.remote import Remote


@dataclass(frozen=True)
class Stored:
    key: str
    path: Path | None  # entries/<k[:2]>/<key>; None in the remote tier
    step: str
    size: int
    used: float  # meta.json's mtime: last hit or commit (remote: upload or last download)
    complete: bool = True  # False: a remote entry without its manifest (an upload cut short, or under way)
    leased: bool = False  # a build may hold its remote lease: it is being built or uploaded
    objects: dict[str, float] | None = None  # a remote entry's objects and their times when listed

    @property
    def files(self) -> dict[str, dict]:
        return json.loads((self.path / "meta.json").read_text())["files"]


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    remote = _remote(args) if args.run in (_push, _pull) or getattr(args, "on_remote", False) else None
    try:
        return args.run(Cache(Path(args.dir) if args.dir else default_cache_dir(), remote=remote), args)
    except BrokenPipeError:  # `mdbuild cache ls | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


class _Parser(argparse.ArgumentParser):
    """argparse with mdbuild's one-line errors (exit 1) instead of usage plus message (exit 2)."""

    def error(self, message: str):
        raise MdbuildError(message, self.prog, f"see {self.prog} --help")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mdbuild cache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="the cache directory (default: $MDBUILD_CACHE_DIR, else ~/.cache/mdbuild)")
    parser.add_argument("--remote", help="the remote tier (default: $MDBUILD_CACHE_REMOTE), for push and pull")
    parser.add_argument("--remote-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an fsspec storage option, e.g. endpoint_url=http://127.0.0.1:9000")
    commands = parser.add_subparsers(required=True, metavar="COMMAND", parser_class=_Parser)
    on_remote = argparse.ArgumentParser(add_help=False)
    on_remote.add_argument("--on-remote", action="store_true",
                           help="the remote tier's entries (--remote / $MDBUILD_CACHE_REMOTE), not the local cache's")
    ls = commands.add_parser("ls", parents=[on_remote], help="every entry: key, step, size, last use, whether a lock names it")
    ls.add_argument("--locks", nargs="*", help="lock files (default: recipes/*.lock.json and *.lock.json here)")
    ls.set_defaults(run=_ls)
    du = commands.add_parser("du", parents=[on_remote], help="entries and bytes, by step")
    du.set_defaults(run=_du)
    gc = commands.add_parser("gc", parents=[on_remote],
                             help="remove entries unused for a while, or the least recently used past a size")
    gc.add_argument("--older-than", type=_duration, metavar="AGE", help="e.g. 30d, 12h, 90m")
    gc.add_argument("--max-size", type=_size, metavar="SIZE", help="e.g. 50G, 500M")
    gc.add_argument("--include-locked", action="store_true", help="also entries the repository's lock files name")
    gc.add_argument("--locks", nargs="*", help="lock files (default: recipes/*.lock.json and *.lock.json here)")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    gc.add_argument("--keep-recent", type=_duration, default=_GRACE_S, metavar="AGE",
                    help="never remove entries used this recently: a running build may be reading them (default 10m)")
    gc.set_defaults(run=_gc)
    verify = commands.add_parser("verify", help="re-hash every entry; damaged ones are removed (exit 1)")
    verify.set_defaults(run=_verify)
    push = commands.add_parser("push", help="upload the entries the remote lacks (files first, manifest last)")
    push.set_defaults(run=_push)
    pull = commands.add_parser("pull", help="download the entries the lock files name (--all: every remote entry)")
    pull.add_argument("--locks", nargs="*", help="lock files (default: recipes/*.lock.json and *.lock.json here)")
    pull.add_argument("--all", action="store_true")
    pull.set_defaults(run=_pull)
    return parser


def _remote(args) -> Remote | None:
    url = args.remote or os.environ.get("MDBUILD_CACHE_REMOTE")
    if not url:
        return None
    import yaml

    options = {}
    for item in args.remote_option:
        name, sep, value = item.partition("=")
        if not sep:
            raise MdbuildError(f"'{item}' is not KEY=VALUE", "--remote-option", "e.g. --remote-option endpoint_url=http://host:9000")
        options[name] = yaml.safe_load(value)  # anon=false is False, as in cache.remote_options
    return Remote(url, options, key="--remote")


def _entries(cache: Cache) -> list[Stored]:
    found = []
    for meta in sorted((cache.root / "entries").glob("*/*/meta.json")):
        try:
            record = json.loads(meta.read_text())
            size = sum(info["size"] for info in record["files"].values())
            found.append(Stored(meta.parent.name, meta.parent, record["description"].get("step", "?"), size,
                                meta.stat().st_mtime))
        except (OSError, ValueError, KeyError, TypeError):
            found.append(Stored(meta.parent.name, meta.parent, "(unreadable)", 0, 0.0))
    return found


def _stored(cache: Cache, args) -> list[Stored]:
    """The local cache's entries, or with --on-remote the remote tier's (one listing; ls and du also read
    each manifest for its step)."""
    if not args.on_remote:
        return _entries(cache)
    remote = _required(cache)
    listed = remote.stored()
    steps: dict[str, str] = {}
    paths = [f"{remote.root}/entries/{e['key'][:2]}/{e['key']}/meta.json" for e in listed if e["complete"]]
    if args.run in (_ls, _du) and paths:
        manifests = remote.fs.cat(paths, on_error="omit")
        for path, text in manifests.items():
            try:
                steps[path.rsplit("/", 2)[-2]] = json.loads(text)["description"].get("step", "?")
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return [Stored(e["key"], None, steps.get(e["key"], "?") if e["complete"] else "(no manifest)", e["size"], e["used"],
                   e["complete"], e["leased"], e["objects"]) for e in listed]


def locked_keys(paths: list[str] | None) -> set[str]:
    """The step keys the lock files name (every target's every step): those given, else the repository's
    here (recipes/*.lock.json, *.lock.json), where a file that is not an mdbuild lock is skipped."""
    given = paths is not None
    files = [Path(p) for p in paths] if given else [*Path("recipes").glob("*.lock.json"), *Path(".").glob("*.lock.json")]
    keys = set()
    for path in files:
        try:
            lock = json.loads(path.read_text())
            keys |= {step["key"] for target in lock["targets"].values() for step in target.get("steps", ())}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if given:
                raise MdbuildError(f"cannot read the lock file {path} ({exc})", "--locks", "give lock files mdbuild wrote") from exc
            print(f"warning: {path} is not an mdbuild lock file; skipped", file=sys.stderr)
    if not given and not files:
        print("note: no lock files here (recipes/*.lock.json, *.lock.json): entries that lock files elsewhere name are "
              "not protected; run in the repository, or give --locks", file=sys.stderr)
    return keys


def _ls(cache: Cache, args) -> int:
    locked = locked_keys(args.locks)
    now = time.time()
    print(f"{'key':<14}{'step':<14}{'MB':>9}  {'last used':>10}  locked")
    for entry in sorted(_stored(cache, args), key=lambda e: e.used, reverse=True):
        print(f"{entry.key[:12]:<14}{entry.step:<14}{entry.size / 1e6:>9.1f}  {_age(now - entry.used):>10}  "
              f"{'yes' if entry.key in locked else ''}")
    return 0


def _du(cache: Cache, args) -> int:
    entries = _stored(cache, args)
    by_step: dict[str, list[Stored]] = {}
    for entry in entries:
        by_step.setdefault(entry.step, []).append(entry)
    for step, group in sorted(by_step.items(), key=lambda item: -sum(e.size for e in item[1])):
        print(f"{step:<16}{len(group):>6} entries  {sum(e.size for e in group) / 1e6:>10.1f} MB")
    where = cache.remote.url if args.on_remote else cache.root
    print(f"{'total':<16}{len(entries):>6} entries  {sum(e.size for e in entries) / 1e6:>10.1f} MB  ({where})")
    return 0


def _gc(cache: Cache, args) -> int:
    if args.older_than is None and args.max_size is None:
        raise MdbuildError("nothing to collect by", "gc", "give --older-than AGE, --max-size SIZE, or both")
    locked = set() if args.include_locked else locked_keys(args.locks)
    entries = sorted(_stored(cache, args), key=lambda e: e.used)  # least recently used first
    now = time.time()
    # An entry without its manifest is no one's hit: an upload cut short, once an hour has passed since its
    # last file was written (an upload under way writes one file after another; a large one takes a while).
    kept = locked | {e.key for e in entries if e.leased or now - e.used < (args.keep_recent if e.complete else max(args.keep_recent, 3600))}
    doomed = [e for e in entries if e.key not in kept and (not e.complete or args.older_than is not None
                                                            and now - e.used > args.older_than)]
    total = sum(e.size for e in entries) - sum(e.size for e in doomed)
    for entry in entries:
        if args.max_size is None or total <= args.max_size:
            break
        if entry not in doomed and entry.key not in kept:
            doomed.append(entry)
            total -= entry.size
    for entry in list(doomed):
        if args.dry_run:
            continue
        if not args.on_remote:
            _remove(cache, entry.path)
        elif not cache.remote.remove(entry.key, entry.objects):  # a build took it up since the listing
            doomed.remove(entry)
            total += entry.size
    verb = "would remove" if args.dry_run else "removed"
    recent = sum(e.key in kept and e.key not in locked for e in entries)
    where = f" from {cache.remote.url}" if args.on_remote else ""
    print(f"{verb} {len(doomed)} entries{where}, {sum(e.size for e in doomed) / 1e6:.1f} MB; kept {len(entries) - len(doomed)} "
          f"({total / 1e6:.1f} MB, {sum(e.key in locked for e in entries)} named by lock files, {recent} used in the "
          f"last {_span(args.keep_recent)})")
    if not args.dry_run and args.on_remote:
        print(f"removed {cache.remote.free_leases()} remote lease files no build renews")
    elif not args.dry_run:
        cache.clean_stale_workdirs()
        print(f"removed {free_leases(cache.root / 'leases')} lease files no build holds")
    if args.max_size is not None and total > args.max_size:
        print(f"note: still {total / 1e6:.1f} MB: the rest is named by lock files (--include-locked removes those too) "
              f"or was used in the last {_span(args.keep_recent)} (a running build may be reading it; --keep-recent)")
    return 0


def _verify(cache: Cache, args) -> int:
    damaged = 0
    entries = _entries(cache)
    for entry in entries:
        try:
            bad = next((rel for rel, info in entry.files.items() if sha256_file(entry.path / "out" / rel) != info["sha256"]), None)
        except (OSError, ValueError, KeyError):
            bad = "meta.json"
        if bad:
            damaged += 1
            print(f"damaged: {entry.key[:12]} ({entry.step}): {bad} does not match its sha256; removed")
            _remove(cache, entry.path)
    print(f"{len(entries)} entries checked, {damaged} damaged")
    return 1 if damaged else 0


def _push(cache: Cache, args) -> int:
    remote = _required(cache)
    pushed = sum(remote.push(entry.key, entry.path / "out", json.loads((entry.path / "meta.json").read_text()))
                 for entry in _entries(cache))  # each file checked against its sha256 before it goes up
    return _report(remote, f"pushed {pushed} entries")


def _pull(cache: Cache, args) -> int:
    remote = _required(cache)
    if args.all:
        keys = {path.rsplit("/", 2)[-2] for path in remote.fs.glob(f"{remote.root}/entries/*/*/meta.json")}
    else:
        keys = locked_keys(args.locks)
    pulled = sum(cache.lookup(key) is None and cache.fetch(key) is not None for key in sorted(keys))
    return _report(remote, f"pulled {pulled} of {len(keys)} entries")


def _required(cache: Cache) -> Remote:
    if cache.remote is None:
        raise MdbuildError("no remote tier", "--remote", "give --remote s3://bucket/prefix or set MDBUILD_CACHE_REMOTE")
    cache.remote.check()
    return cache.remote


def _report(remote: Remote, what: str) -> int:
    for warning in remote.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{what} ({remote.url}: {remote.downloaded / 1e6:.1f} MB downloaded, {remote.uploaded / 1e6:.1f} MB uploaded)")
    return 1 if remote.warnings else 0


def _remove(cache: Cache, entry_dir: Path) -> None:
    """Out of entries/ in one rename (a build reading it then finds it missing and rebuilds), then deleted."""
    trash = cache.root / "tmp" / f"{HOST}-{os.getpid()}-gc-{uuid.uuid4().hex}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(entry_dir, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
# An entry used this recently may be an input of a build that is running: gc leaves it.
_GRACE_S = 600


def _duration(text: str) -> float:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip().lower())
    if not found:
        raise argparse.ArgumentTypeError(f"'{text}' is not an age: give a number and a unit (s, m, h, d, w), e.g. 30d")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _size(text: str) -> float:
    """50G, 50GB: 50e9 bytes; 50GiB: 50 * 2**30."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?)b?|b?)", text.strip().lower())
    if not found:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: give a number and a unit, e.g. 50G, 50GiB or 500M")
    unit, binary = found.group(2) or "", found.group(3)
    return float(found.group(1)) * (1024 if binary else 1000) ** _POWERS[unit]


def _span(seconds: float) -> str:
    """10m, 1h, 30s: a duration as given."""
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:g}{unit}"
    return f"{seconds:g}s"


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit} ago"
    return "just now"

