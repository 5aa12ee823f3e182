"""Propagated perturbations: random vs adversarial, projections on singular vectors, eq. (1).

Section 3.3 of the paper, and its open question (does the jump at the end of the last stage
depend on the attack?).

Definitions (``x`` a clean image, ``x~ = x + delta`` a perturbed one, both in [0, 1]):

* ``x_0`` is the stem's output (the input of unit 1.1); ``x_k`` is the **output** of the
  ``k``-th residual unit in forward order (``k = 1..L`` over all stages).
* The **propagated perturbation at unit k** is ``dx_k = x_k(x~) - x_k(x)``; ``dx_0`` is the
  stem's. The perturbation entering unit ``k+1`` is ``dx_k`` (the difference of that unit's
  actual inputs, which equals ``dx_k`` when units are chained).
* **Raw norm** ``||dx_k||_2`` per image; **normalized norm** ``||dx_k||_2 / sqrt(numel(x_k))``
  (``numel`` per image: C*H*W), i.e. the RMS of the difference map -- the paper's
  "normalized with respect to the sizes of the activation maps" (Figure 3).
* **Growth ratio** of unit ``k``: ``||dx_k|| / ||dx_{k-1}||`` with *raw* norms (``J_k`` maps the
  raw vector; at down-sampling units the map size changes, so the ratio of normalized norms
  would differ by ``sqrt(numel_{k-1} / numel_k)``). For the stem it is ``||dx_0|| / ||delta||``
  (includes the input normalization ``1/std``).
* **Exact linear prediction** at unit ``k``: ``||J_k dx_{k-1}||`` with ``J_k`` the unit's
  Jacobian at the *clean* image; compared with the actual ``||dx_k||`` it shows where
  linearization breaks (``lin_rel_err``).
* **Eq. (1)**: with right singular vectors ``v_i`` and values ``s_i`` of ``J_k`` (descending),
  ``alpha_i = <dx_{k-1}, v_i>`` and ``||J_k dx|| = sqrt(sum_i alpha_i^2 s_i^2)``. With only the
  top ``m`` vectors, the remainder ``r^2 = ||dx||^2 - sum_{i<=m} alpha_i^2`` lies in directions
  with singular values ``<= s_m``, so ``||J_k dx||`` lies in
  ``[sqrt(sum alpha_i^2 s_i^2), sqrt(sum alpha_i^2 s_i^2 + s_m^2 r^2)]`` (``eq1``,
  ``eq1_upper``). With all vectors both equal ``||J_k dx||``.
* **Alignment** ``align10``: ``sum_{i<=10} alpha_i^2 / ||dx||^2``, the fraction of the incoming
  perturbation's energy on the top-10 right singular vectors (``10/n`` for a random direction).

Perturbations: the attacks of :mod:`linstab.attacks` (``fgsm``, ``pgd``, ``deepfool``,
``cw``), its controls (``fgsm-half``, ``fgsm-fixed``, ``bim``) and ``random``: uniform noise in
``[-1, 1]^n``, seeded per image, scaled (with clipping to the image box accounted for) to
exactly the L2 norm of a reference attack's perturbation of the same image (FGSM by default, as
in the paper); ``random:r`` is the same with the seed ``seed + r`` (repeats over seeds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io.tables import read_csv, write_csv
from ..io.validate import check_int, is_real
from .attacks import (
    ATTACKS,
    CONTROLS,
    SEED_MAX,
    AttackResult,
    check_attack_params,
    check_batch,
    check_seed,
    run_attack,
)
from .projections import UnitPrediction, predict_unit, right_singular
from .propagation import (
    Propagation,
    parse_perturbations,
    propagate,
    random_perturbation,
    random_repeat,
    resolve_units,
)

ROW_FIELDS: tuple[str, ...] = (
    "image",
    "image_pos",
    "perturbation",
    "label",
    "clean_pred",
    "pert_pred",
    "flipped",
    "eps",
    "pert_l2",
    "pert_linf",
    "position",
    "address",
    "stage",
    "index",
    "kind",
    "numel",
    "norm",
    "normalized",
    "growth",
    "in_norm",
    "lin_pred",
    "lin_ratio",
    "lin_rel_err",
    "eq1",
    "eq1_upper",
    "eq1_ratio",
    "eq1_upper_ratio",
    "n_vectors",
    "spectrum",
    "captured",
    "align10",
    "sigma1",
    "sigma_last",
)


@dataclass
class PropagationAnalysis:
    """The result of :func:`analyze`.

    Attributes:
        network: the network's name.
        rows: one dict per image x perturbation x layer (fields :data:`ROW_FIELDS`).
        attacks: per perturbation, one :class:`~linstab.attacks.AttackResult` per image
            (``random`` results carry the noise as ``delta``).
        alphas: ``(image, perturbation, address) -> (alpha, sigma)`` numpy arrays for the
            units asked in ``keep_alphas``.
        settings: the analysis parameters.
    """

    network: str
    rows: list[dict]
    attacks: dict[str, list[AttackResult]]
    alphas: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]
    settings: dict

    def summary(self) -> list[dict]:
        """Per-perturbation summary (see :func:`summarize`)."""
        return summarize(self.rows, self.attacks)

    def write_csv(self, path: str | Path) -> Path:
        """Write :attr:`rows` as CSV."""
        return write_rows(self.rows, path)


def _check_unit_spec(net, spec, name: str) -> list[str]:
    """Resolved unit addresses of ``spec``; an empty spec (``""``, ``","``, ``[]``) is refused."""
    if spec is None:
        return []
    empty = (
        not spec.replace(",", "").strip()
        if isinstance(spec, str)
        else isinstance(spec, Sequence) and len(spec) == 0
    )
    if empty:
        none = "none" if name.startswith("--") else "None or 'none'"
        raise ValueError(
            f"{name}: expected all, last, a stage number or unit addresses like 3.7,3.8 ({none} for no "
            f"units), got an empty list {spec!r}"
        )
    try:
        return resolve_units(net, spec)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def check_spectral_settings(
    net, k: int | None, spectral_units, *, k_name: str = "k", units_name: str = "spectral_units"
) -> list[str]:
    """Check ``k`` and the spectral units of :func:`analyze` before any work.

    ``k`` singular vectors per unit must exist in every spectral unit: ``k`` is at most the
    smallest ``min(n_out, n_in)`` among them (a larger ``k`` is refused, not clamped; ``None``
    asks for all vectors of each unit, by dense SVD).

    Args:
        net: the :class:`~linstab.network.Network`.
        k: singular vectors per unit, or ``None`` (all).
        spectral_units: a unit spec (:func:`~linstab.analyses.propagation.resolve_units`);
            ``None`` or ``"none"`` for no units. An empty spec (``""``, ``[]``) is refused.
        k_name: the name of ``k`` in messages (e.g. ``"--k"`` for the command line).
        units_name: the name of ``spectral_units`` in messages.

    Returns:
        The spectral units' addresses.

    Raises:
        TypeError: for a ``k`` that is not an int (or ``None``).
        ValueError: for an empty or malformed unit spec, or a ``k`` out of range (the message
            gives the valid range and the unit that limits it).
    """
    addrs = _check_unit_spec(net, spectral_units, units_name)
    check_int(k_name, k, optional=True)
    if k is not None and addrs:
        chosen = set(addrs)
        ranks = {u.address: min(u.n_in, u.n_out) for u in net.units if u.address in chosen}
        limit = min(ranks, key=lambda a: ranks[a])
        n = ranks[limit]
        if k > n:
            every = "all" if k_name.startswith("--") else "None"
            raise ValueError(
                f"{k_name}: expected an int in 1..{n} or {every} (every vector, dense SVD), got {k}: "
                f"unit {limit}, the smallest of the {len(addrs)} spectral unit(s), has "
                f"min(n_out, n_in) = {n} singular vectors"
            )
    return addrs


def _draw_random(x: torch.Tensor, i: int, norm: float, seed: int) -> torch.Tensor:
    """The random perturbation of image ``i`` (seeded by ``seed`` and ``i``) with L2 norm ``norm``."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
    return random_perturbation(x[i], norm, generator=g)


def _random_results(
    x: torch.Tensor,
    labels: torch.Tensor,
    norms: dict[int, float],
    seed: int,
    net,
    name: str = "random",
) -> list[AttackResult]:
    """Random perturbations of the reference norms; an image whose norm the box cannot hold in
    the drawn direction is reported (not perturbed) instead of ending the analysis.
    """
    out: list[AttackResult] = []
    clean_pred = net.predict(x).argmax(1)
    todo = {}
    notes: dict[int, str] = {}
    for i in range(x.shape[0]):
        if i in norms and int(clean_pred[i]) == int(labels[i]):
            try:
                todo[i] = _draw_random(x, i, norms[i], seed)
            except ValueError as exc:
                notes[i] = f"no random perturbation of the reference norm: {exc}"
    preds = {}
    if todo:
        keys = sorted(todo)
        xa = torch.stack([(x[i].double() + todo[i]) for i in keys])
        p = net.predict(xa.float().clamp(0, 1)).argmax(1)
        preds = {i: int(p[j]) for j, i in enumerate(keys)}
    for i in range(x.shape[0]):
        lab, cp = int(labels[i]), int(clean_pred[i])
        if i not in todo:
            note = notes.get(i, "no reference norm (reference attack failed)")
            if cp != lab:
                note = "clean image misclassified: skipped"
            out.append(AttackResult.unattacked(name, i, x[i], lab, cp, note))
            continue
        d = todo[i]
        out.append(
            AttackResult(
                attack=name,
                index=i,
                x=x[i],
                x_adv=x[i].double() + d,
                delta=d,
                label=lab,
                clean_pred=cp,
                adv_pred=preds[i],
                flipped=preds[i] != lab,
                success=True,
                l2=float(d.norm()),
                linf=float(d.abs().max()),
                params={"seed": seed, "norm": norms[i]},
            )
        )
    return out


def analyze(
    net,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    perturbations: str | Sequence[str] = ("fgsm", "random"),
    *,
    ids: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float64,
    k: int | None = 64,
    spectral_units: str | Sequence[str] | None = "all",
    keep_alphas: str | Sequence[str] | None = None,
    seed: int = 0,
    random_ref: str = "fgsm",
    random_norm: float | None = None,
    attack_params: dict[str, dict] | None = None,
    progress: bool = True,
) -> PropagationAnalysis:
    """Attack, propagate and predict: the data of Figures 3-4 and the per-attack summary.

    For every image and perturbation: the propagated perturbation after the stem and every
    unit (raw and normalized norm, growth ratio), the exact linear prediction of every unit,
    and -- at the units in ``spectral_units`` -- the projections on the right singular vectors
    of the unit Jacobian at the clean image (computed once per image and unit, shared by all
    perturbations), eq. (1) with its bounds and the top-10 alignment.

    Args:
        net: the :class:`~linstab.network.Network`.
        images: ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)`` true labels (``None``: the model's predictions are taken as labels).
        perturbations: names from :data:`PERTURBATIONS`, a comma list, or ``"all"``.
        ids: a name per image for the output (default ``"0", "1", ...``).
        dtype: dtype of propagation and predictions (float64 recommended).
        k: singular vectors per unit (``None``: all, dense SVD -- only for small units); at
            most the smallest ``min(n_out, n_in)`` of the spectral units (a larger ``k`` is
            refused, see :func:`check_spectral_settings`).
        spectral_units: units with projections (see :func:`resolve_units`; ``None`` or
            ``"none"``: none; an empty spec is refused).
        keep_alphas: units whose ``alpha`` and ``sigma`` arrays are kept (for Figure 4).
        seed: seed of the random perturbations (per image: ``seed * 1000003 + position``;
            ``random:r`` uses ``seed + r``) and of PGD's random start and the top-k start blocks.
        random_ref: attack whose per-image L2 norm the random perturbation copies.
        random_norm: a fixed L2 norm for the random perturbations instead (checked before the
            attacks: a norm the image box cannot hold in an image's drawn direction is refused).
        attack_params: per-attack keyword arguments, e.g. ``{"pgd": {"eps": 0.01}}`` (all
            checked with :func:`~linstab.analyses.attacks.check_attack_params` before any
            attack runs).
        progress: show progress bars.

    Images the model misclassifies are not perturbed (their results are ``skipped``) and have
    no rows; when every image is misclassified, ``rows`` is empty.

    Raises:
        ValueError: for unknown perturbation or attack names, bad attack parameters, bad unit
            specs, a ``k`` larger than a spectral unit's spectrum, bad norms, seeds or labels;
            all checked before any work.
        TypeError: for a bad dtype, or a parameter an attack does not take.
    """
    from tqdm.auto import tqdm

    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    names = parse_perturbations(perturbations)
    if random_ref not in ATTACKS:
        raise ValueError(f"random_ref: expected one of {', '.join(ATTACKS)}, got {random_ref!r}")
    finite_positive = is_real(random_norm) and math.isfinite(random_norm) and random_norm > 0
    if random_norm is not None and not finite_positive:
        raise ValueError(f"random_norm: expected a finite float > 0, got {random_norm!r}")
    seed = check_seed("seed", seed)
    randoms = [n for n in names if random_repeat(n) is not None]
    top = max((random_repeat(n) for n in randoms), default=0)
    if seed + top > SEED_MAX:
        raise ValueError(f"seed: expected seed + N (random:N) <= {SEED_MAX}, got {seed} + {top}")
    attack_params = dict(attack_params or {})
    unknown = sorted(set(attack_params) - set(ATTACKS) - set(CONTROLS))
    if unknown:
        raise ValueError(
            f"attack_params: unknown attacks {unknown}; expected keys among "
            f"{', '.join((*ATTACKS, *CONTROLS))}"
        )
    ref_needed = bool(randoms) and random_norm is None
    to_run = [n for n in (*ATTACKS, *CONTROLS) if n in names or (ref_needed and n == random_ref)]
    attack_kwargs: dict[str, dict] = {}
    for name in (*ATTACKS, *CONTROLS):  # every attack's settings, also one not run: it was asked
        if name not in to_run and name not in attack_params:
            continue
        prm = {"progress": progress, **attack_params.get(name, {})}
        if name == "pgd":
            prm.setdefault("seed", seed)
        check_attack_params(name, prm)
        attack_kwargs[name] = prm
    x = net.check_input(images)
    if labels is None:
        labels = net.predict(x).argmax(1)
    else:
        x, labels = check_batch(net, x, labels)
    ids = [str(i) for i in (ids if ids is not None else range(x.shape[0]))]
    if len(ids) != x.shape[0]:
        raise ValueError(f"ids: expected {x.shape[0]} ids, got {len(ids)}")
    spectral = set(check_spectral_settings(net, k, spectral_units))
    keep = set(_check_unit_spec(net, keep_alphas, "keep_alphas"))
    if randoms and random_norm is not None:  # a norm the image box cannot hold: before the attacks
        clean_pred = net.predict(x).argmax(1)
        for name in randoms:
            for i in range(x.shape[0]):
                if int(clean_pred[i]) != int(labels[i]):
                    continue
                try:
                    _draw_random(x, i, float(random_norm), seed + random_repeat(name))
                except ValueError as exc:
                    raise ValueError(f"random_norm: too large for image {ids[i]} ({name}): {exc}") from None

    # ---- perturbations ----------------------------------------------------------------------
    results: dict[str, list[AttackResult]] = {}
    for name in to_run:
        if progress:
            print(f"attack {name} on {x.shape[0]} images ...", flush=True)
        results[name] = run_attack(net, x, labels, name, **attack_kwargs[name])
    if randoms:
        if random_norm is not None:
            norms = dict.fromkeys(range(x.shape[0]), float(random_norm))
        else:
            norms = {r.index: r.l2 for r in results[random_ref] if r.success}
        for name in randoms:
            results[name] = _random_results(x, labels, norms, seed + random_repeat(name), net, name)
    results = {n: results[n] for n in names}

    # ---- propagation --------------------------------------------------------------------------
    props: dict[str, tuple[list[int], Propagation]] = {}
    for name in names:
        pos = [r.index for r in results[name] if r.success]
        if not pos:
            continue
        pert = torch.stack([results[name][i].x_adv for i in pos]).to(dtype)
        props[name] = (pos, propagate(net, x[pos], pert, dtype=dtype, keep=True))

    # ---- predictions, per image (Jacobians and singular vectors shared by perturbations) ----
    rows: list[dict] = []
    alphas: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    by_image: dict[int, list[tuple[str, int]]] = {}
    for name, (pos, _) in props.items():
        for j, i in enumerate(pos):
            by_image.setdefault(i, []).append((name, j))
    units = net.units
    bar = tqdm(total=len(by_image) * len(units), desc="propagation", unit="unit", disable=not progress)
    for i in sorted(by_image):
        lin = net.linearize(x[i], dtype)
        preds: dict[str, list[UnitPrediction | None]] = {name: [None] for name, _ in by_image[i]}
        for u in units:
            op = lin.unit(u.stage, u.index)
            spec = right_singular(op, k, seed=seed) if u.address in spectral else None
            for name, j in by_image[i]:
                dx = props[name][1].in_diffs[units.index(u)][j]
                p = predict_unit(op, dx, spec)
                preds[name].append(p)
                if p.alpha is not None and u.address in keep:
                    alphas[(ids[i], name, u.address)] = (p.alpha.cpu().numpy(), p.sigma.cpu().numpy())
            bar.update(1)
        for name, j in by_image[i]:
            rows.extend(_rows_for(ids[i], i, name, results[name][i], props[name][1], j, preds[name]))
    bar.close()
    order = {n: r for r, n in enumerate(names)}
    rows.sort(key=lambda r: (order[r["perturbation"]], r["image_pos"], r["position"]))
    settings = {
        "network": net.name,
        "perturbations": names,
        "dtype": str(dtype).replace("torch.", ""),
        "k": k,
        "spectral_units": sorted(spectral, key=lambda a: [int(t) for t in a.split(".")]),
        "seed": seed,
        "random_ref": random_ref,
        "random_norm": random_norm,
        "attack_params": {n: {kk: vv for kk, vv in v.items()} for n, v in attack_params.items()},
        "images": ids,
    }
    return PropagationAnalysis(net.name, rows, results, alphas, settings)


def _nan(v: float) -> float:
    return float(v) if v is not None else math.nan


def _rows_for(image_id, i, name, res: AttackResult, prop: Propagation, j, preds) -> list[dict]:
    out = []
    for pos in range(len(prop.addresses)):
        norm = float(prop.norms[j, pos])
        row = {
            "image": image_id,
            "image_pos": i,
            "perturbation": name,
            "label": res.label,
            "clean_pred": int(prop.clean_pred[j]),
            "pert_pred": int(prop.pert_pred[j]),
            "flipped": int(prop.pert_pred[j]) != res.label,
            "eps": _nan(res.eps),
            "pert_l2": float(prop.input_norm[j]),
            "pert_linf": res.linf,
            "position": pos,
            "address": prop.addresses[pos],
            "stage": prop.stages[pos],
            "index": prop.indices[pos],
            "kind": prop.kinds[pos],
            "numel": prop.numel[pos],
            "norm": norm,
            "normalized": float(prop.normalized[j, pos]),
            "growth": float(prop.growth[j, pos]),
        }
        p = preds[pos]
        if p is None:
            row.update(in_norm=float(prop.input_norm[j]))
        else:
            inn = p.in_norm
            row.update(
                in_norm=inn,
                lin_pred=p.lin_pred,
                lin_ratio=p.lin_pred / inn if inn > 0 else math.nan,
                lin_rel_err=abs(p.lin_pred - norm) / norm if norm > 0 else math.nan,
                eq1=p.eq1,
                eq1_upper=p.eq1_upper,
                eq1_ratio=p.eq1 / inn if inn > 0 else math.nan,
                eq1_upper_ratio=p.eq1_upper / inn if inn > 0 else math.nan,
                n_vectors=p.n_vectors,
                spectrum=p.spectrum,
                captured=p.captured,
                align10=p.align10,
                sigma1=float(p.sigma[0]) if p.sigma is not None else math.nan,
                sigma_last=float(p.sigma[-1]) if p.sigma is not None else math.nan,
            )
        out.append({f: row.get(f, math.nan if f not in ("spectrum",) else "") for f in ROW_FIELDS})
    return out


def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _gmean(vals: list[float]) -> float:
    """Geometric mean of the finite values (NaN: none). A growth of exactly 0 (the perturbation
    vanished in that unit) makes it 0, not a mean over the other units.
    """
    v = [x for x in vals if math.isfinite(x)]
    if not v:
        return math.nan
    if any(x < 0 for x in v):
        raise ValueError(f"geometric mean of growths: expected values >= 0, got {min(v)}")
    if any(x == 0 for x in v):
        return 0.0
    return math.exp(sum(math.log(x) for x in v) / len(v))


def _mean(vals: list[float]) -> float:
    v = [x for x in vals if math.isfinite(x)]
    return sum(v) / len(v) if v else math.nan


def _median(vals: list[float]) -> float:
    v = sorted(x for x in vals if math.isfinite(x))
    if not v:
        return math.nan
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def summarize(rows: list[dict], attacks: dict[str, list[AttackResult]] | None = None) -> list[dict]:
    """Per-perturbation summary: the numbers that say whether the final-stage jump is attack-specific.

    Per perturbation (means over its images; a perturbation of ``attacks`` without rows, i.e.
    with no successful image, has only ``images`` = 0, ``attempted`` and ``success_rate``):

    * ``images``: images analysed; ``attempted``/``success_rate`` (with ``attacks``);
    * ``l2``, ``linf``: mean input perturbation norms;
    * ``growth_s{S}``: geometric mean of the per-unit growth ratio over stage ``S``'s units;
    * ``last3_growth``: the same over the last 3 units of the last stage;
      ``last3_vs_stage = last3_growth / growth_s{last}`` (> 1: a jump at the end of the stage);
      ``last3_vs_regular``: the same against the regular units of the last stage before its last
      3 (the down-sampling unit, whose raw-norm growth is partly a dimension effect, excluded);
    * ``last3_gain`` (``_min``, ``_max``): per image, the amplification over the last 3 units
      ``||dx_L|| / ||dx_{L-3}||``; geometric mean, smallest and largest over the images;
    * ``end_normalized``: mean normalized propagated perturbation after the last unit;
    * ``align10_last_stage``, ``align10_last3``, ``align10_rest``: mean top-10 alignment over the
      last stage, its last 3 units and its other units (where computed);
      ``align10_uniform``: ``10 / n`` of the last stage (a random direction's expectation);
    * ``lin_rel_err``: median ``|lin_pred - norm| / norm`` over all units; ``lin_rel_err_last3``
      over the last 3 units.

    Args:
        rows: rows of :func:`analyze` (or read back with :func:`read_rows`).
        attacks: attack results, for the success rate.
    """
    names: list[str] = []
    for r in rows:
        if r["perturbation"] not in names:
            names.append(r["perturbation"])
    # perturbations that produced no rows (no image succeeded) still get a line: images 0 and
    # their attempts, so a summary file is never silently empty
    names += [name for name in (attacks or {}) if name not in names]
    out = []
    for name in names:
        rr = [r for r in rows if r["perturbation"] == name]
        if not rr:
            att = [a for a in attacks[name] if not a.skipped]
            success = sum(a.success for a in att) / len(att) if att else math.nan
            out.append({"perturbation": name, "images": 0, "attempted": len(att), "success_rate": success})
            continue
        units = [r for r in rr if r["address"] != "stem"]
        stages = sorted({int(_f(r["stage"])) for r in units})
        last = stages[-1] if stages else 0
        last_units = sorted({int(_f(r["index"])) for r in units if int(_f(r["stage"])) == last})
        last3 = set(last_units[-3:])
        imgs = sorted({str(r["image"]) for r in rr})
        per_img = {im: [r for r in rr if str(r["image"]) == im] for im in imgs}
        first = [p[0] for p in per_img.values()]
        s: dict = {"perturbation": name, "images": len(imgs)}
        if attacks is not None and name in attacks:
            att = [a for a in attacks[name] if not a.skipped]
            s["attempted"] = len(att)
            s["success_rate"] = sum(a.success for a in att) / len(att) if att else math.nan
        s["l2"] = _mean([_f(r["pert_l2"]) for r in first])
        s["linf"] = _mean([_f(r["pert_linf"]) for r in first])
        for st in stages:
            s[f"growth_s{st}"] = _gmean([_f(r["growth"]) for r in units if int(_f(r["stage"])) == st])
        in_last = [r for r in units if int(_f(r["stage"])) == last]
        l3 = [r for r in in_last if int(_f(r["index"])) in last3]
        rest = [r for r in in_last if int(_f(r["index"])) not in last3]
        s["last3_growth"] = _gmean([_f(r["growth"]) for r in l3])
        s["last3_vs_stage"] = s["last3_growth"] / s.get(f"growth_s{last}", math.nan) if stages else math.nan
        base = [r for r in rest if r["kind"] == "regular"]
        s["last3_vs_regular"] = s["last3_growth"] / _gmean([_f(r["growth"]) for r in base])
        gains = [
            math.prod(
                _f(r["growth"]) for r in p if int(_f(r["stage"])) == last and int(_f(r["index"])) in last3
            )
            for p in per_img.values()
        ]
        s["last3_gain"] = _gmean(gains)
        s["last3_gain_min"] = min(gains) if gains else math.nan
        s["last3_gain_max"] = max(gains) if gains else math.nan
        s["end_normalized"] = _mean([_f(p[-1]["normalized"]) for p in per_img.values()])
        s["align10_last_stage"] = _mean([_f(r["align10"]) for r in in_last])
        s["align10_last3"] = _mean([_f(r["align10"]) for r in l3])
        s["align10_rest"] = _mean([_f(r["align10"]) for r in rest])
        n_last = [int(_f(r["numel"])) for r in in_last]
        s["align10_uniform"] = 10 / n_last[0] if n_last else math.nan
        s["lin_rel_err"] = _median([_f(r["lin_rel_err"]) for r in units])
        s["lin_rel_err_last3"] = _median([_f(r["lin_rel_err"]) for r in l3])
        out.append(s)
    return out


def per_image_statistics(rows: list[dict], last_units: int = 3) -> list[dict]:
    """Per image and perturbation: the numbers the report's findings on Figures 3-4 rest on.

    Growth ratios are raw-norm ratios ``||dx_k|| / ||dx_{k-1}||``; only **regular** units enter
    the means (down-sampling and projection units change the dimension, so their raw-norm
    ratio is partly a dimension effect). With ``L`` the last stage:

    * ``growth_early``: geometric-mean growth over the regular units of stages ``1..L-1``;
      ``frac_growing_early``: the fraction of those units with growth > 1;
    * ``growth_last``: geometric-mean growth over the regular units of stage ``L``;
    * ``jump``: ``log(last3) - log(baseline)``, with ``last3`` the geometric-mean growth over
      the last ``last_units`` units of stage ``L`` and ``baseline`` that over its regular units
      before them (NaN without baseline units); ``n_baseline`` the number of baseline units;
    * ``align10_final``: the top-10 alignment of the perturbation entering the final unit;
      ``align10_earlier``: the median over the regular units of stage ``L`` before the final
      one (where computed);
    * ``lin_rel_err_last``: median over the units of stage ``L`` of ``|lin_pred - ||dx_k||| /
      ||dx_k||`` (eq. (1) with all singular vectors is ``lin_pred``); ``naive_rel_err_last``:
      the same for the prediction "no change" (``||dx_{k-1}||``);
    * ``flipped``, ``eps``, ``pert_l2`` of the perturbation.

    Args:
        rows: rows of :func:`analyze` (or :func:`read_rows`).
        last_units: units at the end of the last stage that make the jump.

    Returns:
        one dict per (image, perturbation), in the order of ``rows``.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((str(r["image"]), str(r["perturbation"])), []).append(r)
    out = []
    for (image, name), rr in groups.items():
        units = [r for r in rr if r["address"] != "stem"]
        last = max(int(_f(r["stage"])) for r in units)
        early = [r for r in units if int(_f(r["stage"])) < last and r["kind"] == "regular"]
        in_last = sorted((r for r in units if int(_f(r["stage"])) == last), key=lambda r: int(_f(r["index"])))
        tail = in_last[-last_units:]
        tail_idx = {int(_f(r["index"])) for r in tail}
        base = [r for r in in_last if r["kind"] == "regular" and int(_f(r["index"])) not in tail_idx]
        reg_last = [r for r in in_last if r["kind"] == "regular"]
        early_g = [_f(r["growth"]) for r in early]
        last3 = _gmean([_f(r["growth"]) for r in tail])
        baseline = _gmean([_f(r["growth"]) for r in base])
        final = in_last[-1] if in_last else None
        earlier = [_f(r["align10"]) for r in reg_last[:-1]]
        lin = [_f(r["lin_rel_err"]) for r in in_last]
        naive = [
            abs(_f(r["in_norm"]) - _f(r["norm"])) / _f(r["norm"]) if _f(r["norm"]) > 0 else math.nan
            for r in in_last
        ]
        out.append(
            {
                "image": image,
                "perturbation": name,
                "flipped": bool(rr[0]["flipped"]),
                "eps": _f(rr[0]["eps"]),
                "pert_l2": _f(rr[0]["pert_l2"]),
                "growth_early": _gmean(early_g),
                "frac_growing_early": (
                    sum(g > 1 for g in early_g if math.isfinite(g)) / len(early_g) if early_g else math.nan
                ),
                "growth_last": _gmean([_f(r["growth"]) for r in reg_last]),
                "last3_growth": last3,
                "baseline_growth": baseline,
                "jump": math.log(last3) - math.log(baseline) if last3 > 0 and baseline > 0 else math.nan,
                "n_baseline": len(base),
                "align10_final": _f(final["align10"]) if final is not None else math.nan,
                "align10_earlier": _median(earlier),
                "lin_rel_err_last": _median(lin),
                "naive_rel_err_last": _median(naive),
            }
        )
    return out


def summary_table(summary: list[dict]) -> str:
    """A Markdown table of :func:`summarize`'s output (one row per perturbation)."""
    if not summary:
        return "(no results)"
    keys: list[str] = []
    for s in summary:
        keys.extend(k for k in s if k not in keys)

    def fmt(v) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    for s in summary:
        lines.append("| " + " | ".join(fmt(s.get(k, math.nan)) for k in keys) + " |")
    return "\n".join(lines)


def write_rows(rows: list[dict], path: str | Path) -> Path:
    """Write rows as CSV (NaN written as empty fields)."""
    return write_csv(rows, path, ROW_FIELDS, empty_nan=True)


_INT_FIELDS = {
    "image_pos",
    "label",
    "clean_pred",
    "pert_pred",
    "position",
    "stage",
    "index",
    "numel",
    "n_vectors",
}


_STR_FIELDS = {"image", "perturbation", "address", "kind", "spectrum"}


def read_rows(path: str | Path) -> list[dict]:
    """Read a CSV written by :func:`write_rows` (numbers parsed, empty fields as NaN)."""
    try:
        raw = read_csv(path, required=ROW_FIELDS)
    except ValueError as exc:
        raise ValueError(f"{path}: not a propagation CSV ({exc})") from exc
    rows = []
    for r in raw:
        row: dict = {}
        for k, v in r.items():
            if k in _STR_FIELDS:
                row[k] = v
            elif k == "flipped":
                row[k] = v == "True"
            elif k in _INT_FIELDS:
                row[k] = int(float(v)) if v not in ("", "nan") else -1
            else:
                row[k] = float(v) if v != "" else math.nan
        rows.append(row)
    return rows


def write_summary(summary: list[dict], path: str | Path, settings: dict | None = None) -> Path:
    """Write :func:`summarize` rows as JSON (with ``settings``) or CSV, by the file's suffix.

    Raises:
        ValueError: a file name that ends in neither ``.json`` nor ``.csv``.
    """
    path = Path(path)
    if path.suffix.lower() not in (".json", ".csv"):
        raise ValueError(f"the summary file must end in .json or .csv, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        clean = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()}
            for s in summary
        ]
        path.write_text(json.dumps({"settings": settings or {}, "summary": clean}, indent=1))
    else:
        write_csv(summary, path, empty_nan=True)
    return path
