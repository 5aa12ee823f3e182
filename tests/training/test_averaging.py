"""Stochastic weight averaging: the running mean of the weights and the batch-norm statistics."""

from __future__ import annotations

import pytest
import torch

from linstab import models, training
from linstab.training import WeightAverage, recompute_bn_statistics

MEAN, STD = models.CIFAR10_MEAN_PYTORCHCV, models.CIFAR10_STD_PYTORCHCV


def _net(seed: int, channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = models.CifarResNet(8, "B")
    return net.to(memory_format=torch.channels_last) if channels_last else net


def test_weight_average_is_the_mean_of_the_updates_and_round_trips():
    nets = [_net(s) for s in range(3)]
    avg = WeightAverage(nets[0])
    with pytest.raises(ValueError, match="no weights averaged"):
        avg.copy_to(_net(9))
    for n in nets:
        avg.update(n)
    assert avg.count == 3
    out = _net(7, channels_last=True)
    buffers = {k: v.clone() for k, v in out.named_buffers()}
    avg.copy_to(out)
    params = [dict(n.named_parameters()) for n in nets]
    for k, p in out.named_parameters():
        expected = torch.stack([q[k].detach().double() for q in params]).mean(0)
        torch.testing.assert_close(p.detach().double(), expected, rtol=0, atol=1e-7)
        assert p.dtype == torch.float32
    for k, b in out.named_buffers():  # statistics are not averaged
        assert torch.equal(b, buffers[k]), k
    again = WeightAverage(nets[0])
    again.load_state_dict(avg.state_dict())
    assert again.count == 3
    for k in avg.mean:
        assert torch.equal(again.mean[k], avg.mean[k])
    other = models.CifarResNet(14, "B")
    with pytest.raises(ValueError, match="differ"):
        avg.update(other)
    with pytest.raises(ValueError, match="another architecture"):
        WeightAverage(other).load_state_dict(avg.state_dict())


@pytest.mark.parametrize("channels_last", [False, True])
def test_recomputed_bn_statistics_are_the_batch_average(channels_last):
    """The first BN's running mean becomes the mean of its input over all images (equal
    batches); the old statistics, the momentum and the eval mode leave no trace."""
    net = _net(0, channels_last).eval()
    bn = net.features.init_block.bn
    bn.running_mean.fill_(5.0)
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen)
    assert recompute_bn_statistics(net, images, MEAN, STD, batch_size=16) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()
    )
    with torch.no_grad():
        conv = net.features.init_block.conv(training.normalize(images, MEAN, STD))
    torch.testing.assert_close(bn.running_mean, conv.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and not net.training
    flipped = [1, 3]  # the transform's images replace the given ones
    recompute_bn_statistics(net, images, MEAN, STD, batch_size=16, transform=lambda b: b.flip(*flipped))
    with torch.no_grad():
        conv = net.features.init_block.conv(training.normalize(images.flip(*flipped), MEAN, STD))
    torch.testing.assert_close(bn.running_mean, conv.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="transform must be callable"):
        recompute_bn_statistics(net, images, MEAN, STD, transform="augment")
    with pytest.raises(ValueError, match="non-empty"):
        recompute_bn_statistics(net, images[:0], MEAN, STD)
    with pytest.raises(ValueError, match="batch_size"):
        recompute_bn_statistics(net, images, MEAN, STD, batch_size=0)


def test_recomputed_bn_statistics_do_not_depend_on_a_class_sorted_order():
    """Images stored class by class (as CIFAR-10's training set is) are visited in a random
    order: the variances are those of mixed batches, the same as for the shuffled images, not
    the smaller within-class ones of single-class batches."""
    net = _net(0).eval()
    gen = torch.Generator().manual_seed(3)
    dark = torch.randint(0, 60, (48, 3, 32, 32), dtype=torch.uint8, generator=gen)
    bright = torch.randint(190, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=gen)
    sorted_images = torch.cat([dark, bright])  # two "classes", one after the other
    shuffled = sorted_images[torch.randperm(96, generator=gen)]
    var = net.features.init_block.bn.running_var

    def seed1():
        return torch.Generator().manual_seed(1)

    recompute_bn_statistics(net, sorted_images, MEAN, STD, batch_size=16, generator=seed1())
    a = var.clone()
    recompute_bn_statistics(net, shuffled, MEAN, STD, batch_size=16, generator=seed1())
    torch.testing.assert_close(a, var, rtol=0.15, atol=0)
    with torch.no_grad():
        conv = net.features.init_block.conv(training.normalize(sorted_images, MEAN, STD))
    within = torch.stack([conv[:48].var(dim=(0, 2, 3)), conv[48:].var(dim=(0, 2, 3))]).mean(0)
    torch.testing.assert_close(a, conv.var(dim=(0, 2, 3)), rtol=0.15, atol=0)  # mixed batches
    assert float(a.sum()) > 3 * float(within.sum())  # single-class batches would give `within`
    recompute_bn_statistics(net, sorted_images, MEAN, STD, batch_size=16, generator=seed1())
    assert torch.equal(var, a)  # the generator makes it reproducible
