"""First five singular values of unit 1.5 of ResNet-56 at default image 0, with SciPy's svds.

Run:  LINSTAB_WEIGHTS_DIR=../shared/weights python examples/unit_svds.py

The matrix-free operator goes to ARPACK through ``to_scipy()``; each singular triplet is
checked (``||J v - s u||`` and ``||J^T u - s v||`` relative to ``s``), so the script fails
loudly if anything is off. (``linstab spectrum`` has the fast exact and top-k paths.)
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse.linalg as spla
import torch

import linstab


def main() -> np.ndarray:
    net = linstab.load_model("resnet56-akamaster")
    images, labels = linstab.default_images([0])
    lin = net.linearize(images[0], dtype=torch.float64)
    J = lin.unit(1, 5)
    A = J.to_scipy()
    t = time.perf_counter()
    u, s, vt = spla.svds(A, k=5, which="LM", random_state=0, tol=1e-10)
    dt = time.perf_counter() - t
    order = np.argsort(s)[::-1]
    s, u, v = s[order], u[:, order], vt[order].T
    print(f"unit 1.5 of {net.name} at image 0 (n = {J.shape[1]}), svds in {dt:.1f} s")
    for i, si in enumerate(s, start=1):
        r1 = np.linalg.norm(A @ v[:, i - 1] - si * u[:, i - 1]) / si
        r2 = np.linalg.norm(A.rmatvec(u[:, i - 1]) - si * v[:, i - 1]) / si
        print(f"  sigma_{i} = {si:.10f}   residuals {r1:.1e} {r2:.1e}")
        assert r1 < 1e-8 and r2 < 1e-8, "singular triplet residual too large"
    assert np.all(np.diff(s) <= 0) and s[-1] > 1.0, "expected the top singular values above 1"
    return s


if __name__ == "__main__":
    main()
