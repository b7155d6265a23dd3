"""The `mdbuild` command: the only module that sees Hydra. It composes the config, turns it into a
plain BuildSpec and hands it to builder.build; every failure becomes one line and a non-zero exit."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from backends import all_backends
from builder.errors import MdbuildError, Terminated, first_line
from builder.optimize import LOSS_ORDER
from builder.progress import Console
from builder.recipes import DEFAULT_RECIPE, recipe_files
from builder.resources import resource_dir
from builder.schema import BuildConfig, Tolerance, backend_options, declared_keys, section_schema
from builder.spec import BuildSpec
from builder.sweep import job_result, write_result

_RECIPES: dict[str, tuple[Path, bool]] = {}
_STARTED = time.time()


def _register_configs(workdir: Path, argv: list[str]) -> None:
    from hydra.core.config_store import ConfigStore
    from omegaconf import DictConfig, OmegaConf

    store = ConfigStore.instance()
    store.store(name="mdbuild_schema", node=BuildConfig)
    for backend in all_backends():  # each target's `- options: <backend>` picks its schema
        store.store(group="target/options", name=backend.name, node=backend.options)
    _RECIPES.update(recipe_files(workdir))
    wanted = {name for arg in argv if arg.lstrip("+").startswith("recipe=") for name in arg.split("=", 1)[1].split(",")}
    for name, (path, _) in _RECIPES.items():
        try:
            node = OmegaConf.load(path)
            if not isinstance(node, DictConfig):
                raise ValueError(f"a recipe is a mapping of config keys (model:, target:, ...), this is a {type(node).__name__}")
        except Exception as exc:
            mark = getattr(exc, "problem_mark", None)  # a YAML error: the problem and where it was found
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or first_line(exc)
            started = getattr(exc, "context_mark", None)
            if started and getattr(exc, "context", None):  # an unclosed bracket or quote: where it opened
                problem += f" ({exc.context} started at line {started.line + 1}, column {started.column + 1})"
            if name in wanted:
                fix = "correct the YAML there" if mark else "write the recipe as a mapping of config keys (model:, target:, ...)"
                raise MdbuildError(f"cannot parse recipe{where}: {problem}", str(path), fix) from exc
            # Another recipe's typo does not block this build.
            print(f"warning: {path}: cannot parse recipe{where} ({problem}); skipped", file=sys.stderr)
            continue
        if name in wanted:
            _check_bools("", OmegaConf.to_container(node, resolve=False))
        store.store(group="recipe", name=name, node=node, package="_global_")


def _task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    multirun = _is_multirun(hydra_cfg)
    recipe = hydra_cfg.runtime.choices.get("recipe").removesuffix(".yaml")  # Hydra finds recipe=NAME.yaml too
    run_dir, workdir = Path(hydra_cfg.runtime.output_dir).resolve(), Path(hydra_cfg.runtime.cwd).resolve()
    if multirun:  # a launcher's worker (Ray) runs in a directory of its own: the job's results go to the sweep's
        run_dir = workdir / str(hydra_cfg.sweep.dir) / str(hydra_cfg.sweep.subdir)
    spec = None
    try:
        from builder.auto import AUTO, Launch, run_auto  # import the plan and its steps (numpy): not for --help
        from builder.build import run

        spec = _spec(cfg, hydra_cfg, recipe, workdir)
        if spec.target["backend"] == AUTO:
            directories = [Path(source.path) for source in hydra_cfg.runtime.config_sources if source.schema == "file"]
            launch = Launch(_raw_overrides(hydra_cfg), _raw_overrides(hydra_cfg, "hydra"), _config_dir_flags(sys.argv[1:]),
                            [path if path.is_absolute() else workdir / path for path in directories])
            artifact = run_auto(spec, launch, run_dir, Console())
        else:
            artifact = run(spec, Console(), run_dir)
    except BaseException as exc:
        if not multirun or not isinstance(exc, Exception) or _wants_traceback():
            if not multirun:
                _discard_run_dir(run_dir, workdir)
            raise  # main prints it as one line
        # A sweep's job: reported and recorded here; the sweep goes on, and fails at its end (SweepSummary).
        target = spec.target if spec else {"name": hydra_cfg.runtime.choices.get("target")}
        overrides = _raw_overrides(hydra_cfg)
        write_result(run_dir, job_result(recipe, target, None, run_dir, _message(exc), overrides))
        if (hydra_cfg.callbacks.get("sweep_summary") or {}).get("candidates"):  # target=auto's sweep: a candidate not chosen
            print(f"note: candidate {target.get('name')} failed: {_message(exc)}", file=sys.stderr, flush=True)
        else:
            print(f"error: job {hydra_cfg.job.num} ({' '.join(overrides)}): {_message(exc)}", file=sys.stderr, flush=True)
        return
    if multirun and artifact is not None:
        write_result(run_dir, job_result(recipe, spec.target, artifact, run_dir, None, _raw_overrides(hydra_cfg)))


def _config_dir_flags(argv: list[str]) -> list[str]:
    """The command line's --config-dir/-cd flags (config groups of the user's own, e.g. targets)."""
    flags = []
    for index, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and index + 1 < len(argv):
            flags += [arg, argv[index + 1]]
        elif arg.startswith("--config-dir="):
            flags.append(arg)
    return flags


def _spec(cfg, hydra_cfg, recipe: str, workdir: Path) -> BuildSpec:
    """The job's config, checked (bools, unknown keys, backend options), as a BuildSpec."""
    from omegaconf import OmegaConf

    _strict_bools(_raw_overrides(hydra_cfg))
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    _reject_unknown_keys(config)
    backend_options(config["target"])
    if recipe not in _RECIPES:  # a launcher's worker process (joblib, Ray): main() did not run there
        _RECIPES.update(recipe_files(workdir))
    path, packaged = _RECIPES[recipe]
    return BuildSpec(recipe=recipe, recipe_path=path, packaged_recipe=packaged, config=config, workdir=workdir)


def _raw_overrides(hydra_cfg, kind: str = "task") -> list[str]:
    """The job's override strings as written (iterating Hydra's ListConfig would resolve `${...}` in them):
    the task's, or Hydra's own (hydra/launcher=..., hydra.sweep.dir=...)."""
    from omegaconf import OmegaConf

    return list(OmegaConf.to_container(hydra_cfg.overrides[kind], resolve=False))


def _discard_run_dir(run_dir: Path, workdir: Path) -> None:
    """A build that failed before writing anything of its own (a failed verification keeps its report
    there) leaves no run directory behind, nor the empty folders above it inside the working directory.
    Only a run directory inside the working directory that this process made (`hydra.run.dir` may name
    the working directory itself, or a directory that was there before)."""
    try:
        made_now = run_dir.stat().st_mtime >= _STARTED - 2  # its .hydra was its first entry
        contents = {child.name for child in run_dir.iterdir()}
    except OSError:
        return
    if contents - {".hydra"} or not made_now or run_dir == workdir or not run_dir.is_relative_to(workdir) \
            or workdir.is_relative_to(run_dir):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents:
        if parent == workdir or not parent.is_relative_to(workdir):
            break
        try:
            parent.rmdir()  # only when empty: another build's run directory keeps it
        except OSError:
            break


_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "1", "0"}


def _strict_bools(overrides: list[str]) -> None:
    """The command line's overrides of true/false keys (see _check_bools)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_delete():
            _check_bools(override.key_or_group, override.value())


def _check_bools(key: str, value: Any) -> None:
    """OmegaConf reads any integer as a bool (cache.enabled=2 is true): a true/false key takes a bool or a
    word that means one. `value` may be a section (a recipe, `cache={enabled: 2}`)."""
    if isinstance(value, dict):
        for name, item in value.items():
            _check_bools(f"{key}.{name}" if key else str(name), item)
        return
    parent, _, name = key.rpartition(".")
    schema = section_schema(parent)
    kinds = {f.name: f.type for f in dataclasses.fields(schema)} if schema is not None else {}
    if kinds.get(name) not in ("bool", bool) or value is None or isinstance(value, bool):
        return
    if str(value).strip().lower() not in _BOOL_WORDS and not str(value).startswith("${"):
        raise MdbuildError(f"{value!r} is not true or false", key, "give true or false")


def _is_multirun(hydra_cfg) -> bool:
    from hydra.types import RunMode

    return hydra_cfg.mode == RunMode.MULTIRUN


def _wants_traceback() -> bool:
    return os.environ.get("MDBUILD_TRACEBACK") == "1" or "traceback=true" in sys.argv[1:]


def _message(exc: BaseException) -> str:
    message = describe_error(exc)
    trace = "MDBUILD_TRACEBACK=1" if sys.argv[1:2] == ["cache"] else "traceback=true"  # cache commands are not Hydra's
    return message if _is_user_error(exc) else message + f" [{trace} shows the full trace]"


def _reject_unknown_keys(config: dict[str, Any], prefix: str = "") -> None:
    """`+key=value` can add keys the schema does not declare; a typo must not be ignored silently."""
    declared = declared_keys(prefix.rstrip("."))
    for key, value in config.items():
        if key not in declared:
            section = f" of {prefix.rstrip('.')}" if prefix else ""
            raise MdbuildError("no such key", f"{prefix}{key}", f"valid keys{section}: {', '.join(declared)}")
        if isinstance(value, dict) and section_schema(f"{prefix}{key}") is not None:
            _reject_unknown_keys(value, f"{prefix}{key}.")


def _terminate(_signum, _frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the build at once (inside native code too)
    raise Terminated()


def main() -> None:
    argv = sys.argv[1:]
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if argv[:1] == ["cache"]:  # mdbuild cache ls|du|gc|verify|push|pull: about the cache, not a recipe
            from builder import cache_cli

            sys.exit(cache_cli.main(argv[1:]))
        if not any(arg.lstrip("+").startswith("recipe=") for arg in argv) and not _asks_help(argv):
            sys.argv.append(f"+recipe={DEFAULT_RECIPE}")
        _register_configs(Path.cwd(), sys.argv[1:])
        os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us; we print them as one line
        import hydra

        with _without_hydra_job_banner():
            hydra.main(version_base="1.3", config_path=str(resource_dir("conf")), config_name="config")(_task)()
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"error: {'terminated' if terminated else 'interrupted'}; nothing half-written was kept", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure ends here, as one line
        if _wants_traceback():
            raise
        print(f"error: {_message(exc)}", file=sys.stderr)
        sys.exit(1)


class _DropLines:
    """A stderr that drops Hydra's "Error executing job with overrides" banner: we print the error."""

    def __init__(self, stream, prefix: str):
        self._stream, self._prefix = stream, prefix

    def write(self, text: str) -> int:
        return len(text) if text.startswith(self._prefix) else self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextmanager
def _without_hydra_job_banner() -> Iterator[None]:
    original = sys.stderr
    sys.stderr = _DropLines(original, "Error executing job with overrides")
    try:
        yield
    finally:
        sys.stderr = original


def _asks_help(argv: list[str]) -> bool:
    return any(arg in ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version") or
               arg.startswith(("--info=", "--cfg=")) for arg in argv)


def describe_error(exc: BaseException) -> str:
    """One line for any failure: our own errors as they are, Hydra's and OmegaConf's reworded."""
    chain = _chain(exc)
    for item in chain:
        if isinstance(item, MdbuildError):
            return item.one_line()
    text = "\n".join(str(item) for item in chain)
    missing = re.search(r"Could not find '([^'/]+)/([^']*)'", text)
    if missing:
        group, option = missing.groups()
        choices = re.findall(r"^\t(\S+)$", text, re.MULTILINE)
        if group == "recipe":
            choices = sorted(_RECIPES)
            return (f"recipe: no recipe named '{option}' (fix: choose one of: {', '.join(choices)}; "
                    f"searched ./recipes and the recipes shipped with mdbuild)")
        return f"{group}: no option '{option}' (fix: choose one of: {', '.join(choices)})"
    full_key = re.search(r"full_key: (\S+)", text)
    unknown = re.search(r"Key '([^']+)' not in '([^']+)'", text)
    if unknown and full_key:
        key = full_key.group(1)
        parent = key.rpartition(".")[0]
        valid = declared_keys(parent) or _option_keys(unknown.group(2))
        hint = f" (fix: valid keys of {parent or 'the config'}: {', '.join(valid)})" if valid else ""
        return f"{key}: no such key{hint}"
    absent = re.search(r"Key '([^']+)' is not in struct", text)
    if absent and full_key:  # a new key of a free-form section (kwargs, target.options.profiles)
        key = full_key.group(1)
        value = next((arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith(f"{key}=")), "VALUE")
        return f"{key}: not in the config yet (fix: add it with +{key}={value})"
    appended = re.search(r"Could not append to config. An item is already at '([^']+)'", text)
    if appended:
        key = appended.group(1)
        return f"{key}: already in the config (fix: set it without the +, as {key}=VALUE)"
    if "No match in the defaults list" in text:
        override = re.search(r"Could not override '([^']+)'", text)
        name = override.group(1) if override else "the option"
        value = next((arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith(f"{name}=")), "VALUE")
        return f"{name}: not in the defaults list (fix: add it with +{name}={value})"
    from omegaconf.errors import OmegaConfBaseException

    deepest = [item for item in chain if isinstance(item, OmegaConfBaseException)]
    first = first_line(deepest[0] if deepest else chain[0])
    fix = next((f" (fix: {fix})" for pattern, fix in _TYPE_FIXES if re.search(pattern, first)), "")
    if full_key:
        return f"{_overridden(full_key.group(1))}: {first}{fix}"
    section = re.search(r"is not a subclass of (\w+)", first)  # a recipe's `target: NAME` names no key
    owner = next((f.name for f in dataclasses.fields(BuildConfig) if section
                  and getattr(f.default_factory, "__name__", None) == section.group(1)), None)
    return f"{owner}: {first}{fix}" if owner else first + fix


# OmegaConf's words for a value of the wrong type, and what to give instead.
_TYPE_FIXES = (
    (r"converted to Integer", "give a whole number"),
    (r"converted to Float", "give a number"),
    (r"not a valid bool", "give true or false"),
    (r"is not a ListConfig, list or tuple", "give a list, e.g. [a, b]"),
    (r"Cannot assign \w+ to Dict|Cannot merge DictConfig with ListConfig", "give a mapping, e.g. {name: value}"),
    (r"Missing mandatory value", "set it in the recipe or on the command line"),
    (r"is not Optional", "give a value: null is not allowed here"),
    (r"Interpolation key '[^']*' not found", "interpolate a key the config has, e.g. ${model.dims.batch}"),
    (r"Config group override must be a string", "choose one of the group's options (mdbuild --help lists them)"),
    (r"is not a subclass of TargetConfig", "choose the target by name: target=NAME on the command line, or "
                                            "`defaults: [{override /target: NAME}]` in the recipe"),
    (r"is not a subclass of \w+Config", "set the section's keys (SECTION.KEY=value), not the section itself"),
    (r"is not a subclass of Tolerance", f"the levels are {', '.join(LOSS_ORDER)}: set limits of those, e.g. "
                                        "verify.tolerances.int8.min_cosine=0.98"),
)


def _overridden(key: str) -> str:
    """OmegaConf names a key inside a dict of sections by its last part alone (`fp99`): the full key
    of the override that set it."""
    if "." in key or key in declared_keys(""):
        return key
    for arg in sys.argv[1:]:
        parts = arg.lstrip("+~").split("=", 1)[0].split(".")
        if key in parts[1:]:
            return ".".join(parts[: parts.index(key, 1) + 1])
    return key


def _option_keys(schema: str) -> list[str]:
    """The keys of a section inside a free-form one (a backend's target.options, a level of
    verify.tolerances), by the name of its schema."""
    found = [kind for kind in (Tolerance, *(backend.options for backend in all_backends())) if kind.__name__ == schema]
    return [f.name for f in dataclasses.fields(found[0])] if found else []


def _is_user_error(exc: BaseException) -> bool:
    """Our own errors and config composition errors are the user's to fix; others are bugs."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return any(isinstance(item, (MdbuildError, HydraException, OmegaConfBaseException)) for item in _chain(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    chain = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt in chain:
            break
        chain.append(nxt)
    return chain
