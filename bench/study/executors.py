"""Where a study's cells run: one after another in this process, or as Ray tasks on a cluster."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

from bench.settings import RaySettings
from bench.study.config import study_settings


class SequentialExecutor:
    """Runs cells one after another in this process. Any object with the same ``map`` works:
    ``map(fn, cells)`` must yield ``fn(cell)`` for every cell, in any order; ``parallel = True``
    says cells run concurrently (each then loads the data itself, and per-layer timing is skipped)."""

    parallel = False

    def map(self, fn: Callable[[dict], tuple], cells: Iterable[dict]) -> Iterator[tuple]:
        for cell in cells:
            yield fn(cell)


def make_executor(config: dict):
    """Return the executor a study config names (``executor``, and the ``ray`` section for Ray).

    Raises:
        ExecutorError: ``executor: ray`` without Ray installed.
        StudyConfigError: a bad ``executor`` or ``ray`` value.
    """
    study = study_settings(config)
    if study.executor == "sequential":
        return SequentialExecutor()
    ray = RaySettings.from_mapping(config["ray"])
    return RayExecutor(ray.address, ray.cpus_per_cell, num_cpus=ray.num_cpus)


class ExecutorError(RuntimeError):
    """An executor could not start, or lost cells (the message names them; a rerun resumes)."""


def _run_with_threads(fn, cell: dict, threads: int):
    # A Ray worker process is reused across tasks: pin torch to the CPUs this task was granted.
    torch.set_num_threads(max(1, int(threads)))
    return fn(cell)


class RayExecutor:
    """Runs cells as Ray tasks (https://docs.ray.io): on a local cluster started here when ``address`` is
    None, or on the cluster at ``address`` (``HOST:PORT`` or ``auto``).

    Each task asks for ``cpus_per_cell`` CPUs (the cell's ``threads`` when set) and one GPU when its
    training device is ``cuda`` (or ``auto`` on a cluster that has GPUs). Workers compute
    :func:`compute_and_store`, which writes each record atomically into the results folder, so that folder
    (and the data) must be a path every node sees. A task whose worker dies is retried
    (``max_retries``); a cell that still fails is reported after the others finish.
    """

    parallel = True

    def __init__(self, address: str | None = None, cpus_per_cell: int = 1, max_retries: int = 2, num_cpus: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ExecutorError('the ray executor needs Ray: pip install -e ".[ray]" (or pip install ray)') from None
        self.address, self.cpus_per_cell, self.max_retries, self.num_cpus = (
            address,
            int(cpus_per_cell),
            int(max_retries),
            num_cpus,
        )

    def _resources(self, cell: dict, cluster: dict) -> dict:
        cpus = int(cell.get("threads") or self.cpus_per_cell)
        device = str(cell.get("train", {}).get("device", "auto"))
        gpus = 1 if device.startswith("cuda") or (device == "auto" and cluster.get("GPU", 0) > 0) else 0
        return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": self.max_retries}

    def map(self, fn: Callable[[dict], tuple], cells: Iterable[dict]) -> Iterator[tuple]:
        import ray

        cells = list(cells)
        if not cells:
            return
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    num_cpus=self.num_cpus if self.address is None else None,
                    include_dashboard=False,
                    log_to_driver=True,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ExecutorError(f"could not start or join a Ray cluster (address {self.address or 'local'}): {exc}") from None
        cluster = ray.cluster_resources()
        task = ray.remote(_run_with_threads)
        function = ray.put(fn)
        refs = {}
        for cell in cells:
            resources = self._resources(cell, cluster)
            refs[task.options(**resources).remote(function, cell, resources["num_cpus"])] = cell
        failed = []
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            cell = refs.pop(ready[0])
            try:
                yield ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                failed.append(f"{cell['model']} {cell.get('variant', '')} seed {cell['seed']}: {str(exc).splitlines()[0][:200]}")
        if failed:
            raise ExecutorError(
                f"{len(failed)} cells failed on the Ray cluster ({'; '.join(failed)}); finished cells are saved, rerun to resume"
            )
