"""The sweep engine: plan (validate everything on the client) and run the tasks on Dask or in a loop.

See the package docstring (:mod:`linstab.sweep`) for the guarantees.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__
from ..analyses.attacks import ATTACK_REVISION
from ..analyses.propagation import resolve_units
from ..data.refs import image_shape
from ..io.validate import check_int
from ..models.blocks import CifarResNet
from ..models.registry import REGISTRY, is_model_file, trained_model_spec
from ..network.view import Network
from . import store
from .tasks import (
    COLUMNS,
    ModelSpec,
    Recipe,
    SweepImages,
    error_rows,
    get_network,
    parse_images,
    registry_model,
    run_task,
    task_id,
)


@dataclass
class SweepPlan:
    """A validated sweep: recipe, models, images and the tasks (one per model and image).

    Attributes:
        recipe: the per-task analyses and parameters.
        models: the models (with the SHA-256 workers must find).
        images: the image source and the selected images.
        units: per model, the unit addresses analysed.
        tasks: JSON-able task payloads for :func:`linstab.sweep.tasks.run_task` (each also has
            ``"file"``, its Parquet file name).
    """

    recipe: Recipe
    models: tuple[ModelSpec, ...]
    images: SweepImages
    units: dict[str, list[str]]
    tasks: list[dict] = field(repr=False)

    def recipe_dict(self) -> dict:
        """The full recipe recorded in (and compared with) the manifest.

        When the recipe attacks (the ``"propagation"`` analysis) it records the attacks'
        revision too, so that a resumed sweep never mixes the results of two revisions (and a
        sweep without attacks stays resumable across attack revisions).
        """
        d = {
            **self.recipe.to_dict(),
            "models": [m.to_dict() for m in self.models],
            "image_source": self.images.source.to_dict(),
        }
        if "propagation" in self.recipe.analyses and self.recipe.attacks:
            d["attack_revision"] = ATTACK_REVISION
        return d


class SweepWarning(UserWarning):
    """Something a sweep repaired on its own (e.g. an unreadable task file moved aside and rerun)."""


@dataclass
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes:
        out: the sweep directory.
        total: tasks in the plan.
        done_before: tasks found already written (skipped).
        ran: tasks run and written by this call.
        errors: tasks of this call with at least one error row.
        seconds: wall time of this call.
        interrupted: always ``False`` in a returned result: a run stopped early
            (``KeyboardInterrupt``, ``SystemExit`` from SIGTERM) re-raises after recording
            ``interrupted: true`` and ``stopped`` (no ``finished``) in its manifest run record.
    """

    out: Path
    total: int
    done_before: int
    ran: int
    errors: int
    seconds: float
    interrupted: bool = False


def _structure(spec: ModelSpec):
    """A network with the model's structure, for checking units (no weights needed)."""
    if spec.factory is not None:
        return get_network(spec, cache=False)

    reg = trained_model_spec(spec.registry) if is_model_file(spec.registry) else REGISTRY[spec.registry]
    model = CifarResNet(reg.depth, reg.shortcut).eval()
    return Network(model, reg.mean, reg.std, name=spec.name)


def plan_sweep(
    models,
    images: str | SweepImages,
    recipe: Recipe | None = None,
    *,
    check_weights: bool = True,
    **recipe_kwargs,
) -> SweepPlan:
    """Validate a sweep and list its tasks; no analysis runs here.

    Args:
        models: model names (registry) and/or :class:`ModelSpec` (e.g. from
            :func:`factory_model`); one or more, distinct names.
        images: an image spec (see :func:`linstab.data.refs.image_refs`) or a selection.
        recipe: the analyses and parameters (default ``Recipe(**recipe_kwargs)``).
        check_weights: find (and checksum) registry weights on this machine; turn off only when
            the workers have weights this machine lacks (then the registry SHA-256 is used).
        **recipe_kwargs: fields of :class:`Recipe` when ``recipe`` is not given.

    Raises:
        ValueError: unknown model, analysis or attack, bad image or unit spec, empty selection,
            images of another ``(C, H, W)`` than a model takes (read from the files' headers).
        FileNotFoundError: weights (with ``check_weights``) or the JPEG set not found.
    """
    if recipe is None:
        recipe = Recipe(**recipe_kwargs)
    elif recipe_kwargs:
        raise TypeError("give either a Recipe or its keyword arguments, not both")
    if isinstance(models, str | ModelSpec):
        models = [models]
    specs = [m if isinstance(m, ModelSpec) else registry_model(str(m), resolve=check_weights) for m in models]
    if not specs:
        raise ValueError("no model given")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be distinct, got {names}")

    units, shapes = {}, {}
    for s in specs:
        net = _structure(s)
        try:
            addr = resolve_units(net, recipe.units)
        except ValueError as exc:
            raise ValueError(f"units {recipe.units!r} of {s.name}: {exc}") from None
        if not addr:
            raise ValueError(f"unit spec {recipe.units!r} selects no unit of {s.name}")
        units[s.name] = addr
        shapes[s.name] = tuple(net.input_shape)
    sel = images if isinstance(images, SweepImages) else parse_images(images)
    _check_image_shapes(sel, shapes)
    rec = recipe.to_dict()
    tasks = []
    for s in specs:
        for ref in sel.refs:
            tid = task_id(s.name, ref.id)
            tasks.append(
                {
                    "task_id": tid,
                    "file": store.task_file_name(tid),
                    "model": s.to_dict(),
                    "image": ref.to_dict(),
                    "recipe": rec,
                }
            )
    files = [t["file"] for t in tasks]
    if len(set(files)) != len(files):  # pragma: no cover - ids are unique, names hashed
        raise ValueError("task file names collide")
    return SweepPlan(recipe, tuple(specs), sel, units, tasks)


def _check_image_shapes(sel: SweepImages, shapes: dict[str, tuple]) -> None:
    """Refuse images of another ``(C, H, W)`` than a model takes (read from headers), before any
    task runs: every task of such an image would be an error row. Images whose header cannot be
    read are left to their task (an error row naming the problem).
    """
    by_shape: dict[tuple, list[str]] = {}
    arrays: dict[str, tuple | None] = {}  # one header per array file
    for ref in sel.refs:
        if ref.kind == "array":
            shape = arrays[ref.path] if ref.path in arrays else arrays.setdefault(ref.path, image_shape(ref))
        else:
            shape = image_shape(ref)
        if shape is not None:
            by_shape.setdefault(shape, []).append(ref.id)
    for name, want in shapes.items():
        bad = {shape: ids for shape, ids in by_shape.items() if shape != want}
        if bad:
            n = sum(len(ids) for ids in bad.values())
            got = "; ".join(
                f"{' x '.join(map(str, shape))} ({len(ids)}, e.g. {ids[0]})"
                for shape, ids in list(bad.items())[:3]
            )
            raise ValueError(
                f"{name} takes images of shape {' x '.join(map(str, want))} (C x H x W); {n} of the "
                f"{len(sel.refs)} images of {sel.spec!r} are not: {got}"
            )


def _environment() -> dict:
    import numpy
    import pyarrow
    import torch

    env = {
        "linstab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import dask
        import distributed

        env.update(dask=dask.__version__, distributed=distributed.__version__)
    except ImportError:  # pragma: no cover - dependencies
        pass
    return env


def cores() -> int:
    """CPU cores available to this process (the default number of local workers)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def local_cluster(n_workers: int):
    """A ``distributed.LocalCluster`` of ``n_workers`` processes with one thread each.

    Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in worker processes
    (``distributed.nanny.pre-spawn-environ``); setting it disables glibc's dynamic mmap
    threshold, so every large temporary array becomes a fresh ``mmap`` that is page-faulted
    again. Here that made a ResNet-20 band-count task 1.6x slower (38.4 and 39.5 s against 22.8
    and 24.1 s in a plain process, machine shared), so it is not set for linstab's workers
    (unless this process's environment sets it). The workers' statistical profiler (a thread
    that samples the running task's stack every 10 ms, for a dashboard this cluster does not
    start) is switched off: on a machine with one worker per core it takes CPU from the tasks.
    """
    import dask
    from distributed import LocalCluster

    settings = {
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        "distributed.worker.profile.enabled": False,
    }
    with dask.config.set(settings):
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _connect(scheduler: str):
    from distributed import Client

    try:
        if Path(scheduler).expanduser().is_file():
            return Client(scheduler_file=str(Path(scheduler).expanduser()))
        return Client(scheduler)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"cannot connect to the Dask scheduler {scheduler!r}: {exc}") from exc


def _preflight(models: list[dict]) -> list[str]:
    """On a worker: load each model and verify its SHA-256; returns the problems."""
    problems = []
    for m in models:
        try:
            get_network(m)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{m['name']}: {type(exc).__name__}: {exc}")
    return problems


def _bar(total: int, done_before: int, progress: bool):
    from tqdm.auto import tqdm

    desc = "sweep" + (f" ({done_before} done before)" if done_before else "")
    return tqdm(total=total, desc=desc, unit="task", disable=not progress, smoothing=0.05)


def run_sweep(
    out: str | os.PathLike,
    plan: SweepPlan,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    threads: int = 1,
    progress: bool = True,
    retry_errors: bool = False,
    argv: list[str] | None = None,
    callback=None,
) -> SweepResult:
    """Run the tasks of a plan that are not written yet, writing each as it completes.

    Args:
        out: the sweep directory (created; an existing one must hold the same recipe).
        plan: from :func:`plan_sweep`.
        workers: ``None``: a ``LocalCluster`` with one single-threaded worker process per core;
            ``N > 0``: ``N`` such workers; ``0``: a plain loop in this process (no Dask).
        scheduler: ``tcp://host:8786`` or a scheduler file: use that cluster unchanged (its
            current workers are checked first: every model must load with the right SHA-256).
        client: an existing ``distributed.Client`` (used unchanged, not closed).
        threads: torch threads inside each task (default 1; workers have one thread each).
        progress: show a progress bar (rate and ETA) over the tasks.
        retry_errors: also rerun tasks whose file holds an error row.
        argv: the command line, recorded in the manifest.
        callback: ``callback(task, rows)`` on the client after each task is written.

    A task file that cannot be read (truncated, corrupt) or has another schema is moved to
    ``out/unreadable/`` with a :class:`SweepWarning` naming it, and its task runs again.

    A run stopped by ``KeyboardInterrupt`` (Ctrl-C) or ``SystemExit`` (the CLI turns SIGTERM into
    ``SystemExit(143)``) records ``interrupted: true`` and ``stopped`` instead of ``finished`` in
    its manifest record, then re-raises; a run that fails records ``error`` instead.

    Returns:
        a :class:`SweepResult`.

    Raises:
        RecipeMismatch: ``out`` holds another recipe.
        ValueError: a worker cannot load a model (with ``scheduler``), bad ``workers``/``threads``.
    """
    check_int("workers", workers, 0, optional=True)
    check_int("threads", threads)
    if sum(x is not None for x in (scheduler, client)) > 1 or (workers is not None and (scheduler or client)):
        raise ValueError("give at most one of workers, scheduler and client")
    kw = dict(threads=threads, progress=progress, retry_errors=retry_errors, argv=argv, callback=callback)
    if scheduler is None:
        return _run_sweep(Path(out), plan, workers, None, client, **kw)
    conn = _connect(scheduler)  # before any directory exists
    try:
        _check_workers(conn, plan)
        return _run_sweep(Path(out), plan, None, scheduler, conn, **kw)
    finally:
        conn.close()


def _check_workers(client, plan: SweepPlan) -> None:
    """Every current worker of an existing cluster must load every model with its SHA-256."""
    problems = client.run(_preflight, [m.to_dict() for m in plan.models])
    if not problems:
        raise ValueError("the Dask cluster has no workers")
    bad = [f"{w}: {p}" for w, ps in problems.items() for p in ps]
    if bad:
        raise ValueError("workers cannot load the models:\n  " + "\n  ".join(bad[:10]))


def _run_sweep(
    out: Path, plan, workers, scheduler, client, *, threads, progress, retry_errors, argv, callback
) -> SweepResult:
    t0 = time.perf_counter()
    src = plan.images.source
    header = {
        "linstab_version": _environment()["linstab"],
        "created": _now(),
        "image_source": src.to_dict(),
        "lossy": src.lossy,
        "models": {
            m.name: {"sha256": m.sha256, "registry": m.registry, "factory": m.factory} for m in plan.models
        },
        "row_key": ["model", "image", "analysis", "unit", "perturbation"],
        "columns": dict(COLUMNS),
    }
    manifest = store.open_sweep_dir(out, plan.recipe_dict(), header)
    store.clean_temporaries(out)
    planned = {t["file"] for t in plan.tasks}
    set_aside = store.set_aside_unreadable(out)
    for name, problem, dest in set_aside:
        again = "its task runs again" if name in planned else "its task runs again when its image is selected"
        warnings.warn(
            f"sweep task file {out / store.ROWS / name} {problem}: moved to {dest}; {again}",
            SweepWarning,
            stacklevel=3,
        )
    done = store.done_tasks(out)
    if retry_errors:
        done -= store.error_tasks(out)
    todo = [t for t in plan.tasks if t["file"] not in done]
    done_before = len(plan.tasks) - len(todo)
    if scheduler is not None:
        mode = "scheduler"
    elif client is not None:
        mode = "client"
    else:
        mode = "serial" if workers == 0 else "local-cluster"
        workers = cores() if workers is None else workers
    run = {
        "started": _now(),
        "argv": argv,
        "images": plan.images.spec,
        "selected": len(plan.tasks),
        "done_before": done_before,
        "to_run": len(todo),
        "mode": mode,
        "scheduler": scheduler,
        "workers": workers,
        "threads": threads,
        "retry_errors": retry_errors,
        "environment": _environment(),
    }
    if set_aside:
        run["set_aside"] = [{"file": n, "problem": why, "moved_to": str(dest)} for n, why, dest in set_aside]
    run_index = len(manifest.get("runs", []))
    store.append_run(out, run)
    ran = errors = 0
    interrupted = completed = False
    failure = None

    def record(task: dict, rows: list[dict]) -> None:
        nonlocal ran, errors
        store.write_task(out, task["task_id"], rows)
        ran += 1
        errors += any(r.get("status") == "error" for r in rows)
        if callback is not None:
            callback(task, rows)

    bar = _bar(len(todo), done_before, progress and bool(todo))
    try:
        if not todo:
            pass
        elif mode == "serial":
            for t in todo:
                record(t, run_task({**t, "threads": threads}))
                bar.update(1)
                bar.set_postfix(errors=errors, refresh=False)
        else:
            _run_dask(todo, workers, client, threads, record, bar, lambda: errors)
        completed = True
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C; SIGTERM through the CLI's SystemExit(143)
        interrupted = True
        raise
    except BaseException as exc:
        failure = f"{type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        bar.close()
        end = {"finished": _now()} if completed else {"stopped": _now()}
        if failure is not None:
            end["error"] = failure
        store.update_run(
            out,
            run_index,
            **end,
            ran=ran,
            errors=errors,
            interrupted=interrupted,
            seconds=round(time.perf_counter() - t0, 3),
        )
    return SweepResult(out, len(plan.tasks), done_before, ran, errors, time.perf_counter() - t0)


def _run_dask(todo, workers, client, threads, record, bar, n_errors) -> None:
    from distributed import Client, as_completed

    own_cluster = own_client = None
    try:
        if client is None:
            own_cluster = local_cluster(int(workers or cores()))
            client = own_client = Client(own_cluster)
        token = uuid.uuid4().hex[:8]
        futures = {}
        for t in todo:
            fut = client.submit(
                run_task, {**t, "threads": threads}, key=f"linstab-sweep-{t['file'][:-8]}-{token}", pure=False
            )
            futures[fut] = t
        try:
            for fut in as_completed(list(futures)):
                task = futures.pop(fut)
                try:
                    rows = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after repeated deaths
                    rows = error_rows(task, f"task lost on the cluster: {type(exc).__name__}: {exc}")
                fut.release()
                record(task, rows)
                bar.update(1)
                bar.set_postfix(errors=n_errors(), refresh=False)
        finally:
            if futures:
                client.cancel(list(futures))
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
