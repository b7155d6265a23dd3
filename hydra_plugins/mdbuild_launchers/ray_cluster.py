"""`hydra/launcher=ray_cluster`: hydra-ray-launcher's launcher with per-job Ray resources. Each job asks
for what its target needs (a full-TensorRT engine build asks for a GPU, so a mixed cluster routes it to
a GPU node) plus `hydra.launcher.resources.<target>`; a job the cluster cannot place fails the sweep
before it starts instead of waiting forever; runtime_env variables left empty are not sent (they would
override the nodes' own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
except ImportError:  # the `cluster` extra is not installed: no launcher to offer
    RayLauncher = None

# Ray's options for a task, and the names of the resources they ask for in ray.cluster_resources().
_RESOURCE_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}


def asked(remote: dict[str, Any]) -> dict[str, float]:
    """The cluster resources a task with these ray.remote options asks for."""
    wanted = {_RESOURCE_NAMES[key]: float(value) for key, value in remote.items() if key in _RESOURCE_NAMES and value}
    wanted.update({name: float(value) for name, value in (remote.get("resources") or {}).items()})
    return wanted


def job_remote(base: dict[str, Any], target: dict[str, Any], per_target: dict[str, Any]) -> dict[str, Any]:
    """ray.remote options of one job: the launcher's, its backend's needs, then the user's for its target."""
    from backends import discovered

    backend = discovered().get(target.get("backend"))
    needs = getattr(backend, "resources", None)
    return {**base, **(needs(target) if needs else {}), **(per_target.get(target.get("name")) or {})}


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

            from builder.errors import MdbuildError

            setup_globals()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
            start_ray(OmegaConf.create(without_empty_env(OmegaConf.to_container(self.ray_cfg.init, resolve=True))))
            base = OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}
            available = ray.cluster_resources()
            jobs = []
            for idx, overrides in enumerate(job_overrides, initial_job_idx):
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                target = OmegaConf.to_container(sweep_config.target, resolve=True)
                remote = job_remote(base, target, self.resources)
                short = {name: amount for name, amount in asked(remote).items() if available.get(name, 0) < amount}
                if short:
                    wants = ", ".join(f"{amount:g} {name}" for name, amount in short.items())
                    has = ", ".join(f"{available.get(name, 0):g} {name}" for name in short)
                    raise MdbuildError(f"job {idx} (target {target.get('name')}) asks Ray for {wants}; the cluster has {has}",
                                       "hydra.launcher.resources", "add a node that has them, or build that target "
                                       "elsewhere (a full-TensorRT build needs a GPU; target.options.flavor=auto builds "
                                       "an RTX engine and a deferred build without one)")
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = f"job_id_for_{idx}"
                    sweep_config.hydra.job.num = idx
                jobs.append(launch_job_on_ray(self.hydra_context, OmegaConf.create(remote), sweep_config,
                                              self.task_function, Singleton.get_state()))
            return [ray.get(job) for job in jobs]
