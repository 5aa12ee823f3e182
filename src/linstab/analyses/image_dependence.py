"""How much the spectrum of a unit depends on the image, measured against changes of the unit.

The paper says the spectra "differ only slightly for different input images", "in stark
contrast" to changes of the architecture (Sections 3.2, 3.4 and 4). That is a comparison, so it
is tested as one: on the same unit, the distance between the spectra at two images is compared
with the distance caused by a small change of the unit at the same image -- the skip scaled from
``alpha = 1`` to ``1.25``, or the weights interpolated from ``t = 1`` to ``0.75`` (eq. 3).

Distance of two sorted spectra ``a``, ``b`` of one unit (same length):
``||a - b||_2 / ((||a||_2 + ||b||_2) / 2)`` (:func:`spectrum_distance`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def spectrum_distance(a, b) -> float:
    """Relative L2 distance of two sorted spectra of the same unit (0 when both are zero).

    Raises:
        ValueError: for spectra of different lengths, empty or non-finite ones.
    """
    x = np.sort(np.asarray(a, dtype=np.float64).ravel())[::-1]
    y = np.sort(np.asarray(b, dtype=np.float64).ravel())[::-1]
    if x.shape != y.shape:
        raise ValueError(f"spectra of different lengths: {x.size} and {y.size}")
    if x.size == 0:
        raise ValueError("spectra: expected singular values, got two empty spectra")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("spectra: expected finite singular values, got NaN or infinite ones")
    scale = 0.5 * (np.linalg.norm(x) + np.linalg.norm(y))
    return float(np.linalg.norm(x - y) / scale) if scale > 0 else 0.0


def image_vs_architecture(
    trained: Sequence,
    alpha: Sequence,
    interpolated: Sequence[Sequence],
    alpha_value: float,
) -> list[dict]:
    """Per image: distance to the other images against distance to a changed unit.

    Args:
        trained: the unit's spectrum at each image (``n_images`` arrays).
        alpha: the spectrum of the unit with its skip scaled by ``alpha_value``, per image.
        interpolated: per image, the spectra of the unit with interpolated weights, one per seed.
        alpha_value: the skip scale of ``alpha``.

    Returns:
        one dict per image: ``d_image`` (median distance to the other images' spectra),
        ``d_alpha``, ``d_t`` (per seed, a list) and ``d_t_mean``, ``d_arch`` (the smaller of
        ``d_alpha`` and ``d_t_mean``: the smaller architecture change), ``ratio`` per seed
        (``d_image / min(d_alpha, d_t[seed])``) and ``d_scale``: the distance of the scaled
        unit's spectrum from ``alpha_value`` times the trained one (0 if scaling the skip
        scaled the whole spectrum).

    Raises:
        ValueError: with fewer than 2 images or mismatched lengths.
    """
    n = len(trained)
    if n < 2:
        raise ValueError(f"need at least 2 images to compare images, got {n}")
    if len(alpha) != n or len(interpolated) != n:
        raise ValueError("trained, alpha and interpolated need one entry per image")
    out = []
    for i in range(n):
        d_img = float(np.median([spectrum_distance(trained[i], trained[j]) for j in range(n) if j != i]))
        d_a = spectrum_distance(trained[i], alpha[i])
        d_t = [spectrum_distance(trained[i], s) for s in interpolated[i]]
        d_t_mean = float(np.mean(d_t)) if d_t else math.nan
        arch = [min(d_a, t) for t in d_t] if d_t else [d_a]
        out.append(
            {
                "d_image": d_img,
                "d_alpha": d_a,
                "d_t": d_t,
                "d_t_mean": d_t_mean,
                "d_arch": min(d_a, d_t_mean) if d_t else d_a,
                "ratio": [d_img / a if a > 0 else math.inf for a in arch],
                "d_scale": spectrum_distance(
                    alpha[i], alpha_value * np.asarray(trained[i], dtype=np.float64)
                ),
            }
        )
    return out


def model_vs_architecture(
    trained_a: Sequence, trained_b: Sequence, rows_a: list[dict], rows_b: list[dict]
) -> list[dict]:
    """Per image: distance between two networks' spectra of corresponding units against the
    distance caused by an architecture change (Sec. 3.2: "no significant difference ... between
    ResNet-56 and ResNet-110").

    Args:
        trained_a: the first network's unit spectrum at each image.
        trained_b: the second network's spectrum of the corresponding unit (same shape), per image.
        rows_a: :func:`image_vs_architecture` rows of the first network (same images).
        rows_b: the same for the second network.

    Returns:
        one dict per image: ``d_model`` (distance of the two networks' spectra), ``d_image``
        and ``d_arch`` (means of the two networks' values) and ``ratio`` = ``d_model / d_arch``.

    Raises:
        ValueError: for mismatched lengths.
    """
    n = len(trained_a)
    if not (len(trained_b) == len(rows_a) == len(rows_b) == n):
        raise ValueError("trained_a, trained_b, rows_a and rows_b need one entry per image")
    out = []
    for i in range(n):
        d_model = spectrum_distance(trained_a[i], trained_b[i])
        d_image = 0.5 * (rows_a[i]["d_image"] + rows_b[i]["d_image"])
        d_arch = 0.5 * (rows_a[i]["d_arch"] + rows_b[i]["d_arch"])
        out.append(
            {
                "d_model": d_model,
                "d_image": d_image,
                "d_arch": d_arch,
                "ratio": d_model / d_arch if d_arch > 0 else math.inf,
            }
        )
    return out
