"""Sweeps: per-image analyses over many images on Dask distributed, resumable, stored as Parquet.

One task is one (model, image). :func:`plan_sweep` validates everything on the client before
any work (models, SHA-256, units, image spec, analyses) and lists the tasks; :func:`run_sweep`
runs the tasks that are not done yet -- on a new ``LocalCluster`` (processes, one thread each),
on an existing cluster (scheduler address or scheduler file), or in a plain loop in this
process (``workers=0``) -- and writes each task's rows atomically as it completes
(:mod:`linstab.sweep.store`). Workers rebuild models by registry name (or factory) and verify
the SHA-256 (:mod:`linstab.sweep.tasks`); nothing but JSON-able data is sent to them.

Example::

    from linstab.sweep import Recipe, plan_sweep, run_sweep
    plan = plan_sweep(["resnet56-akamaster"], "jpeg:0-999", Recipe(analyses=("bands", "propagation")))
    run_sweep("out/sweep", plan, workers=2)          # run again to resume; same rows, nothing lost

Guarantees: a task is written once (one Parquet file per task, renamed into place), so a sweep
killed at any point and started again with the same plan runs only the missing tasks; a worker
that dies is replaced by Dask and its tasks are rerun (results are only ever written by the
client, by task name, so a retried task cannot duplicate rows); a task that fails is written as
an error row and does not stop the others; a directory holding another recipe is refused.
"""

from .engine import SweepPlan, SweepResult, SweepWarning, local_cluster, plan_sweep, run_sweep
from .store import RecipeMismatch, read_manifest, read_rows
from .summary import summarize_sweep, sweep_statistics
from .tasks import (
    ANALYSES,
    COLUMNS,
    ImageRef,
    ImageSource,
    ModelSpec,
    Recipe,
    SweepImages,
    factory_model,
    get_network,
    load_image,
    parse_images,
    registry_model,
    run_task,
    state_sha256,
)

__all__ = [
    "ANALYSES",
    "COLUMNS",
    "ImageRef",
    "SweepImages",
    "ImageSource",
    "ModelSpec",
    "Recipe",
    "RecipeMismatch",
    "SweepPlan",
    "SweepResult",
    "SweepWarning",
    "factory_model",
    "get_network",
    "load_image",
    "local_cluster",
    "parse_images",
    "plan_sweep",
    "read_manifest",
    "read_rows",
    "registry_model",
    "run_sweep",
    "run_task",
    "state_sha256",
    "summarize_sweep",
    "sweep_statistics",
]
