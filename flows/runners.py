"""Task runners for the batch flow: ``local`` threads, a Dask cluster, or a Ray cluster.

``make_task_runner("local" | "dask" | "ray", ...)`` returns a Prefect task runner; one *study* is
one task, so ``workers`` studies run at once.

Dask (``pip install prefect-dask``)
    * no ``address``: a temporary ``distributed.LocalCluster`` with ``workers`` worker
      *processes* of one thread each (the CPU projectors and torch use ``threads`` each — see
      ``medvol.flows.tasks.set_threads``), started with the flow and closed after it;
    * ``address="tcp://scheduler:8786"``: an existing cluster, e.g. started with
      ``dask scheduler`` on one host and ``dask worker tcp://scheduler:8786 --nthreads 1
      --resources GPU=1`` on every GPU host (``--resources`` is what lets a task ask for a GPU;
      ``dask-cuda``'s ``LocalCUDACluster`` does not declare one by itself). Workers need medvol
      installed and the inputs/outputs on a shared filesystem.
    * GPUs per study: :func:`gpu_request` wraps the submission in
      ``dask.annotate(resources={"GPU": n})``; a temporary LocalCluster then declares
      ``resources={"GPU": gpus}`` per worker.

Ray (``pip install prefect-ray``; optional)
    ``address="ray://head:10001"`` or ``"auto"`` (a running ``ray start --head``); no address
    starts a local Ray. GPUs per study via ``prefect_ray.context.remote_options(num_gpus=n)``;
    Ray sets ``CUDA_VISIBLE_DEVICES`` for each task.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from medvol.errors import BackendError, InputError

__all__ = ["RUNNERS", "make_task_runner", "gpu_request"]

RUNNERS = ("local", "dask", "ray")


def make_task_runner(runner: str = "local", *, address: str | None = None,
                     workers: int | None = None, threads_per_worker: int = 1,
                     gpus_per_worker: float = 0):
    """A Prefect task runner.

    Parameters
    ----------
    runner : ``"local"`` (``ThreadPoolTaskRunner``, ``workers`` threads; 1 = sequential),
        ``"dask"`` (``prefect_dask.DaskTaskRunner``) or ``"ray"`` (``prefect_ray.RayTaskRunner``).
    address : scheduler address of an existing cluster (Dask ``tcp://host:8786``, Ray
        ``ray://host:10001`` or ``auto``); None starts a temporary local cluster.
    workers : worker processes of a temporary cluster (default 2) / threads of ``local``.
    threads_per_worker : Dask threads per worker process (default 1: one study at a time).
    gpus_per_worker : GPUs each temporary Dask worker declares as the ``GPU`` resource.
    """
    if runner not in RUNNERS:
        raise InputError(f"unknown runner {runner!r}", hint=f"use one of {', '.join(RUNNERS)}")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if runner == "local":
        if address:
            raise InputError("--scheduler needs --runner dask or ray")
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers or 1)
    if runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise BackendError("--runner dask needs prefect-dask",
                               hint="pip install prefect-dask (or prefect[dask])") from None
        if address:
            return DaskTaskRunner(address=address)
        kwargs: dict[str, Any] = {"n_workers": workers or 2,
                                  "threads_per_worker": threads_per_worker,
                                  "processes": True, "dashboard_address": None}
        if gpus_per_worker:
            kwargs["resources"] = {"GPU": gpus_per_worker}
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise BackendError("--runner ray needs prefect-ray",
                           hint="pip install prefect-ray (or prefect[ray]); it pulls the ray wheel"
                           ) from None
    init: dict[str, Any] = {}
    if not address and workers:
        init["num_cpus"] = workers
    return RayTaskRunner(address=address, init_kwargs=init or None)


@contextlib.contextmanager
def gpu_request(runner: str, gpus: float = 0) -> Iterator[None]:
    """Context in which submitted tasks ask their runner for ``gpus`` GPUs each.

    Dask: ``dask.annotate(resources={"GPU": gpus})`` (the workers must declare the resource).
    Ray: ``prefect_ray.context.remote_options(num_gpus=gpus)``. Local: nothing (pin devices with
    ``CUDA_VISIBLE_DEVICES`` yourself).
    """
    if not gpus or runner == "local":
        yield
        return
    if runner == "dask":
        import dask

        with dask.annotate(resources={"GPU": gpus}):
            yield
        return
    from prefect_ray.context import remote_options

    with remote_options(num_gpus=gpus):
        yield
