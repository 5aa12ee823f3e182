"""Figure 4 (projections): titles of neighbouring panels stay apart."""

from __future__ import annotations

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from linstab.analyses.perturbations import analyze
from linstab.plots.perturbations import projections_figure
from tests.factories import make_net, tiny_image


def test_projection_panel_titles_do_not_overlap(one_thread):
    net = make_net("option-A", units=3)
    stage = len(net.stages)
    addrs = [net.unit(stage, i).address for i in (2, 3)]
    x = tiny_image(1).unsqueeze(0)  # an image whose label FGSM flips
    ids = ["cifar10-jpeg-test-1234 (lossy)"]  # a long image id, as jpeg: selections have
    res = analyze(
        net, x, None, ["fgsm", "random"], ids=ids, dtype=torch.float64, k=4,
        spectral_units=addrs, keep_alphas=addrs, progress=False,
    )  # fmt: skip
    fig = projections_figure(res.rows, res.alphas, stage=stage, units=addrs, attack="fgsm", title=net.name)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    boxes = [
        ax.title.get_window_extent(canvas.get_renderer())
        for ax in fig.axes
        if ax.get_title().startswith("unit ")
    ]
    assert len(boxes) == 2
    left, right = sorted(boxes, key=lambda b: b.x0)
    assert left.x1 < right.x0
    assert ids[0] in fig.get_suptitle()  # the bottom row's image is named
