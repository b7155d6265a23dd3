"""`hydra/launcher=ray_cluster`: hydra-ray-launcher's launcher with per-job Ray resources. Each job asks
for what its target needs (a full-TensorRT engine build asks for a GPU, so a mixed cluster routes it to
a GPU node) plus `hydra.launcher.resources.<target>`; a job the cluster cannot place fails the sweep
before it starts instead of waiting forever; runtime_env variables left empty are not sent (they would
override the nodes' own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from builder.errors import MdbuildError

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
except ImportError:  # the `cluster` extra is not installed: no launcher to offer
    RayLauncher = None

# Ray's options for a task, and the names of the resources they ask for in ray.cluster_resources().
_RESOURCE_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}


def asked(remote: dict[str, Any], where: str) -> dict[str, float]:
    """The node resources a task with these ray.remote options asks for (`where`: the key they came from)."""
    wanted = {_RESOURCE_NAMES[key]: value for key, value in remote.items() if key in _RESOURCE_NAMES and value}
    wanted.update((remote.get("resources") or {}))
    for name, value in wanted.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise MdbuildError(f"{value!r} is not an amount of {name}", where,
                               "give a number (memory in bytes, e.g. 8000000000; CPUs and GPUs as counts)")
    return {name: float(value) for name, value in wanted.items()}


def job_remote(base: dict[str, Any], target: dict[str, Any], per_target: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """ray.remote options of one job: the launcher's, its backend's needs, then the user's for its target; and
    the key to name when the cluster cannot give them."""
    from backends import discovered

    backend = discovered().get(target.get("backend"))
    needs = getattr(backend, "resources", None)
    own = needs(target) if needs else {}
    mine = per_target.get(target.get("name")) or {}
    where = (f"hydra.launcher.resources.{target.get('name')}" if mine else
             "target.options" if own else "hydra.launcher.ray.remote")
    return {**base, **own, **mine}, where


def placeable(wanted: dict[str, float], nodes: list[dict[str, Any]]) -> bool:
    """Whether one alive node has all of it (a task runs on one node: a cluster's sum is not enough)."""
    return any(node.get("Alive") and all((node.get("Resources") or {}).get(name, 0) >= amount
                                         for name, amount in wanted.items()) for node in nodes)


def without_empty_env(init: dict[str, Any]) -> dict[str, Any]:
    runtime_env = dict(init.get("runtime_env") or {})
    if "env_vars" in runtime_env:
        runtime_env["env_vars"] = {name: value for name, value in (runtime_env["env_vars"] or {}).items() if value not in ("", None)}
    return {**init, **({"runtime_env": runtime_env} if runtime_env else {})}


if RayLauncher is not None:

    class RayClusterLauncher(RayLauncher):
        def __init__(self, ray: DictConfig, resources: DictConfig | None = None) -> None:
            super().__init__(ray)
            self.resources = OmegaConf.to_container(resources, resolve=True) if resources else {}

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
            import ray
            from hydra.core.singleton import Singleton
            from hydra.core.utils import configure_log, setup_globals
            from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray, start_ray

            setup_globals()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
            start_ray(OmegaConf.create(without_empty_env(OmegaConf.to_container(self.ray_cfg.init, resolve=True))))
            base = OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}
            nodes = ray.nodes()
            planned = []
            for idx, overrides in enumerate(job_overrides, initial_job_idx):  # every job checked before any starts
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                target = OmegaConf.to_container(sweep_config.target, resolve=True)
                remote, where = job_remote(base, target, self.resources)
                wanted = asked(remote, where)
                if not placeable(wanted, nodes):
                    largest = max((node.get("Resources") or {} for node in nodes if node.get("Alive")),
                                  key=lambda have: [have.get(name, 0) for name in wanted], default={})
                    wants = ", ".join(f"{amount:g} {name}" for name, amount in wanted.items())
                    has = ", ".join(f"{largest.get(name, 0):g} {name}" for name in wanted)
                    raise MdbuildError(f"job {idx} (target {target.get('name')}) asks Ray for {wants} on one node; the "
                                       f"cluster's best node has {has}", where,
                                       "ask for what one node has, or add a node that has it (a full-TensorRT build "
                                       "needs a GPU: target.options.flavor=auto builds without one)")
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = f"job_id_for_{idx}"
                    sweep_config.hydra.job.num = idx
                planned.append((remote, sweep_config))
            jobs = [launch_job_on_ray(self.hydra_context, OmegaConf.create(remote), sweep_config, self.task_function,
                                      Singleton.get_state()) for remote, sweep_config in planned]
            return [ray.get(job) for job in jobs]
