import pytest
import torch

from napari_dsp.core.nets import (
    CHANNELS,
    EnsembleGenerator,
    FeatureNet,
    VolumeGenerator,
    count_parameters,
    make_noise,
    z_stages,
)


def spec_parameter_count(out_channels, channels=CHANNELS, noise=2):
    """The research generator (DIP "skip" net without skips), counted by hand:
    conv = cin*cout*k*k + cout, BN = 2*c."""
    conv = lambda cin, cout, k: cin * cout * k * k + cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total, cin = 0, noise
    for i, c in enumerate(channels):
        total += conv(cin, c, 3) + bn(c) + conv(c, c, 3) + bn(c)  # down block
        deeper = channels[i + 1] if i + 1 < len(channels) else c
        total += bn(deeper) + conv(deeper, c, 3) + bn(c) + conv(c, c, 1) + bn(c)  # up block
        cin = c
    return total + conv(channels[0], out_channels, 1)  # head


@pytest.mark.parametrize("c", [1, 3])
def test_parameter_count_matches_the_specification(c):
    net = EnsembleGenerator(1, c, [0])
    assert count_parameters(net) == spec_parameter_count(c)
    assert count_parameters(EnsembleGenerator(4, c, [0, 1, 2, 3])) == 4 * spec_parameter_count(c)


def test_rgb_count_is_the_published_35179():
    assert spec_parameter_count(3) == 35179


def test_output_shape_and_range():
    net = EnsembleGenerator(2, 3, [0, 1])
    with torch.no_grad():
        out = net(make_noise([0, 1], 2, 32, 48))
    assert out.shape == (1, 6, 32, 48)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_volume_stages_follow_the_anisotropy():
    assert z_stages((1, 1, 1), 32) == [(3, 2), (3, 2), (3, 2)]  # isotropic: full 3-D
    assert z_stages((4, 1, 1), 32) == [(1, 1), (1, 1), (3, 2)]  # z catches up at depth
    assert z_stages((1, 1, 1), 3) == [(3, 1), (3, 1), (3, 1)]  # too few planes to pool


def test_volume_generator_output_shape():
    stages = z_stages((2, 1, 1), 8)
    net = VolumeGenerator(2, 1, [0, 1], stages)
    with torch.no_grad():
        out = net(make_noise([0, 1], 2, 8, 32, 32))
    assert out.shape == (1, 2, 8, 32, 32)


def test_feature_net_weights_come_from_its_own_generator():
    """Same generator seed, same weights, whatever the global RNG does in between; the
    global RNG is not consumed (two runs in one process cannot disturb each other)."""

    def weights(seed):
        net = FeatureNet(3, 8, 2, generator=torch.Generator().manual_seed(seed))
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = weights(5)
    assert torch.equal(torch.get_rng_state(), state)  # global state untouched
    torch.manual_seed(999)
    assert torch.equal(a, weights(5))
    assert not torch.equal(a, weights(6))
