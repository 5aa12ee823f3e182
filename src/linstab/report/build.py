"""``build_report``: runs the sections for one or two models and writes the page."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from ..analyses.attacks import check_batch
from ..data.selection import ImageSelection, select_images
from ..io.cache import default_cache_dir
from ..io.jsonable import dumps
from ..io.processes import PidLock, pid_alive
from ..io.profile import scope, timed
from ..io.tables import write_csv
from ..io.validate import check_first_folder_writable
from ..models.device import resolve_device
from ..models.registry import REGISTRY, SHORTCUT_REFERENCE
from ..models.weights import find_local_weights
from ..network.loading import load_model
from ..plots import reuse_unchanged
from .ablations import section_ablations
from .context import FINDING_FIELDS, SECTIONS, ReportConfig, ReportContext, Section
from .dynamics import dynamics_items, section_dynamics
from .html import environment, model_record, write_html
from .jacobian import section_jacobian_tests
from .perturbations import propagation_item, section_propagation
from .spectra import section_spectra
from .sweep import sweep_band_rows, sweep_checksums


def for_model(ctx: ReportContext, net, build) -> Section:
    """``build(net)`` for one of several models: figures and data in per-model subfolders, the
    model's name on the section title and on the findings it adds.
    """
    t0, n_found = time.perf_counter(), len(ctx.findings)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", net.name)
    old = ctx.fig_dir, ctx.data_dir
    ctx.fig_dir, ctx.data_dir = old[0] / safe, old[1] / safe
    ctx.fig_dir.mkdir(parents=True, exist_ok=True)
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with scope(model=net.name):
            sec = build(net)
    finally:
        ctx.fig_dir, ctx.data_dir = old
    sec.title += f" - {net.name}"
    sec.seconds = time.perf_counter() - t0
    for f in ctx.findings[n_found:]:
        f.section += f" ({net.name})"
    return sec


def report_images(images: list[int] | str, size=None) -> ImageSelection:
    """The report's images: default-image indices or a spec of :func:`~linstab.data.select_images`
    (``"0-19"``, ``"jpeg:0-999"`` -- lossy, and labelled so --, a folder, an array file);
    ``size``: the input size of networks that resize their images (ImageNet).
    """
    if isinstance(images, str):
        return select_images(images, size=size)
    idx = [int(i) for i in images]
    if not idx:
        raise ValueError("images: expected at least one image")
    return select_images(",".join(str(i) for i in idx), size=size)


def check_report_models(nets) -> None:
    """Refuse, before any work, networks the report cannot put side by side: two with the same
    name (their figures, data and findings are filed under it) or taking images of different sizes.
    """
    names = [n.name for n in nets]
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise ValueError(
            f"the report's models need distinct names; {', '.join(map(repr, twice))} comes more than once "
            f"(models: {names}): report a model once, or name a network yourself "
            "(linstab.Network(model, mean, std, name=...))"
        )
    sizes = {getattr(n, "input_size", None) for n in nets}
    if len(sizes) > 1:
        raise ValueError(
            f"the models take images of different sizes ({sorted(map(str, sizes))}): report them apart"
        )


def shortcut_reference(cfg: ReportConfig, nets, device=None, reference=None) -> tuple:
    """The shortcut reference network (``reference``, else ``cfg.shortcut_reference`` loaded on
    ``device``), or ``None``, and a note for the report when ``"auto"`` found no weights.

    ``"auto"`` gives :data:`~linstab.models.SHORTCUT_REFERENCE` (option A) when every report
    model is a registered CIFAR network with option-B shortcuts and the reference's weights are
    on this machine; a name is loaded as given (a clear error when it cannot be).

    Raises:
        ValueError: a reference that is one of the report's models, takes images of another size
            or has no down-sampling unit.
    """
    names = [n.name for n in nets]
    if reference is None:
        name = cfg.shortcut_reference
        if name is None:
            return None, ""
        if name == "auto":
            specs = [getattr(n, "spec", None) for n in nets]
            if SHORTCUT_REFERENCE in names or not all(s is not None and s.shortcut == "B" for s in specs):
                return None, ""
            name = SHORTCUT_REFERENCE
            spec = REGISTRY[name]
            if find_local_weights(spec) is None:
                return None, (
                    f"Shortcut reference {name} (option A) left out: its weights file {spec.file_name} is "
                    "not on this machine (LINSTAB_WEIGHTS_DIR or the cache)."
                )
        if name in names:
            raise ValueError(
                f"shortcut_reference {name!r} is one of the report's models; choose another or None"
            )
        reference = load_model(name).to(device or "cpu")
    name = reference.name
    if any(reference is n for n in nets) or name in names:
        raise ValueError(f"shortcut reference {name!r} is one of the report's models; choose another or None")
    try:
        check_report_models([*nets, reference])
    except ValueError as exc:
        raise ValueError(f"shortcut reference {name!r}: {exc}") from None
    hw = {tuple(n.units[0].in_shape[1:]) for n in (*nets, reference)}
    if len(hw) > 1:
        raise ValueError(
            f"shortcut reference {name!r} and the report's models see images of different sizes "
            f"({sorted(hw)} at their first units): it must take the report's images"
        )
    if not any(u.kind == "downsampling" for u in reference.units):
        raise ValueError(f"shortcut reference {name!r} has no down-sampling unit to compare")
    return reference, ""


def _start_prefetch(ctx: ReportContext, nets, sections, images, labels) -> None:
    """Start the work of later sections beside the spectra section's workers (each in one
    background process with one thread) when the spectra section runs: the attacks of Figures
    3-4 (every model), and the dynamics section's eigenvalues and Lyapunov spectra (which would
    otherwise run alone at the end of the report, on one core). The sections then wait for
    their process and read the cache.
    """
    if "spectra" not in sections or ctx.cfg.n_workers < 2:
        return
    makers = {
        "propagation": lambda net: [propagation_item(ctx, net, images, labels, progress=False)],
        "dynamics": lambda net: dynamics_items(ctx, net, images),
    }
    for name, make in makers.items():
        if name not in sections:
            continue
        items = []
        for net in nets:
            labels_ = {"section": name, **({"model": net.name} if len(nets) > 1 else {})}
            items.extend((k, parts, functools.partial(_in_scope, fn, labels_)) for k, parts, fn in make(net))
        ctx.prefetch[name] = ctx.cache.prefetch(items)


def _in_scope(compute, labels: dict):
    with scope(**labels):
        return compute()


def _run_sections(ctx: ReportContext, nets, sections, per_net, images, reference, reference_note) -> None:
    for name in sections:
        t0 = time.perf_counter()
        with scope(section=name):
            if name == "spectra":  # Figures 1-2: every model in the same figures
                secs = [section_spectra(ctx, nets, images, reference, reference_note)]
            elif len(nets) == 1:
                secs = [per_net[name](nets[0])]
            else:  # one section per model
                secs = [for_model(ctx, net, per_net[name]) for net in nets]
        if len(secs) == 1:
            secs[0].seconds = time.perf_counter() - t0
        ctx.timings[name + "_s"] = round(time.perf_counter() - t0, 2)
        ctx.sections.extend(secs)


def check_writable_folder(name: str, path: Path) -> None:
    """Refuse, before any work, a folder that cannot be created or written
    (:func:`~linstab.io.validate.check_first_folder_writable` on ``path`` and its parents).

    Raises:
        ValueError: naming ``name``, the path and what is in the way.
    """
    try:
        check_first_folder_writable((path, *Path(os.path.abspath(path)).parents))
    except ValueError as exc:
        raise ValueError(f"{name} {str(path)!r}: {exc}") from None


REPORT_ENTRIES = ("index.html", "environment.json", "data", "figures")
"""What a report writes into its folder (and replaces there when it runs again)."""


def _check_not_foreign(out: Path) -> None:
    """Refuse a folder whose ``data/``, ``figures/`` or ``index.html`` a report would replace but
    which holds no earlier report (no ``environment.json`` written by linstab): a user's own
    ``data/`` folder is never deleted.
    """
    taken = [e for e in REPORT_ENTRIES if e != "environment.json" and (out / e).exists()]
    if not taken:
        return
    env = out / "environment.json"
    try:
        ours = env.is_file() and "linstab" in json.loads(env.read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise ValueError(
            f"out {str(out)!r} holds {', '.join(taken)} but no earlier linstab report (its environment.json "
            f"is missing or not linstab's); a report replaces {', '.join(REPORT_ENTRIES)} whole: give a new "
            "or empty folder, or a report's own folder"
        )


def staging_dir(out: Path) -> Path:
    """Where a report is built before it replaces the one in ``out``: a hidden sibling folder
    (usually the same file system, so publishing it is a rename).
    """
    out = Path(os.path.abspath(out))  # "." and ".." resolved: the sibling is outside out
    return out.parent / f".{out.name or 'report'}.linstab-partial-{os.getpid()}"


def clean_stale_stages(out: Path) -> int:
    """Remove staging folders of ``out`` left by killed runs (their process is gone); a report
    being built by a running process is left alone. Returns how many were removed.
    """
    mine = staging_dir(out)
    prefix = mine.name.rsplit("-", 1)[0] + "-"
    n = 0
    if not mine.parent.is_dir():
        return 0
    for old in mine.parent.iterdir():  # not glob: a name with [ or * in it is no pattern
        pid = old.name[len(prefix) :]
        if not old.name.startswith(prefix) or not pid.isdigit():
            continue
        if old.is_dir() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
            n += 1
    return n


def publish(stage: Path, out: Path) -> None:
    """Move every entry of the finished report in ``stage`` into ``out``, replacing entries of
    the same name (an earlier report's ``data/`` and ``figures/`` go as a whole, so no file of
    an earlier run -- another model's folder, a table this run does not write -- is left beside
    the new ones); files of other names in ``out`` stay.
    """
    out.mkdir(parents=True, exist_ok=True)
    for entry in sorted(stage.iterdir()):
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        shutil.move(entry, target)  # a rename on one file system (out may be a link elsewhere)
    stage.rmdir()


def build_report(
    cfg: ReportConfig, sections: tuple[str, ...] = SECTIONS, nets: list | None = None, reference=None
) -> Path:
    """Compute everything and write the report; returns the path of ``index.html``.

    The report is built in a hidden sibling folder of ``cfg.out`` and moved into ``cfg.out``
    only when it is complete: a failed or killed run leaves an earlier report there as it was,
    and a finished one replaces its ``index.html``, ``environment.json``, ``data/`` and
    ``figures/`` whole (no stale file of the earlier run remains). A folder holding such entries
    but no earlier report is refused, as is a folder another running report writes (the lock
    file ``<out>.lock`` beside it), before any work.

    Args:
        cfg: what to compute and where to write it.
        sections: a subset of :data:`SECTIONS`.
        nets: already built :class:`~linstab.network.Network` objects to use instead of loading
            ``cfg.models`` (e.g. a user's own network).
        reference: an already built network to use as the shortcut reference instead of
            ``cfg.shortcut_reference`` (:func:`shortcut_reference`).
    """
    if isinstance(sections, str) or not isinstance(sections, Iterable):
        raise TypeError(f"sections must be a sequence of section names from {SECTIONS}; got {sections!r}")
    sections = tuple(sections)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"unknown sections {bad}; choose from {SECTIONS}")
    if len(set(sections)) != len(sections):
        raise ValueError(f"sections: each section once, got {list(sections)}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} is a file; the report needs a folder")
    check_writable_folder("out", out)
    check_writable_folder(
        "out's parent (the report is built beside out, then moved in)", staging_dir(out).parent
    )
    _check_not_foreign(out)
    if cfg.use_cache:
        check_writable_folder("cache_dir", Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())
    if not cfg.models and not nets:
        raise ValueError("at least one model is needed")
    dev = resolve_device(cfg.device) if cfg.device is not None else None
    if nets and dev is not None:
        wrong = [f"{n.name} ({n.device})" for n in nets if n.device != dev]
        if wrong:
            raise ValueError(
                f"device {cfg.device!r} requested but the given networks live elsewhere: {', '.join(wrong)}; "
                "move them with net.to(device) or leave device unset"
            )
    weights = list(cfg.weights) if cfg.weights else [None] * len(cfg.models)
    if len(weights) != len(cfg.models):
        raise ValueError(
            f"give one weights file per model ({len(cfg.models)} models, {len(weights)} weights)"
        )
    if not nets:
        nets = [
            load_model(m, weights=w, input_size=cfg.input_size).to(dev or "cpu")
            for m, w in zip(cfg.models, weights, strict=True)
        ]
    check_report_models(nets)
    reference, reference_note = (
        shortcut_reference(cfg, nets, dev, reference) if "spectra" in sections else (None, "")
    )
    if cfg.sweep_dir is not None and "spectra" in sections:  # a missing or unfit sweep folder: no work yet
        for n in nets:
            sweep_band_rows(cfg.sweep_dir, n.name, sweep_checksums(n))
    sel = report_images(cfg.images, getattr(nets[0], "input_size", None))
    for n in [*nets, *([reference] if reference is not None else [])]:
        n.check_input(sel.images[:1], name=f"the report's images for {n.name}")  # before any work
    if sel.labels is not None and "propagation" in sections:
        for n in nets:  # labels beyond a model's outputs (a 2-class head) stopped the attacks a minute in
            check_batch(n, sel.images, sel.labels)  # one forward pass of one image
    t_start = time.perf_counter()
    stage = staging_dir(out)
    stage.parent.mkdir(parents=True, exist_ok=True)
    # one report at a time per folder: two publishing at once could leave a mix of both
    with PidLock(Path(os.path.abspath(out)), what="report folder"):
        clean_stale_stages(out)
        try:
            with reuse_unchanged(out, stage):  # an unchanged figure of the report in out is not drawn again
                index = _build(
                    replace(cfg, out=stage), sections, nets, sel, reference, reference_note, t_start
                )
            publish(stage, out)
        finally:
            if stage.exists():  # a failed run: the earlier report in out stays as it was
                shutil.rmtree(stage, ignore_errors=True)
    return out / index.name


def _build(
    cfg: ReportConfig, sections, nets, sel: ImageSelection, reference, reference_note, t_start: float
) -> Path:
    """The sections and the page, written into ``cfg.out`` (the staging folder)."""
    ctx = ReportContext(cfg)
    images, labels = sel.images, sel.labels
    ctx.image_ids, ctx.lossy = list(sel.ids), sel.lossy
    per_net = {
        "jacobian": lambda net: section_jacobian_tests(ctx, net, images),
        "propagation": lambda net: section_propagation(ctx, net, images, labels),
        "ablations": lambda net: section_ablations(ctx, net, images),
        "dynamics": lambda net: section_dynamics(ctx, net, images),
    }
    try:
        _start_prefetch(ctx, nets, sections, images, labels)
        _run_sections(ctx, nets, sections, per_net, images, reference, reference_note)
    finally:
        for pre in ctx.prefetch.values():  # a section failed before it waited: stop the process
            pre.cancel()
        ctx.prefetch.clear()
    ctx.timings["total_s"] = round(time.perf_counter() - t_start, 2)
    env = environment(ctx, nets, ctx.image_ids)
    env["timings"] = ctx.timings
    env["shortcut_reference"] = model_record(reference) if reference else None
    env["cache"] = {"hits": ctx.cache.hits, "misses": ctx.cache.misses}
    (ctx.out / "environment.json").write_text(dumps(env, indent=1))
    write_csv([f.row() for f in ctx.findings], ctx.data_dir / "findings.csv", FINDING_FIELDS, empty_nan=True)
    with timed("write-html"):
        return write_html(ctx, f"linstab report: {', '.join(n.name for n in nets)}", env)
