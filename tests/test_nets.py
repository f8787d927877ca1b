import numpy as np
import pytest
import torch

from napari_dsp._fit import iter_members
from napari_dsp._nets import CHANNELS, EnsembleGenerator, count_parameters, make_noise


def spec_parameter_count(out_channels, channels=CHANNELS, noise=2):
    """algorithm.md section 2, counted by hand: conv = cin*cout*k*k + cout, BN = 2*c."""
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


def test_a_member_of_the_ensemble_equals_a_stand_alone_fit_with_its_seed():
    """In float64 the grouped model trains each member exactly as if it were alone."""
    rng = np.random.default_rng(0)
    image = rng.random((3, 32, 40)).astype(np.float32)
    crop = (slice(0, 32), slice(0, 40))
    kw = dict(n_iter=6, learning_rate=0.01, device=torch.device("cpu"),
              dtype=torch.float64, channels_last=False)

    def run(seeds):
        gen = iter_members(image, crop, seeds=seeds, **kw)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    together = run([11, 22, 33])
    alone = run([22])
    assert together.shape == (3, 3, 32, 40)
    np.testing.assert_allclose(together[1], alone[0], rtol=0, atol=1e-6)
    # and the members really differ from each other
    assert np.abs(together[0] - together[1]).max() > 1e-3
