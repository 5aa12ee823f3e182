"""Adversarial attacks on a :class:`~linstab.network.Network`, with verified label flips.

All attacks run on ``net.module`` (the model *with* its input normalization), so images and
perturbations live in [0, 1] image space. Every attack returns one :class:`AttackResult` per
image; the label flip is always re-checked with :meth:`Network.predict` (never taken from the
attack library), so a library returning garbage (e.g. all-zero images from DeepFool on a
degenerate model) is reported as ``success=False``.

Attacks (names accepted by :func:`run_attack`):

* ``"fgsm"`` -- implemented here, as in the paper: the direction ``sign(grad_x CE(x, y))``
  and the *smallest* ``eps`` for which ``clip(x + eps * sign(grad), 0, 1)`` is misclassified,
  found on a geometric grid and refined by bisection to a relative tolerance;
* ``"pgd"`` -- L-inf projected gradient descent (``foolbox.attacks.LinfPGD``), either at a
  fixed ``eps`` or with a minimal-eps search (bisection of the grid, then of the bracket);
* ``"deepfool"`` -- L2 DeepFool (``foolbox.attacks.L2DeepFoolAttack``), minimal L2 by design;
* ``"cw"`` -- L2 Carlini-Wagner (``foolbox.attacks.L2CarliniWagnerAttack``).

Controls (:data:`CONTROLS`): perturbations that separate the adversarial *direction* from the
label flip. A minimal-eps adversarial sits on the decision boundary, so part of its growth at
the last units is forced by the flip; these do not depend on reaching the boundary:

* ``"fgsm-half"`` -- the FGSM direction at half the minimal flipping ``eps`` (the same search
  as ``"fgsm"``); it does **not** flip the label (checked; an image that flips is reported);
* ``"fgsm-fixed"`` -- FGSM at a fixed budget (default ``eps = 8/255``), as in the paper's
  reference [7] (Kurakin et al.), whether or not the label flips;
* ``"bim"`` -- the iterative FGSM of [7] (basic iterative method): steps of ``1/255`` along the
  gradient sign, projected on the L-inf ball of radius ``eps`` (default ``8/255``) and on
  [0, 1], ``min(eps*255 + 4, 1.25*eps*255)`` steps, whether or not the label flips.

For the controls ``success`` means a valid perturbation (finite, in [0, 1], non-zero; for
``fgsm-half`` also not flipping); ``flipped`` says whether the label changed.

Images the model already misclassifies are reported (``skipped=True``) and not attacked: a
label flip is meaningless for them.

The user's model is never modified: every attack differentiates with respect to the *input*
only (``torch.autograd.grad(loss, x)``; foolbox's attacks run on a view whose backward pass
computes the input gradient alone), so no parameter's ``.grad`` is created or changed and no
``requires_grad`` flag is touched. Parameters are checked (:func:`check_attack_params`) before
any image is attacked.

Shapes: images ``(N, 3, H, W)`` (or one ``(3, H, W)``) in [0, 1], labels ``(N,)`` int64.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..io.jsonable import is_plain_json
from ..io.profile import timed
from ..io.validate import check_int, is_real
from ..network.view import Network

ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "deepfool", "cw")
"""The adversarial attacks (label-flipping by definition)."""

CONTROLS: tuple[str, ...] = ("fgsm-half", "fgsm-fixed", "bim")
"""Control perturbations: the adversarial direction without (or regardless of) a label flip."""

ATTACK_REVISION = 3
"""Revision of the attacks' results (part of cached results' keys): 2 = PGD bisects the eps grid
and draws each image's random start on its own; 3 = a library's all-zero "nothing found" image
(DeepFool, CW) is reported as no perturbation (``x_adv = x``, not flipped), and an image that
FGSM or a control legitimately clips to all zero is no longer refused."""

KURAKIN_EPS = 8 / 255
"""The default L-inf budget of the fixed-eps controls (a common budget of Kurakin et al.)."""


@dataclass
class AttackResult:
    """The outcome of one attack on one image.

    Attributes:
        attack: attack name (``"fgsm"``, ``"pgd"``, ``"deepfool"``, ``"cw"``).
        index: position of the image in the attacked batch.
        x: the clean image ``(3, H, W)`` in [0, 1].
        x_adv: the perturbed image ``(3, H, W)`` in [0, 1] (``x`` itself when skipped).
        delta: ``x_adv - x``.
        label: the true label.
        clean_pred: the model's prediction on ``x``.
        adv_pred: the model's prediction on ``x_adv`` (checked with ``net.predict``).
        flipped: ``adv_pred != label``.
        success: flipped, the clean image was correctly classified, ``x_adv`` finite, in
            [0, 1] and different from ``x`` (for the :data:`CONTROLS`: a valid perturbation,
            flipped or not; ``fgsm-half``: valid and not flipped).
        skipped: the clean image was already misclassified and was not attacked.
        eps: the L-inf scale of FGSM/PGD (the minimal flipping one when searched); ``None``
            for DeepFool and CW.
        l2: ``||delta||_2``.
        linf: ``||delta||_inf``.
        params: the attack's parameters (and search details such as ``eps_lo``, the largest
            scale known not to flip).
        note: why an attack failed or was skipped (empty on success).
    """

    attack: str
    index: int
    x: torch.Tensor = field(repr=False)
    x_adv: torch.Tensor = field(repr=False)
    delta: torch.Tensor = field(repr=False)
    label: int
    clean_pred: int
    adv_pred: int
    flipped: bool
    success: bool
    skipped: bool = False
    eps: float | None = None
    l2: float = 0.0
    linf: float = 0.0
    params: dict = field(default_factory=dict)
    note: str = ""

    @classmethod
    def unattacked(
        cls, attack: str, index: int, x: torch.Tensor, label: int, clean_pred: int, note: str, params=None
    ) -> AttackResult:
        """The result for an image that was not perturbed (``x_adv = x``, zero ``delta``)."""
        return cls(
            attack=attack,
            index=index,
            x=x,
            x_adv=x.clone(),
            delta=torch.zeros_like(x),
            label=label,
            clean_pred=clean_pred,
            adv_pred=clean_pred,
            flipped=False,
            success=False,
            skipped=True,
            params=dict(params or {}),
            note=note,
        )

    def to_dict(self) -> dict:
        """A JSON-friendly summary (no tensors)."""
        return {
            "attack": self.attack,
            "index": self.index,
            "label": self.label,
            "clean_pred": self.clean_pred,
            "adv_pred": self.adv_pred,
            "flipped": self.flipped,
            "success": self.success,
            "skipped": self.skipped,
            "eps": self.eps,
            "l2": self.l2,
            "linf": self.linf,
            "params": {k: v for k, v in self.params.items() if is_plain_json(v)},
            "note": self.note,
        }


def _check_net(net) -> torch.nn.Module:
    if not isinstance(net, Network):
        raise TypeError(f"net must be a linstab.Network, got {type(net).__name__}")
    net.check_eval()  # attacks need batch norm with running statistics
    return net.module


def _positive_float(name: str, v, allow_zero: bool = False) -> None:
    ok = is_real(v) and bool(np.isfinite(v))
    if not ok or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a finite float {'>=' if allow_zero else '>'} 0, got {v!r}")


def check_batch(net, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels for an attack on ``net``, checked before any work: images of the
    network's shape in [0, 1], one integer label per image within the model's outputs (one
    forward pass of one image counts them).

    Returns:
        ``(x, labels)``: ``(N, C, H, W)`` images and ``(N,)`` int64 labels.

    Raises:
        TypeError: labels that are not an integer tensor, array or sequence of ints.
        ValueError: a wrong count of labels, or labels outside ``0..n_classes - 1``.
    """
    _check_net(net)
    x = net.check_input(images)
    if labels is None:
        raise TypeError("labels: expected an int tensor of shape (N,), got None")
    if isinstance(labels, (list, tuple)):
        arr = np.asarray(labels)
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"labels: expected a sequence of ints, got elements of dtype {arr.dtype}")
        labels = arr.astype(np.int64)
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if isinstance(labels, numbers.Integral) and not isinstance(labels, (bool, np.bool_)):
        labels = torch.tensor([int(labels)])
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a torch.Tensor of ints, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected an integer dtype, got {labels.dtype}")
    labels = labels.reshape(-1).to(torch.int64)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"labels: expected {x.shape[0]} labels (one per image), got {labels.shape[0]}")
    n_classes = int(net.predict(x[:1]).shape[1])
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"labels: expected class indices in 0..{n_classes - 1} (the model's {n_classes} outputs), "
            f"got values in {int(labels.min())}..{int(labels.max())}"
        )
    return x, labels


def default_eps_grid(lo: float = 1e-4, hi: float = 0.3, n: int = 33) -> torch.Tensor:
    """The default L-inf search grid: ``n`` geometrically spaced values in ``[lo, hi]`` (float64)."""
    return torch.from_numpy(np.geomspace(lo, hi, n))


def check_eps_grid(grid) -> torch.Tensor:
    """Validate an eps grid: 1-D, finite, strictly increasing, values in (0, 1].

    Raises:
        TypeError: for something that is not a sequence of numbers.
        ValueError: naming what is wrong (expected vs received).
    """
    if grid is None:
        return default_eps_grid()
    try:
        g = torch.as_tensor(np.asarray(grid, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"eps_grid: expected a 1-D sequence of floats, got {type(grid).__name__}") from exc
    if g.ndim != 1 or g.numel() == 0:
        raise ValueError(f"eps_grid: expected a non-empty 1-D sequence, got shape {tuple(g.shape)}")
    if not torch.isfinite(g).all() or (g <= 0).any() or (g > 1).any():
        raise ValueError(
            "eps_grid: expected finite values in (0, 1], got range "
            f"[{float(g.min()):.3g}, {float(g.max()):.3g}]"
        )
    if g.numel() > 1 and not (g[1:] > g[:-1]).all():
        raise ValueError("eps_grid: expected strictly increasing values")
    return g


def _check_unit_interval(name: str, v, *, optional: bool = False) -> None:
    """``v`` a finite float in (0, 1] (or ``None`` when ``optional``)."""
    if v is None and optional:
        return
    ok = is_real(v) and 0 < v <= 1
    if not ok:
        raise ValueError(f"{name}: expected a float in (0, 1]{' or None' if optional else ''}, got {v!r}")


def _check_rtol(rtol) -> None:
    if not (is_real(rtol) and 0 < rtol < 1):
        raise ValueError(f"rtol: expected a float in (0, 1), got {rtol!r}")


def _check_bool(name: str, v) -> None:
    if not isinstance(v, bool):
        raise TypeError(f"{name}: expected True or False, got {type(v).__name__} {v!r}")


SEED_MAX = 2**40 - 1
"""The largest seed magnitude accepted: seeds are combined with image positions into generator
seeds (``seed * 1000003 + i``), which must fit in 64 bits. Negative seeds are accepted."""


def check_seed(name: str, seed) -> int:
    """``seed`` as an int, checked to lie in ``-SEED_MAX..SEED_MAX``.

    Raises:
        TypeError: for something that is not an integer (``bool`` included).
        ValueError: for a seed too large to combine with image positions.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(seed).__name__} {seed!r}")
    if abs(int(seed)) > SEED_MAX:
        raise ValueError(f"{name}: expected an int in -{SEED_MAX}..{SEED_MAX}, got {seed!r}")
    return int(seed)


def _check_fgsm(*, eps, eps_grid, rtol, max_bisect) -> None:
    check_eps_grid(eps_grid)
    _check_rtol(rtol)
    check_int("max_bisect", max_bisect, minimum=0)
    _check_unit_interval("eps", eps, optional=True)


def _check_pgd(
    *, eps, eps_grid, rtol, max_bisect, steps, rel_stepsize, random_start, seed, grid_search
) -> None:
    check_eps_grid(eps_grid)
    _check_unit_interval("eps", eps, optional=True)
    _check_rtol(rtol)
    if grid_search not in ("bisect", "scan"):
        raise ValueError(f"grid_search: expected 'bisect' or 'scan', got {grid_search!r}")
    check_int("steps", steps)
    check_int("max_bisect", max_bisect)
    _positive_float("rel_stepsize", rel_stepsize)
    _check_bool("random_start", random_start)
    check_seed("seed", seed)


def _check_deepfool(*, steps, candidates, overshoot, loss) -> None:
    if loss not in ("logits", "crossentropy"):
        raise ValueError(f"loss: expected 'logits' or 'crossentropy', got {loss!r}")
    check_int("steps", steps)
    check_int("candidates", candidates, optional=True)
    if candidates is not None and candidates < 2:
        raise ValueError(f"candidates: expected at least 2 classes (or None: all), got {candidates!r}")
    _positive_float("overshoot", overshoot, allow_zero=True)


def _check_cw(*, binary_search_steps, steps, stepsize, confidence, initial_const, abort_early) -> None:
    check_int("binary_search_steps", binary_search_steps)
    check_int("steps", steps)
    _positive_float("stepsize", stepsize)
    _positive_float("confidence", confidence, allow_zero=True)
    _positive_float("initial_const", initial_const)
    _check_bool("abort_early", abort_early)


def _check_fgsm_half(*, scale, eps_grid, rtol, max_bisect) -> None:
    ok = is_real(scale) and 0 < scale < 1
    if not ok:
        raise ValueError(f"scale: expected a float in (0, 1), got {scale!r}")
    _check_fgsm(eps=None, eps_grid=eps_grid, rtol=rtol, max_bisect=max_bisect)


def _check_fgsm_fixed(*, eps) -> None:
    _check_unit_interval("eps", eps)


def _check_bim(*, eps, step, steps) -> None:
    _check_unit_interval("eps", eps)
    _positive_float("step", step)
    integer = isinstance(steps, numbers.Integral) and not isinstance(steps, (bool, np.bool_))
    if steps is not None and not (integer and steps >= 1):
        raise ValueError(f"steps: expected an integer >= 1 (or None: the default count), got {steps!r}")


def _param_dtype(module: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next(module.parameters())
    return p.dtype, p.device


def _predict(net, x: torch.Tensor) -> torch.Tensor:
    return net.predict(x).argmax(1).cpu()


def _finish(
    net,
    name: str,
    x: torch.Tensor,
    labels: torch.Tensor,
    clean_pred: torch.Tensor,
    x_adv: dict[int, torch.Tensor],
    eps: dict[int, float],
    params: dict,
    extra: dict[int, dict] | None = None,
    notes: dict[int, str] | None = None,
    flip: str = "required",
    zero_sentinel: bool = False,
) -> list[AttackResult]:
    """Build results; verify flips with ``net.predict`` and sanity-check the adversarials.

    ``flip``: ``"required"`` (an adversarial), ``"any"`` (a control of fixed size) or
    ``"forbidden"`` (a control that must not flip) decides what counts as ``success``.
    ``zero_sentinel``: an all-zero ``x_adv`` (for a clean image that is not all zero) is the
    library's "nothing found" (foolbox's CW starts from zeros and returns them for a failed
    image): it is reported as no perturbation (``x_adv = x``, ``flipped=False``), not as the
    zero image's prediction and norm. Only for library attacks: the attacks computed here can
    legitimately clip a dark image to zero.
    """
    extra = extra or {}
    notes = notes or {}
    todo = sorted(x_adv)
    adv_pred = {}
    if todo:
        batch = torch.stack([x_adv[i] for i in todo])
        ok = torch.isfinite(batch).flatten(1).all(1)
        batch = torch.where(torch.isfinite(batch), batch, torch.zeros_like(batch)).clamp(0, 1)
        preds = _predict(net, batch)
        for j, i in enumerate(todo):
            adv_pred[i] = int(preds[j]) if bool(ok[j]) else -1
    out = []
    for i in range(x.shape[0]):
        lab, cp = int(labels[i]), int(clean_pred[i])
        base = dict(attack=name, index=i, x=x[i], label=lab, clean_pred=cp, params=dict(params))
        if cp != lab:
            note = f"clean image misclassified (pred {cp}, label {lab}): skipped"
            out.append(AttackResult.unattacked(name, i, x[i], lab, cp, note, params))
            continue
        xa = x_adv[i].detach().to(x.dtype)
        note = notes.get(i, "")
        finite = bool(torch.isfinite(xa).all())
        if not finite:
            note = note or "attack returned non-finite values"
            xa = x[i].clone()
        in_box = bool(xa.min() >= 0) and bool(xa.max() <= 1)
        if not in_box:
            rng = f"[{float(xa.min()):.3g}, {float(xa.max()):.3g}]"
            note = note or f"attack returned values outside [0, 1] ({rng})"
            xa = xa.clamp(0, 1)
        sentinel = zero_sentinel and bool((xa == 0).all()) and not bool((x[i] == 0).all())
        if sentinel:
            note = note or "attack returned an all-zero image (the library found no adversarial)"
            xa = x[i].clone()
        d = xa - x[i]
        ap = adv_pred.get(i, cp) if finite and not sentinel else cp
        flipped = ap != lab
        degenerate = float(d.abs().max()) == 0.0
        if degenerate:
            note = note or "attack returned no perturbation (x_adv == x)"
        valid = finite and in_box and not degenerate
        if flip == "required":
            success = flipped and valid
            if not success and not note:
                note = "label not flipped (checked with net.predict)"
        elif flip == "forbidden":
            success = valid and not flipped
            if not success and not note:
                note = "the control flips the label (checked with net.predict)"
        else:
            success = valid
        p = dict(params)
        p.update(extra.get(i, {}))
        out.append(
            AttackResult(
                **{**base, "params": p},
                x_adv=xa,
                delta=d,
                adv_pred=ap,
                flipped=flipped,
                success=success,
                eps=eps.get(i),
                l2=float(d.double().norm()),
                linf=float(d.abs().max()),
                note="" if success else note,
            )
        )
    return out


def _min_eps_search(
    flips: Callable[[list[int], torch.Tensor], torch.Tensor],
    idx: list[int],
    grid: torch.Tensor,
    rtol: float,
    max_bisect: int,
    progress: bool,
    desc: str,
    *,
    scan: bool = True,
) -> tuple[dict[int, float], dict[int, dict]]:
    """Smallest flipping eps per image: a flipping grid value, then bisection.

    With ``scan`` the grid is walked upwards and each image stops at its *first* flipping
    grid value (one flip test per grid value below it). Without, each image bisects the grid
    *indices* (about ``log2(len(grid) + 1)`` tests per image): the result is a grid value that
    flips while the one below it does not -- the first flipping one whenever flipping is
    monotone in ``eps``, which iterative attacks do not guarantee (``scan`` for cheap tests,
    bisection for expensive ones).

    Args:
        flips: ``flips(images, eps)`` -> bool tensor, ``eps`` one value per listed image.
        idx: images to search.
        grid: increasing eps values.
        rtol: stop bisecting when ``hi - lo <= rtol * hi``.
        max_bisect: at most this many bisection steps per image.
        progress: show a progress bar over the grid and the bisection.
        desc: the progress bar's label.
        scan: walk the grid upwards (True) or bisect its indices (False).

    Returns:
        ``eps`` (the flipping upper bracket) per image that flipped anywhere on the grid,
        and search details per image (``eps_lo``, ``grid_eps``, ``grid_index``, ``bisections``,
        ``grid_tests``).
    """
    first, tests = (_scan_grid if scan else _bisect_grid)(flips, idx, grid, progress, desc)
    lo = {i: (float(grid[j - 1]) if j > 0 else 0.0) for i, j in first.items()}
    hi = {i: float(grid[j]) for i, j in first.items()}
    count = dict.fromkeys(first, 0)
    for _ in range(max_bisect):
        active = [i for i in first if hi[i] - lo[i] > rtol * hi[i]]
        if not active:
            break
        mid = torch.tensor([0.5 * (lo[i] + hi[i]) for i in active], dtype=torch.float64)
        f = flips(active, mid)
        for i, m, hit in zip(active, mid.tolist(), f.tolist(), strict=True):
            count[i] += 1
            if hit:
                hi[i] = m
            else:
                lo[i] = m
    extra = {
        i: {
            "eps_lo": lo[i],
            "grid_eps": float(grid[first[i]]),
            "grid_index": first[i],
            "bisections": count[i],
            "grid_tests": tests[i],
        }
        for i in first
    }
    return hi, extra


def _scan_grid(flips, idx: list[int], grid: torch.Tensor, progress: bool, desc: str):
    """First flipping grid index per image (walking up), and the flip tests per image."""
    first: dict[int, int] = {}
    tests = dict.fromkeys(idx, 0)
    remaining = list(idx)
    steps = range(grid.numel())
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{desc} eps grid", leave=False)
    for j in steps:
        if not remaining:
            break
        f = flips(remaining, torch.full((len(remaining),), float(grid[j]), dtype=torch.float64))
        remaining_next = []
        for i, hit in zip(remaining, f.tolist(), strict=True):
            tests[i] += 1
            if hit:
                first[i] = j
            else:
                remaining_next.append(i)
        remaining = remaining_next
    return first, tests


def _bisect_grid(flips, idx: list[int], grid: torch.Tensor, progress: bool, desc: str):
    """A flipping grid index whose predecessor does not flip, per image, by bisecting indices.

    The bracket starts at ``(-1, n)``: index ``-1`` is ``eps = 0`` (no flip by definition) and
    ``n`` "beyond the grid" (never tested), so an image whose bracket ends at ``(n - 1, n)``
    flips nowhere on the grid.
    """
    n = grid.numel()
    lo = dict.fromkeys(idx, -1)
    hi = dict.fromkeys(idx, n)
    tests = dict.fromkeys(idx, 0)
    rounds = range(max(1, int(np.ceil(np.log2(n + 1)))))
    if progress:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc=f"{desc} eps grid", leave=False)
    for _ in rounds:
        active = [i for i in idx if hi[i] - lo[i] > 1]
        if not active:
            break
        mid = {i: (lo[i] + hi[i]) // 2 for i in active}
        f = flips(active, torch.tensor([float(grid[mid[i]]) for i in active], dtype=torch.float64))
        for i, hit in zip(active, f.tolist(), strict=True):
            tests[i] += 1
            if hit:
                hi[i] = mid[i]
            else:
                lo[i] = mid[i]
    return {i: hi[i] for i in idx if hi[i] < n}, tests


def _sign_gradient(net, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``sign(grad_x CE(net(x), y))`` for a batch (float in [0, 1] image space)."""
    module = _check_net(net)
    dtype, device = _param_dtype(module)
    xi = x.detach().to(device, dtype).clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(module(xi), labels.to(device), reduction="sum")
        (g,) = torch.autograd.grad(loss, xi)
    return g.sign().to(x.dtype).cpu()


def _fgsm_direction(net, x: torch.Tensor, labels: torch.Tensor):
    """Clean predictions, the correctly classified images and the FGSM direction of each."""
    _check_net(net)
    clean_pred = _predict(net, x)
    idx = [i for i in range(x.shape[0]) if int(clean_pred[i]) == int(labels[i])]
    direction = torch.zeros_like(x)
    if idx:
        direction[idx] = _sign_gradient(net, x[idx], labels[idx])
    return clean_pred, idx, direction


def fgsm(
    net,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float | None = None,
    eps_grid: Sequence[float] | torch.Tensor | None = None,
    rtol: float = 1e-3,
    max_bisect: int = 60,
    progress: bool = False,
) -> list[AttackResult]:
    """FGSM with the minimal flipping step (the paper's adversarial perturbation).

    The direction is ``s = sign(grad_x CE(net(x), y))`` at the clean image; the perturbed image
    is ``clip(x + eps * s, 0, 1)``. Without ``eps``, the smallest flipping ``eps`` is searched:
    the first grid value that flips, then bisection between it and the previous grid value
    (0 for the first) until ``hi - lo <= rtol * hi``; the returned ``eps`` is ``hi`` (it flips)
    and ``params["eps_lo"]`` the largest value known not to flip.

    Args:
        net: the :class:`~linstab.network.Network` (eval mode).
        images: ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)`` true labels.
        eps: a fixed step instead of the search.
        eps_grid: increasing values in (0, 1] (default: :func:`default_eps_grid`, 33 values
            geometrically spaced in [1e-4, 0.3]).
        rtol: relative bisection tolerance.
        max_bisect: bisection step limit.
        progress: show progress bars.

    Returns:
        One :class:`AttackResult` per image (``success=False`` when no grid value flips).
    """
    _check_fgsm(eps=eps, eps_grid=eps_grid, rtol=rtol, max_bisect=max_bisect)
    x, labels = check_batch(net, images, labels)
    grid = check_eps_grid(eps_grid)
    clean_pred, idx, direction = _fgsm_direction(net, x, labels)

    def perturbed(rows: list[int], e: torch.Tensor) -> torch.Tensor:
        ev = e.to(x.dtype).view(-1, 1, 1, 1)
        return (x[rows] + ev * direction[rows]).clamp(0, 1)

    def flips(rows: list[int], e: torch.Tensor) -> torch.Tensor:
        return _predict(net, perturbed(rows, e)) != labels[rows]

    params = {"rtol": rtol, "grid": [float(grid[0]), float(grid[-1]), int(grid.numel())]}
    notes: dict[int, str] = {}
    if eps is not None:
        params = {"eps": float(eps)}
        found = dict.fromkeys(idx, float(eps))
        extra: dict[int, dict] = {}
    else:
        found, extra = _min_eps_search(flips, idx, grid, rtol, max_bisect, progress, "fgsm")
        for i in idx:
            if i not in found:
                found[i] = float(grid[-1])
                notes[i] = f"no eps up to {float(grid[-1]):.3g} flips the label"
    if any(float(direction[i].abs().sum()) == 0 for i in idx):
        for i in idx:
            if float(direction[i].abs().sum()) == 0:
                notes[i] = "zero input gradient: FGSM has no direction"
    adv = {i: perturbed([i], torch.tensor([found[i]], dtype=torch.float64))[0] for i in idx}
    return _finish(net, "fgsm", x, labels, clean_pred, adv, found, params, extra, notes)


class _InputGradient(torch.autograd.Function):
    """``module(x)`` whose backward pass computes the gradient with respect to ``x`` only.

    foolbox (through eagerpy) differentiates with ``loss.backward()``, which would also
    accumulate ``.grad`` on every parameter of the user's model. Here the model's own graph is
    built inside :meth:`forward` and differentiated with ``torch.autograd.grad(out, x)`` (the
    input alone), so the parameters' ``.grad`` are never touched.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            out = module(xi)
        ctx.graph = (xi, out)
        return out.detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        xi, out = ctx.graph
        if not out.requires_grad:  # a model whose output does not depend on its input
            return torch.zeros_like(xi), None
        # the graph is kept for a caller that backpropagates twice (retain_graph=True); it is
        # freed with the caller's graph
        (g,) = torch.autograd.grad(out, xi, grad_out, retain_graph=True, allow_unused=True)
        return (torch.zeros_like(xi) if g is None else g), None


class _EvalView(torch.nn.Module):
    """Forwards to ``net.module`` for foolbox, differentiable with respect to the input only.

    The user's model was checked to be in eval mode; linstab's stateless ``Normalize`` wrapper
    may still carry the default ``training=True`` flag, which would make foolbox warn. Only this
    view's own flag is cleared (``.eval()`` is never called, nothing of the user's is changed).
    Gradients reach the input alone (:class:`_InputGradient`): no parameter's ``.grad`` is
    created or changed. Without a gradient to compute, the model runs under ``torch.no_grad``.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        # kept out of the submodules: foolbox's ``.to(device)`` on this view must not reach
        # the user's model, and no parameter of it is registered here
        object.__setattr__(self, "inner", module)
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _InputGradient.apply(x, self.inner)
        with torch.no_grad():
            return self.inner(x)


def _fmodel(net):
    import foolbox as fb

    module = _check_net(net)
    _, device = _param_dtype(module)
    return fb.PyTorchModel(_EvalView(module), bounds=(0, 1), device=device)


def _to_model(net, x: torch.Tensor) -> torch.Tensor:
    dtype, device = _param_dtype(net.module)
    return x.to(device, dtype)


def _batched_linf_pgd():
    """Foolbox's ``LinfPGD`` accepting one radius per image (``epsilon`` of shape ``(N, 1, 1, 1)``).

    Only the random start and the projection are rewritten so that they broadcast a tensor
    radius; the gradient steps (``rel_stepsize * epsilon`` times the gradient sign) are foolbox's.
    The random start's uniform noise in ``[-1, 1]`` is the attribute ``start_noise`` (shape of
    the batch) when set, so that each image's start can be drawn independently of the others.
    """
    import eagerpy as ep
    import foolbox as fb

    class BatchedLinfPGD(fb.attacks.LinfPGD):
        start_noise: torch.Tensor | None = None

        def get_random_start(self, x0, epsilon):
            if self.start_noise is None:
                return x0 + ep.uniform(x0, x0.shape, -1.0, 1.0) * epsilon
            if tuple(self.start_noise.shape) != tuple(x0.shape):
                got = tuple(self.start_noise.shape)
                raise ValueError(f"start_noise: expected shape {tuple(x0.shape)}, got {got}")
            return x0 + ep.astensor(self.start_noise.to(x0.raw)) * epsilon

        def project(self, x, x0, epsilon):
            return x0 + ep.minimum(ep.maximum(x - x0, -epsilon), epsilon)

    return BatchedLinfPGD


def pgd(
    net,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float | None = None,
    eps_grid: Sequence[float] | torch.Tensor | None = None,
    rtol: float = 0.02,
    max_bisect: int = 12,
    steps: int = 40,
    rel_stepsize: float = 0.01 / 0.3,
    random_start: bool = True,
    seed: int = 0,
    grid_search: str = "bisect",
    progress: bool = False,
) -> list[AttackResult]:
    """L-inf PGD (``foolbox.attacks.LinfPGD``), fixed ``eps`` or minimal-eps search.

    Without ``eps`` the smallest flipping L-inf radius is searched: a bisection of the grid's
    indices (6 PGD runs per image on the default 33-value grid, instead of one per grid value
    up to the flipping one when walking the grid upwards as :func:`fgsm` does), then bisection
    between the flipping grid value and the one below it to ``rtol``. Every run starts image
    ``i`` from its own seeded random point (drawn from ``seed`` and ``i``), so the search is
    deterministic and an image's result does not depend on which other images share the batch.
    PGD's success is not strictly monotone in ``eps``; the returned ``eps`` flips,
    ``params["eps_lo"]`` is the largest tested value in the last bracket that did not, and the
    grid value found is one whose predecessor does not flip (the first flipping one where
    success is monotone).

    Args:
        net: the network (eval mode).
        images: ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)``.
        eps: fixed L-inf radius (no search).
        eps_grid: search grid (default :func:`default_eps_grid`).
        rtol: relative bisection tolerance.
        max_bisect: bisection step limit.
        steps: PGD iterations per run.
        rel_stepsize: step size relative to ``eps``.
        random_start: foolbox's uniform random start in the eps-ball.
        seed: seed of the random starts (the global RNG is not used).
        grid_search: ``"bisect"`` (default) bisects the grid's indices; ``"scan"`` walks the
            grid upwards to each image's first flipping value (one PGD run per grid value
            below it: the smallest flipping grid value even where success is not monotone).
        progress: show progress bars.
    """
    import foolbox as fb

    _check_pgd(
        eps=eps,
        eps_grid=eps_grid,
        rtol=rtol,
        max_bisect=max_bisect,
        steps=steps,
        rel_stepsize=rel_stepsize,
        random_start=random_start,
        seed=seed,
        grid_search=grid_search,
    )
    x, labels = check_batch(net, images, labels)
    grid = check_eps_grid(eps_grid)
    fmodel = _fmodel(net)
    import eagerpy as ep

    attack = _batched_linf_pgd()(rel_stepsize=rel_stepsize, steps=steps, random_start=random_start)
    clean_pred = _predict(net, x)
    idx = [i for i in range(x.shape[0]) if int(clean_pred[i]) == int(labels[i])]
    cache: dict[tuple[int, float], torch.Tensor] = {}
    dev = _param_dtype(net.module)[1]

    def start_noise(i: int) -> torch.Tensor:
        # image i's own random start: the same whichever images share its batch
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        return torch.rand(x.shape[1:], generator=gen, dtype=torch.float64) * 2 - 1

    def run(rows: list[int], e: torch.Tensor) -> None:
        # one foolbox call for all rows, each with its own radius
        ev = e.to(x.dtype).view(-1, 1, 1, 1)
        if random_start:
            attack.start_noise = torch.stack([start_noise(i) for i in rows]).to(x.dtype)
        xa = attack.run(
            fmodel,
            _to_model(net, x[rows]),
            fb.criteria.Misclassification(labels[rows].to(dev)),
            epsilon=ep.astensor(_to_model(net, ev)),
        )
        xa = xa.detach().cpu().to(x.dtype)
        xa = torch.minimum(torch.maximum(xa, x[rows] - ev), x[rows] + ev).clamp(0, 1)
        for j, (i, v) in enumerate(zip(rows, e.tolist(), strict=True)):
            cache[(i, float(v))] = xa[j]

    def flips(rows: list[int], e: torch.Tensor) -> torch.Tensor:
        run(rows, e)
        batch = torch.stack([cache[(i, float(v))] for i, v in zip(rows, e.tolist(), strict=True)])
        return _predict(net, batch) != labels[rows]

    params = {"steps": steps, "rel_stepsize": rel_stepsize, "random_start": random_start, "seed": seed}
    notes: dict[int, str] = {}
    if eps is not None:
        params["eps"] = float(eps)
        found = dict.fromkeys(idx, float(eps))
        extra: dict[int, dict] = {}
        if idx:
            run(idx, torch.full((len(idx),), float(eps), dtype=torch.float64))
    else:
        params.update(
            rtol=rtol, grid=[float(grid[0]), float(grid[-1]), int(grid.numel())], grid_search=grid_search
        )
        found, extra = _min_eps_search(
            flips, idx, grid, rtol, max_bisect, progress, "pgd", scan=grid_search == "scan"
        )
        missing = [i for i in idx if i not in found]
        top = float(grid[-1])
        for i in missing:
            found[i] = top
            notes[i] = (
                f"no eps up to {top:.3g} flips the label"
                if grid_search == "scan"
                else f"no flip at the grid values tested, the largest ({top:.3g}) included"
            )
        if missing:
            run(missing, torch.full((len(missing),), float(grid[-1]), dtype=torch.float64))
    adv = {i: cache[(i, found[i])] for i in idx}
    return _finish(net, "pgd", x, labels, clean_pred, adv, found, params, extra, notes)


def _minimization_attack(net, name: str, attack, x, labels, params) -> list[AttackResult]:
    import foolbox as fb

    fmodel = _fmodel(net)
    clean_pred = _predict(net, x)
    idx = [i for i in range(x.shape[0]) if int(clean_pred[i]) == int(labels[i])]
    adv: dict[int, torch.Tensor] = {}
    notes: dict[int, str] = {}
    if idx:
        dev = _param_dtype(net.module)[1]
        crit = fb.criteria.Misclassification(labels[idx].to(dev))
        raw, clipped, _ = attack(fmodel, _to_model(net, x[idx]), crit, epsilons=None)
        clipped = clipped.detach().cpu().to(x.dtype)
        for j, i in enumerate(idx):
            adv[i] = clipped[j]
    return _finish(net, name, x, labels, clean_pred, adv, {}, params, None, notes, zero_sentinel=True)


def deepfool(
    net,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 50,
    candidates: int | None = 10,
    overshoot: float = 0.02,
    loss: str = "logits",
    progress: bool = False,
) -> list[AttackResult]:
    """L2 DeepFool (``foolbox.attacks.L2DeepFoolAttack``); flips re-checked with ``net.predict``.

    Args:
        net: the network (eval mode).
        images: ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)``.
        steps: maximum DeepFool iterations.
        candidates: number of top classes considered (``None``: all).
        overshoot: DeepFool's overshoot factor.
        loss: ``"logits"`` or ``"crossentropy"``.
        progress: unused (one batched call).
    """
    import foolbox as fb

    _check_deepfool(steps=steps, candidates=candidates, overshoot=overshoot, loss=loss)
    x, labels = check_batch(net, images, labels)
    attack = fb.attacks.L2DeepFoolAttack(steps=steps, candidates=candidates, overshoot=overshoot, loss=loss)
    params = {"steps": steps, "candidates": candidates, "overshoot": overshoot, "loss": loss}
    return _minimization_attack(net, "deepfool", attack, x, labels, params)


def carlini_wagner(
    net,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    binary_search_steps: int = 5,
    steps: int = 200,
    stepsize: float = 0.01,
    confidence: float = 0.0,
    initial_const: float = 0.01,
    abort_early: bool = True,
    progress: bool = False,
) -> list[AttackResult]:
    """L2 Carlini-Wagner (``foolbox.attacks.L2CarliniWagnerAttack``).

    The defaults (5 binary-search steps of 200 Adam steps, ``initial_const=0.01``) are cheaper
    than foolbox's (9 x 10000, 0.001) so that a CPU run stays short; the minimal L2 found is
    therefore an upper bound on the true minimal CW perturbation. Flips are re-checked with
    ``net.predict``.

    Args:
        net: the network (eval mode).
        images: ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)``.
        binary_search_steps: searches over the trade-off constant.
        steps: Adam steps per constant.
        stepsize: Adam learning rate.
        confidence: required logit margin.
        initial_const: first trade-off constant.
        abort_early: stop a constant's optimization when the loss stalls.
        progress: unused (one batched call).
    """
    import foolbox as fb

    _check_net(net)
    params = {
        "binary_search_steps": binary_search_steps,
        "steps": steps,
        "stepsize": stepsize,
        "confidence": confidence,
        "initial_const": initial_const,
        "abort_early": abort_early,
    }
    _check_cw(**params)
    x, labels = check_batch(net, images, labels)
    attack = fb.attacks.L2CarliniWagnerAttack(**params)
    return _minimization_attack(net, "cw", attack, x, labels, dict(params))


def fgsm_half(
    net,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    scale: float = 0.5,
    eps_grid: Sequence[float] | torch.Tensor | None = None,
    rtol: float = 1e-3,
    max_bisect: int = 60,
    progress: bool = False,
) -> list[AttackResult]:
    """Control: the FGSM direction at ``scale`` times the minimal flipping ``eps`` (no flip).

    The minimal ``eps`` is searched exactly as by :func:`fgsm` (same direction, grid and
    bisection, so the same value); the image is ``clip(x + scale * eps * s, 0, 1)``. With
    ``scale < 1`` the label must not flip (checked with ``net.predict``; an image whose label
    flips is reported with ``success=False``). ``params["eps_min"]`` is the minimal ``eps``.

    Args:
        net: the network (eval mode).
        images: ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)``.
        scale: fraction of the minimal flipping ``eps``, in (0, 1).
        eps_grid: search grid (default :func:`default_eps_grid`).
        rtol: relative bisection tolerance.
        max_bisect: bisection step limit.
        progress: show progress bars.
    """
    _check_fgsm_half(scale=scale, eps_grid=eps_grid, rtol=rtol, max_bisect=max_bisect)
    x, labels = check_batch(net, images, labels)
    base = fgsm(net, x, labels, eps_grid=eps_grid, rtol=rtol, max_bisect=max_bisect, progress=progress)
    clean_pred, idx, direction = _fgsm_direction(net, x, labels)
    adv, eps, extra, notes = {}, {}, {}, {}
    for i in idx:
        r = base[i]
        if not r.success:
            notes[i] = f"no minimal FGSM eps ({r.note})"
            adv[i] = x[i].clone()
            continue
        eps[i] = scale * float(r.eps)
        adv[i] = (x[i] + eps[i] * direction[i]).clamp(0, 1)
        extra[i] = {"eps_min": float(r.eps)}
    params = {"scale": scale, "rtol": rtol}
    return _finish(net, "fgsm-half", x, labels, clean_pred, adv, eps, params, extra, notes, flip="forbidden")


def fgsm_fixed(
    net, images: torch.Tensor, labels: torch.Tensor, *, eps: float = KURAKIN_EPS, progress: bool = False
) -> list[AttackResult]:
    """Control: FGSM with a fixed budget ``eps`` (default ``8/255``), flipped or not ([7]).

    Args:
        net: the network (eval mode).
        images: ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)``.
        eps: the L-inf step, in (0, 1].
        progress: unused (one batched call).
    """
    _check_fgsm_fixed(eps=eps)
    x, labels = check_batch(net, images, labels)
    clean_pred, idx, direction = _fgsm_direction(net, x, labels)
    adv = {i: (x[i] + eps * direction[i]).clamp(0, 1) for i in idx}
    found = dict.fromkeys(idx, float(eps))
    return _finish(net, "fgsm-fixed", x, labels, clean_pred, adv, found, {"eps": float(eps)}, flip="any")


def bim(
    net,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float = KURAKIN_EPS,
    step: float = 1 / 255,
    steps: int | None = None,
    progress: bool = False,
) -> list[AttackResult]:
    """Control: the basic iterative method of [7] (iterative FGSM) at a fixed budget.

    ``x_{j+1} = clip_{x, eps}(x_j + step * sign(grad_x CE(x_j, y)))`` (projection on the L-inf
    ball of radius ``eps`` around ``x`` and on [0, 1]), ``steps`` iterations (default
    ``min(eps*255 + 4, 1.25*eps*255)`` rounded up, Kurakin et al.), all of them run whether or
    not the label flips (no early stop: the perturbation is the one of the budget).

    Args:
        net: the network (eval mode).
        images: ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)``.
        eps: the L-inf budget, in (0, 1].
        step: the step size.
        steps: the number of iterations.
        progress: unused.
    """
    _check_bim(eps=eps, step=step, steps=steps)
    steps = int(np.ceil(min(eps * 255 + 4, 1.25 * eps * 255))) if steps is None else int(steps)
    x, labels = check_batch(net, images, labels)
    clean_pred = _predict(net, x)
    idx = [i for i in range(x.shape[0]) if int(clean_pred[i]) == int(labels[i])]
    adv: dict[int, torch.Tensor] = {}
    if idx:
        x0 = x[idx]
        xa = x0.clone()
        for _ in range(steps):
            xa = xa + step * _sign_gradient(net, xa, labels[idx])
            xa = torch.minimum(torch.maximum(xa, x0 - eps), x0 + eps).clamp(0, 1)
        adv = {i: xa[j] for j, i in enumerate(idx)}
    found = dict.fromkeys(idx, float(eps))
    params = {"eps": float(eps), "step": float(step), "steps": steps}
    return _finish(net, "bim", x, labels, clean_pred, adv, found, params, flip="any")


_FUNCS: dict[str, Callable[..., list[AttackResult]]] = {
    "fgsm": fgsm,
    "pgd": pgd,
    "deepfool": deepfool,
    "cw": carlini_wagner,
    "fgsm-half": fgsm_half,
    "fgsm-fixed": fgsm_fixed,
    "bim": bim,
}


_CHECKS: dict[str, Callable[..., None]] = {
    "fgsm": _check_fgsm,
    "pgd": _check_pgd,
    "deepfool": _check_deepfool,
    "cw": _check_cw,
    "fgsm-half": _check_fgsm_half,
    "fgsm-fixed": _check_fgsm_fixed,
    "bim": _check_bim,
}

_NOT_PARAMS = ("net", "images", "labels")


def check_attack_params(attack: str, params: dict | None = None) -> dict:
    """Check an attack's name and keyword parameters without running it (no model needed).

    The checks are the ones the attack itself makes, so a call that passes here is not refused
    by the attack later; use it to refuse bad settings before any work.

    Args:
        attack: one of :data:`ATTACKS` or :data:`CONTROLS`.
        params: keyword arguments for the attack (``None``: the defaults).

    Returns:
        The attack's full keyword arguments, defaults filled in.

    Raises:
        ValueError: for an unknown attack name or a parameter value out of range (the message
            names the parameter, what was expected and what arrived).
        TypeError: for a parameter the attack does not take, or a value of the wrong type.
    """
    if not isinstance(attack, str) or attack not in _FUNCS:
        raise ValueError(f"unknown attack {attack!r}; expected one of {', '.join((*ATTACKS, *CONTROLS))}")
    params = dict(params or {})
    sig = inspect.signature(_FUNCS[attack])
    accepted = [n for n in sig.parameters if n not in _NOT_PARAMS]
    unknown = sorted(n for n in params if n not in accepted)
    if unknown:
        raise TypeError(
            f"{attack}: unknown parameter(s) {', '.join(unknown)}; expected some of {', '.join(accepted)}"
        )
    full = {n: params.get(n, sig.parameters[n].default) for n in accepted}
    _CHECKS[attack](**{n: v for n, v in full.items() if n != "progress"})
    return full


def run_attack(net, images, labels, attack: str, **params) -> list[AttackResult]:
    """Run an attack (one of :data:`ATTACKS`) or a control (:data:`CONTROLS`) by name.

    The parameters are checked (:func:`check_attack_params`) before anything runs.

    Raises:
        ValueError: for an unknown attack name (the valid names are listed) or a bad parameter.
        TypeError: for a parameter the attack does not take.
    """
    check_attack_params(attack, params)
    n = int(images.shape[0]) if isinstance(images, torch.Tensor) and images.ndim == 4 else 1
    with timed("attack", attack=attack, n_images=n):
        return _FUNCS[attack](net, images, labels, **params)
