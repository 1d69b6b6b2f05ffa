"""D4 weight tying (tmln.models.equivariant): the group tables, exact invariance of the tied
network's output to the 8 turns and flips, and its plain export giving the same outputs."""

import numpy as np
import pytest
import torch
import torchvision

from tmln.models.equivariant import INV, MUL, ORDER, D4ResNet, TiedConv2d, act, act_torch, plain_state_dict


def _randomise_batch_norm(model):
    g = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def test_group_tables():
    a = np.random.default_rng(0).normal(size=(5, 5))
    images = [act(g, a) for g in range(ORDER)]
    assert all(not np.array_equal(images[g], images[h]) for g in range(ORDER) for h in range(g))  # 8 distinct
    for g in range(ORDER):
        assert np.array_equal(act(INV[g], act(g, a)), a)
        for h in range(ORDER):
            assert np.array_equal(act(MUL[g, h], a), act(g, act(h, a)))
    assert np.array_equal(act_torch(5, torch.from_numpy(a.copy())).numpy(), act(5, a))


@pytest.mark.parametrize("lifting", [True, False])
def test_tied_convolution_turns_and_permutes_its_features(lifting):
    """f(turn_k x) = turn_k(f(x)) with orientation g read from k^-1 g, for every element k."""
    torch.manual_seed(0)
    in_c = 3 if lifting else 2
    conv = TiedConv2d(in_c, 4, 3, padding=1, lifting=lifting).double()
    x = torch.randn(1, in_c if lifting else in_c * ORDER, 9, 9, dtype=torch.float64)

    def turn(k, features, grouped):
        f = act_torch(k, features)
        if not grouped:
            return f
        n, c8, h, w = f.shape
        f = f.reshape(n, c8 // ORDER, ORDER, h, w)
        return f[:, :, torch.as_tensor(MUL[INV[k]])].reshape(n, c8, h, w)  # orientation g <- k^-1 g

    y = conv(x)
    assert y.shape == (1, 4 * ORDER, 9, 9)
    for k in range(ORDER):
        torch.testing.assert_close(conv(turn(k, x, not lifting)), turn(k, y, True), rtol=0, atol=1e-12)


def test_output_ignores_turns_and_flips_and_the_plain_export_is_the_same_network():
    torch.manual_seed(0)
    tied = D4ResNet("resnet18", 1).double()
    _randomise_batch_norm(tied)
    tied.eval()
    x = torch.randn(2, 3, 97, 97, dtype=torch.float64)  # odd at every strided layer: exact invariance
    out = tied(x)
    assert out.shape == (2, 1) and (out[0] - out[1]).abs().item() > 1e-3
    for g in range(1, ORDER):
        torch.testing.assert_close(tied(act_torch(g, x)), out, rtol=0, atol=1e-10)
    plain = torchvision.models.resnet18(num_classes=1).double().eval()
    plain.load_state_dict(plain_state_dict(tied), strict=True)
    torch.testing.assert_close(plain(x), out, rtol=0, atol=1e-10)
    x96 = torch.randn(3, 3, 96, 96, dtype=torch.float64)
    torch.testing.assert_close(plain(x96), tied(x96), rtol=0, atol=1e-10)
    # an eighth of the free parameters, the plain network's size once expanded
    assert sum(p.numel() for p in tied.parameters()) * 7 < sum(p.numel() for p in plain.parameters())


def test_training_mode_batch_norm_shares_statistics_over_orientations():
    torch.manual_seed(0)
    tied = D4ResNet("resnet18", 1).train()
    x = torch.randn(4, 3, 65, 65)
    outs = torch.cat([tied(act_torch(g, x)) for g in range(ORDER)])
    # batch statistics of a turned batch equal the original's, so the output is invariant in training too
    torch.testing.assert_close(outs, tied(x).repeat(ORDER, 1), rtol=0, atol=1e-4)
    assert tied.bn1.running_mean.shape == (8,)


def test_unsupported_architecture():
    with pytest.raises(ValueError, match="resnet18"):
        D4ResNet("resnet50")
    plain = torchvision.models.resnet18(num_classes=1)
    assert plain_state_dict(plain).keys() == plain.state_dict().keys()


def test_channels_last_memory_as_training_uses_on_gpus():
    """``prepare_model`` turns models channels-last on GPUs: the tied network takes it, same outputs."""
    from tmln.train.common import DistContext, prepare_model

    torch.manual_seed(0)
    tied = D4ResNet("resnet18", 1).eval()
    x = torch.randn(2, 3, 64, 64)
    expected = tied(x)
    moved = prepare_model(tied, DistContext(), channels_last=True)
    out = moved(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in moved.parameters())
