"""Row-streaming executor: streamed output equals the whole forward pass; unsupported networks are refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tmln.models.classifier import build_classifier
from tmln.tumour.dense import dense_form
from tmln.tumour.stream import NotStreamable, StreamedNet


def _randomise_bn(net):
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net


def _stream(net, x, band: int, chunk: int):
    h, w = x.shape[2:]
    bands = iter([x[:, :, i : i + band] for i in range(0, h, band)])
    parts = list(net.run(bands, h, w, chunk=chunk))
    assert [r for r, _ in parts] == list(range(0, parts[-1][0] + 1, chunk))
    return torch.cat([y for _, y in parts], 2)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "densenet121"])
def test_streamed_equals_whole_forward(arch):
    """Every architecture the dense engine accepts: streamed in odd-sized bands and chunks, the
    output equals one forward pass over the whole strip (rel. tol 1e-5)."""
    torch.manual_seed(0)
    form = dense_form(_randomise_bn(build_classifier(arch)).eval())
    net = StreamedNet(form)
    net.check()
    x = torch.randn(1, 3, 416, 160)
    with torch.inference_mode():
        full = form(x)
        for band, chunk in ((64, 1), (97, 3), (416, 50)):
            out = _stream(net, x, band, chunk)
            assert out.shape == full.shape
            assert (out - full).abs().max() <= 1e-5 * full.abs().max() + 1e-6


def test_inplace_operations_do_not_corrupt_shared_rows():
    """A residual block written with in-place ReLU and ``+=``: the executor copies them out of place."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 3, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.relu(self.a(x))
            y = self.b(y)
            y += x
            return torch.relu_(y)

    torch.manual_seed(0)
    block = Block().eval()
    net = StreamedNet(block)
    net.check()
    x = torch.randn(1, 3, 50, 20)
    with torch.inference_mode():
        assert torch.allclose(_stream(net, x, 7, 2), block(x), atol=1e-6)


@pytest.mark.parametrize("layer", [nn.AdaptiveAvgPool2d(4), nn.MaxPool2d(3, 2, ceil_mode=True),
                                   nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")])
def test_networks_that_mix_rows_are_refused(layer):
    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), layer).eval()
    with pytest.raises(NotStreamable):
        s = StreamedNet(net)
        s.check()


def test_too_short_strip_is_an_error():
    net = StreamedNet(nn.Sequential(nn.Conv2d(3, 3, 7, stride=4)).eval())
    with pytest.raises(ValueError, match="too short"):
        list(net.run(iter([torch.zeros(1, 3, 4, 16)]), 4, 16))


def test_relu_is_fused_into_the_layer_it_alone_follows_with_the_same_output():
    """Each ReLU that alone consumes a float convolution or an addition is applied in place to that
    fresh output (ResNet-18: 17); the streamed output stays the unfused one's, bit for bit."""
    import torchvision

    from tmln.tumour import stream as S

    torch.manual_seed(0)
    dense = dense_form(torchvision.models.resnet18(weights=None, num_classes=2).eval())
    net = StreamedNet(dense)
    assert net.fused == 17  # stem, 8 blocks x (conv1 -> relu, add -> relu); 8 additions into conv2's rows
    x = torch.randn(1, 3, 200, 160)
    original = S._fuse_in_place
    try:
        S._fuse_in_place = lambda nodes: 0
        plain = StreamedNet(dense)
    finally:
        S._fuse_in_place = original
    assert plain.fused == 0
    with torch.no_grad():
        a = torch.cat([r for _, r in net.run(iter([x[:, :, i : i + 50] for i in range(0, 200, 50)]), 200, 160)], 2)
        b = torch.cat([r for _, r in plain.run(iter([x[:, :, i : i + 50] for i in range(0, 200, 50)]), 200, 160)], 2)
    assert torch.equal(a, b)
    net.check()


def _without_composition(module):
    from tmln.tumour import stream as S

    original = S._compose_pools
    try:
        S._compose_pools = lambda nodes: 0
        return StreamedNet(module)
    finally:
        S._compose_pools = original


def test_resnet_stem_pooling_is_composed_with_the_same_output():
    """The stem's convolution (+ fused ReLU) and max pooling run as one window that recomputes the
    pooling's one-row overlap instead of keeping it: same rows, bit for bit, as the uncomposed
    executor at every strip height modulo the stem's stride 4 (the rows beyond the strip differ)."""
    import torchvision

    torch.manual_seed(0)
    dense = dense_form(_randomise_bn(torchvision.models.resnet18(weights=None, num_classes=2)).eval())
    net, plain = StreamedNet(dense), _without_composition(dense)
    assert (net.composed, plain.composed) == (1, 0)
    stem = next(n for n in net.nodes if n.kind == "window" and not n.conv)
    assert (stem.k, stem.s, stem.p) == (11, 4, 5)  # 7x7/2 pad 3, then 3x3/2 pad 1
    net.check()
    with torch.no_grad():
        for h in (161, 162, 163, 164):
            x = torch.randn(1, 3, h, 96)
            for band, chunk in ((29, 1), (h, 2)):
                assert torch.equal(_stream(net, x, band, chunk), _stream(plain, x, band, chunk))


@pytest.mark.parametrize("layers", [
    lambda: [nn.Conv2d(3, 5, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)],
    lambda: [nn.Conv2d(3, 5, 3, padding=1), nn.MaxPool2d(3, 2, 1)],  # no ReLU: negative values, -inf padding
    lambda: [nn.Conv2d(3, 5, 5, stride=3, padding=2), nn.AvgPool2d(3, 2, 1)],  # zero padding counted
    lambda: [nn.Conv2d(3, 5, 4, stride=2, padding=0), nn.ReLU(), nn.MaxPool2d(2, 2)],
    lambda: [nn.Conv2d(3, 5, 3, padding=4, dilation=4), nn.MaxPool2d(5, 3, 2)],
])
def test_composed_pooling_equals_the_whole_forward_at_the_strip_edges(layers):
    """Composition handles the rows beyond the strip for any kernel, stride, padding and dilation:
    streamed output equals the whole forward pass at heights of every residue of the stride."""
    torch.manual_seed(0)
    module = nn.Sequential(*layers(), nn.Conv2d(5, 2, 3, padding=1)).eval()
    net = StreamedNet(module)
    assert net.composed == 1
    net.check()
    with torch.no_grad():
        for h in range(60, 67):
            x = torch.randn(1, 3, h, 40)
            full = module(x)
            for band, chunk in ((7, 1), (h, 3)):
                out = _stream(net, x, band, chunk)
                assert out.shape == full.shape
                assert (out - full).abs().max() <= 1e-5 * full.abs().max() + 1e-6


def test_pooling_of_a_convolution_read_elsewhere_is_not_composed():
    """A convolution whose rows another layer also reads (a U-Net's skip) is kept, not recomputed."""

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(3, 1, 1)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.pool(y) + y

    net = StreamedNet(Skip().eval())
    assert net.composed == 0
    net.check()
