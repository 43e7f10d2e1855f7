"""Score models: parameterization algebra against the exact kernel score, network shapes,
conditioning, gradients, config round trips and error messages."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import sdegen
from sdegen.models import MLP, PARAMETERIZATIONS, ScoreModel, UNet, net_from_config

# Parameterization algebra ---------------------------------------------------------------------


class OracleNet(nn.Module):
    """Returns the exact regression target of a parameterization for known ``x0`` and ``z``,
    written out here from the definitions (independently of ScoreModel), and checks that it was
    fed ``x_in = (x_t - c) / sqrt(m^2 sigma_data^2 + s^2)`` and ``c_noise = log(s / m) / 4``."""

    def __init__(self, sde, parameterization, x0, z, t, sigma_data):
        super().__init__()
        self.p, self.x0, self.z, self.sd = parameterization, x0, z, sigma_data
        m = sde.marginal_mean_coeff(t)[:, None]
        s = sde.marginal_std(t)[:, None]
        c = sde.mean_offset(t)
        x_tilde = sde.perturb(x0, t, z) - (0 if c is None else c[:, None])
        self.scale = torch.sqrt(m**2 * sigma_data**2 + s**2)
        self.m, self.s = m, s
        self.expected_in = x_tilde / self.scale
        self.expected_c_noise = torch.log(s[:, 0] / m[:, 0]) / 4
        self.seen = 0

    def forward(self, x_in, c_noise, labels=None):
        torch.testing.assert_close(x_in, self.expected_in, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c_noise, self.expected_c_noise, rtol=1e-12, atol=1e-12)
        self.seen += 1
        if self.p == "eps":
            return self.z
        if self.p == "score":
            return -self.z  # s * (kernel score) = -z
        if self.p == "x0":
            return self.x0
        alpha = self.m * self.sd / self.scale
        sigma_hat = self.s / self.scale
        assert torch.allclose(alpha**2 + sigma_hat**2, torch.ones_like(alpha), atol=1e-12)
        return alpha * self.z - sigma_hat * self.x0 / self.sd


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_parameterizations_give_exact_kernel_score_and_x0(linear_sde, parameterization, sigma_data):
    g = torch.Generator().manual_seed(0)
    B, d = 64, 3
    x0 = torch.randn(B, d, generator=g, dtype=torch.float64)
    z = torch.randn(B, d, generator=g, dtype=torch.float64)
    # Times from t_min to T, log-spaced so that the small-noise end is covered.
    t = torch.logspace(
        math.log10(linear_sde.t_min), math.log10(linear_sde.T), B, dtype=torch.float64
    )
    t[-1] = linear_sde.T
    net = OracleNet(linear_sde, parameterization, x0, z, t, sigma_data)
    model = ScoreModel(net, linear_sde, parameterization, sigma_data=sigma_data)
    x_t = linear_sde.perturb(x0, t, z)
    s = linear_sde.marginal_std(t)[:, None]

    score = model.score(x_t, t)
    torch.testing.assert_close(score, -z / s, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(score, linear_sde.kernel_score(x_t, x0, t), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model(x_t, t), score, rtol=0, atol=0)
    # x0 from a tiny-mean kernel (OU at large t: m = e^-4) loses ~1/m of relative accuracy.
    torch.testing.assert_close(model.denoise(x_t, t), x0, rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(
        model.net_target(x0, t, z),
        net(net.expected_in, net.expected_c_noise),
        rtol=1e-12,
        atol=1e-12,
    )
    assert net.seen == 4


def test_v_convention_matches_salimans_ho_on_vp():
    """With sigma_data = 1 on the VP SDE (m^2 + s^2 = 1), v = m z - s x0, and
    x0 = m x_t - s v, z = s x_t + m v."""
    sde = sdegen.VPSDE()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(16, 4, generator=g, dtype=torch.float64)
    z = torch.randn(16, 4, generator=g, dtype=torch.float64)
    t = torch.linspace(0.01, 1.0, 16, dtype=torch.float64)
    m, s = sde.marginal_mean_coeff(t)[:, None], sde.marginal_std(t)[:, None]
    model = ScoreModel(nn.Identity(), sde, "v", sigma_data=1.0)
    v = model.net_target(x0, t, z)
    torch.testing.assert_close(v, m * z - s * x0, rtol=1e-12, atol=1e-12)
    x_t = m * x0 + s * z
    torch.testing.assert_close(m * x_t - s * v, x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s * x_t + m * v, z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("sde", [sdegen.VPSDE(), sdegen.SubVPSDE(), sdegen.VESDE()], ids=repr)
def test_float32_near_t_min_agrees_with_float64(sde, parameterization):
    """The scalings keep their digits in float32 at t_min (marginal_std uses expm1)."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(8, 5, generator=g, dtype=torch.float64) * 2 - 1
    z = torch.randn(8, 5, generator=g, dtype=torch.float64)
    t = torch.full((8,), sde.t_min, dtype=torch.float64)
    x_t = sde.perturb(x0, t, z)
    net64 = OracleNet(sde, parameterization, x0, z, t, 0.5)
    target = net64(net64.expected_in, net64.expected_c_noise)

    class Constant(nn.Module):
        def forward(self, x_in, c_noise, labels=None):
            return target.to(x_in.dtype)

    model = ScoreModel(Constant(), sde, parameterization)
    s32 = model(x_t.float(), sde.t_min)
    s64 = model(x_t, t)
    assert s32.dtype == torch.float32
    s = sde.marginal_std(t)[:, None]
    # x0 and v cancel x_t against m x0, which costs ~1/s of relative accuracy.
    rtol64 = 1e-12 / float(s.min()) if parameterization in ("x0", "v") else 1e-12
    torch.testing.assert_close(s64, -z / s, rtol=rtol64, atol=0)
    if parameterization in ("eps", "score"):
        torch.testing.assert_close(s32.double(), s64, rtol=1e-5, atol=0)
    else:
        # The score is -(x_t - m x0_hat) / s^2: float32's rounding of x_t (2^-24 relative)
        # divided by s^2 bounds the error, and the rest of the arithmetic must not add to it.
        bound = 4 * 2.0**-24 * x_t.abs().max(1, keepdim=True).values / s**2
        assert bool(((s32.double() - s64).abs() <= bound).all())


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_zero_initialised_net_gives_finite_scores(linear_sde, parameterization):
    model = ScoreModel(MLP(3, hidden=16, depth=2), linear_sde, parameterization)
    x = torch.randn(6, 3)
    for t in (linear_sde.t_min, linear_sde.T):
        out = model(x, t)
        assert torch.isfinite(out).all()
        assert torch.isfinite(model.denoise(x, t)).all()
        if parameterization in ("eps", "score"):
            assert bool((out == 0).all())


class DoubleWell(sdegen.AbstractSDE):
    """A non-linear SDE with no closed-form kernel."""

    def __init__(self):
        super().__init__(1e-3, 1.0)

    def drift(self, x, t):
        return x - x**3

    def diffusion(self, t):
        return torch.ones_like(t)

    def prior_sample(self, shape, generator=None, *, dtype=None, device=None):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, x):
        return -0.5 * (x**2).flatten(1).sum(1)


def test_nonlinear_sde_uses_raw_score_and_rejects_other_parameterizations():
    sde = DoubleWell()
    seen = {}

    class Recorder(nn.Module):
        def forward(self, x_in, c_noise, labels=None):
            seen["x"], seen["c"] = x_in, c_noise
            return 2 * x_in

    model = ScoreModel(Recorder(), sde, "score")
    x = torch.randn(4, 2)
    t = torch.tensor([0.1, 0.2, 0.3, 0.4])
    torch.testing.assert_close(model(x, t), 2 * x)
    assert seen["x"] is x
    torch.testing.assert_close(seen["c"], t)
    for p in ("eps", "x0", "v"):
        with pytest.raises(ValueError, match="parameterization='score'"):
            ScoreModel(Recorder(), sde, p)
    with pytest.raises(ValueError, match="closed-form kernel"):
        model.denoise(x, t)


def test_scoremodel_argument_errors():
    sde = sdegen.VPSDE()
    with pytest.raises(ValueError, match="parameterization must be one of"):
        ScoreModel(MLP(2), sde, "noise")
    with pytest.raises(TypeError, match=r"net must be a torch\.nn\.Module"):
        ScoreModel(lambda x, c: x, sde)
    with pytest.raises(TypeError, match="sde must provide drift"):
        ScoreModel(MLP(2), object())
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        ScoreModel(MLP(2), sde, sigma_data=0.0)
    model = ScoreModel(MLP(2), sde)
    with pytest.raises(ValueError, match=r"t must be a float or a tensor of shape \(batch,\)"):
        model(torch.randn(4, 2), torch.rand(3))
    with pytest.raises(ValueError, match="x must be a floating tensor"):
        model(torch.randn(4), 0.5)
    with pytest.raises(ValueError, match="x must be a floating tensor"):
        model(torch.ones(4, 2, dtype=torch.long), 0.5)

    class WrongShape(nn.Module):
        def forward(self, x_in, c_noise, labels=None):
            return x_in[:, :1]

    with pytest.raises(ValueError, match="must return a tensor shaped like x_in"):
        ScoreModel(WrongShape(), sde)(torch.randn(4, 2), 0.5)


def test_config_errors():
    with pytest.raises(ValueError, match="config\\['class'\\] must be one of"):
        net_from_config({"class": "ResNet"})
    with pytest.raises(ValueError, match="unknown key"):
        net_from_config({"class": "MLP", "dim": 2, "width": 3})
    with pytest.raises(TypeError, match="has no config"):
        ScoreModel(nn.Identity(), sdegen.VPSDE()).config()
    with pytest.raises(TypeError, match="cannot be serialised"):
        ScoreModel(MLP(2), sdegen.LinearSDE(beta=lambda t: 1 + t)).config()
    with pytest.raises(ValueError, match="unknown key"):
        ScoreModel.from_config({"net": MLP(2).config(), "sde": {}, "extra": 1})


# Networks ------------------------------------------------------------------------------------

# (event shape, network factory); the factories keep the nets small so the tests stay fast.
NETS = {
    "mlp-2": ((2,), lambda k: MLP(2, hidden=32, depth=2, fourier_features=16, num_classes=k)),
    "mlp-64-plain": (
        (64,),
        lambda k: MLP(64, hidden=48, depth=3, num_classes=k, residual=False),
    ),
    "unet-8x8x1": (
        (1, 8, 8),
        lambda k: UNet(1, channels=16, channel_mults=(1, 2), num_res_blocks=1, num_classes=k),
    ),
    "unet-28x28x1": (
        (1, 28, 28),
        lambda k: UNet(
            1,
            channels=8,
            channel_mults=(1, 2, 2),
            num_res_blocks=1,
            attention_resolutions=(14,),
            image_size=28,
            num_classes=k,
            dropout=0.1,
            embedding="sinusoidal",
        ),
    ),
    "unet-32x32x3": (
        (3, 32, 32),
        lambda k: UNet(
            3,
            channels=8,
            channel_mults=(1, 1, 2, 2),
            num_res_blocks=1,
            attention_resolutions=(16, 8),
            image_size=32,
            num_classes=k,
            head_channels=4,
        ),
    ),
}


def _randomise_zeros(net: nn.Module, seed: int = 0) -> None:
    """Zero-initialised layers block gradients to the layers before them at step 0; give them
    small values so that a gradient check sees every parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if bool((p == 0).all()):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.fixture(params=sorted(NETS))
def net_case(request):
    return NETS[request.param]


@pytest.mark.parametrize("num_classes", [None, 3])
def test_network_shapes_labels_and_gradients(net_case, num_classes):
    event, make = net_case
    torch.manual_seed(0)
    net = make(num_classes)
    _randomise_zeros(net)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, *event, generator=g)
    c = torch.randn(4, generator=g)
    labels = torch.tensor([0, 1, 2, 0]) if num_classes else None
    out = net(x, c, labels)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    if num_classes:
        net.eval()  # no dropout, so that two calls can be compared
        null = torch.full((4,), num_classes, dtype=torch.long)
        torch.testing.assert_close(net(x, c), net(x, c, null), rtol=0, atol=0)
        assert not torch.allclose(net(x, c, labels), net(x, c, null))
        net.train()
    (out**2).sum().backward()
    for name, p in net.named_parameters():
        if name.startswith("class_embedding") or ".class_embedding" in name:
            continue  # only the rows of the labels used get a gradient
        assert p.grad is not None and bool((p.grad != 0).any()), name
    if num_classes:
        grad = net.class_embedding.embedding.weight.grad
        assert bool((grad[:3] != 0).any(1).all()) and bool((grad[3] == 0).all())


def test_network_through_scoremodel_follows_input_dtype(net_case):
    event, make = net_case
    net = make(None).double()
    model = ScoreModel(net, sdegen.VPSDE(), "eps")
    x = torch.randn(3, *event, dtype=torch.float64)
    assert model(x, 0.3).dtype == torch.float64


def test_network_config_round_trip(net_case):
    event, make = net_case
    torch.manual_seed(0)
    net = make(3)
    _randomise_zeros(net)
    model = ScoreModel(net, sdegen.VESDE(sigma_max=20.0), "v", sigma_data=0.7)
    cfg = json.loads(json.dumps(model.config()))
    rebuilt = ScoreModel.from_config(cfg)
    assert rebuilt.config() == model.config()
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    x = torch.randn(5, *event)
    t = torch.rand(5) * 0.9 + 0.05
    labels = torch.tensor([0, 1, 2, 3, 1])
    torch.testing.assert_close(rebuilt(x, t, labels), model(x, t, labels), rtol=0, atol=0)
    assert isinstance(net_from_config(net.config()), type(net))


def test_network_input_errors(net_case):
    event, make = net_case
    net = make(3)
    x, c = torch.randn(4, *event), torch.randn(4)
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(4, *event, 2), c)
    with pytest.raises(ValueError, match=r"labels must lie in 0..3"):
        net(x, c, torch.tensor([0, 1, 4, 0]))
    with pytest.raises(ValueError, match=r"labels must lie in 0..3"):
        net(x, c, torch.tensor([0, -1, 2, 0]))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        net(x, c, torch.tensor([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(batch,\) = \(4,\)"):
        net(x, c, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="network is unconditional"):
        make(None)(x, c, torch.tensor([0, 1, 2, 0]))


def test_bind_fixes_labels():
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=1, num_classes=4)
    _randomise_zeros(net)
    model = ScoreModel(net, sdegen.VPSDE(), "eps")
    x, t = torch.randn(6, 2), torch.rand(6) * 0.5 + 0.1
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(model.bind(labels)(x, t), model(x, t, labels))
    torch.testing.assert_close(model.bind(2)(x, t), model(x, t, torch.full((6,), 2)))
    torch.testing.assert_close(model.bind(None)(x, t), model(x, t, torch.full((6,), 4)))
    assert set(dict(model.bind(1).named_parameters())) == {
        "model." + k for k in dict(model.named_parameters())
    }
    with pytest.raises(TypeError, match="labels must be a tensor, an int or None"):
        model.bind(1.5)


def test_mlp_argument_errors():
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        MLP(2, depth=0)
    with pytest.raises(ValueError, match="num_classes must be None or an int >= 1"):
        MLP(2, num_classes=0)
    with pytest.raises(ValueError, match="fourier_features must be an even int"):
        MLP(2, fourier_features=15)
    with pytest.raises(ValueError, match="channels must be even"):
        UNet(1, channels=15)


def test_unet_shape_errors():
    with pytest.raises(ValueError, match=r"divisible by 2\^\(len\(channel_mults\) - 1\) = 8"):
        UNet(1, channels=8, channel_mults=(1, 2, 2, 2)).eval()(
            torch.randn(2, 1, 28, 28), torch.randn(2)
        )
    with pytest.raises(ValueError, match="divisible"):
        UNet(1, channels=8, channel_mults=(1, 2, 2, 2), image_size=28)
    with pytest.raises(ValueError, match="needs image_size"):
        UNet(1, channels=8, attention_resolutions=(16,))
    with pytest.raises(ValueError, match=r"attention_resolutions \[16\] are not among"):
        UNet(1, channels=8, channel_mults=(1, 2), attention_resolutions=(16,), image_size=28)
    net = UNet(3, channels=8, channel_mults=(1, 2), num_res_blocks=1, image_size=8)
    with pytest.raises(ValueError, match="in_channels = 3"):
        net(torch.randn(2, 1, 8, 8), torch.randn(2))
    with pytest.raises(ValueError, match="in_channels = 3"):
        net(torch.randn(2, 3, 8), torch.randn(2))
    with pytest.raises(ValueError, match="must be 8x8 images"):
        net(torch.randn(2, 3, 16, 16), torch.randn(2))
    with pytest.raises(ValueError, match="channel_mults must be a non-empty tuple"):
        UNet(1, channel_mults=())
    with pytest.raises(ValueError, match="dropout must lie in"):
        UNet(1, dropout=1.0)
    with pytest.raises(ValueError, match="embedding must be 'fourier' or 'sinusoidal'"):
        UNet(1, embedding="learned")


def test_unet_dropout_only_in_training_mode():
    torch.manual_seed(0)
    net = UNet(1, channels=8, channel_mults=(1, 2), num_res_blocks=1, dropout=0.5)
    _randomise_zeros(net)
    x, c = torch.randn(2, 1, 8, 8), torch.randn(2)
    net.eval()
    torch.testing.assert_close(net(x, c), net(x, c), rtol=0, atol=0)
    net.train()
    assert not torch.allclose(net(x, c), net(x, c))


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_each_parameterization_learns_a_mixture_score(parameterization):
    """Denoising score matching (s^2-weighted) on a 2-D mixture under the VP SDE brings the
    weighted error E[s^2 |score - exact|^2] / d below 0.03 and below a tenth of its untrained
    value, whatever the parameterization: the scalings leave each of them learnable (measured:
    0.004 for eps and score, 0.010 for x0, 0.002 for v after 600 steps)."""
    torch.manual_seed(0)
    sde = sdegen.VPSDE()
    gm = sdegen.GaussianMixture(torch.tensor([[-1.0, -0.5], [1.0, 0.5]]), 0.05)
    exact = gm.score_fn(sde)
    model = ScoreModel(MLP(2, hidden=64, depth=2, fourier_features=16), sde, parameterization)
    g = torch.Generator().manual_seed(5)
    x_eval = gm.sample(2048, generator=g).float()
    t_eval = torch.rand(2048, generator=g) * 0.9 + 0.1

    def error() -> float:
        with torch.no_grad():
            x_t = sde.perturb(x_eval, t_eval, torch.randn(x_eval.shape, generator=g))
            s = sde.marginal_std(t_eval)[:, None]
            diff = s * (model(x_t, t_eval) - exact(x_t.double(), t_eval.double()).float())
            return float((diff**2).mean())

    before = error()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(600):
        x0 = gm.sample(256, generator=g).float()
        t = torch.rand(256, generator=g) * (sde.T - 1e-3) + 1e-3
        z = torch.randn(x0.shape, generator=g)
        x_t = sde.perturb(x0, t, z)
        # One loss for all parameterizations, so that they are compared on equal footing.
        s = sde.marginal_std(t)[:, None]
        loss = ((s * (model(x_t, t) + z / s)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = error()
    print(f"{parameterization}: weighted score error {before:.3g} -> {after:.3g}")
    assert after < min(0.1 * before, 0.03), (before, after)


def test_score_model_with_a_base_adds_the_base_score_and_round_trips():
    """A zero network on a DequantizedCategorical base is exactly the base model; the base's
    probabilities travel in the state dict and its shape in the config."""
    import json

    from sdegen.analytic import DequantizedCategorical

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 5, (200, 3), generator=gen)
    base = DequantizedCategorical.fit(images, 5)
    sde = sdegen.VPSDE()
    model = ScoreModel(MLP(3, hidden=16, depth=1), sde, "eps", base=base).double()
    x = base.sample(8, gen)
    t = torch.rand(8, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    with torch.no_grad():
        assert torch.allclose(model(x, t), base.marginal_score(sde, x, t), atol=1e-12)
        # Tweedie: denoise = (x + s^2 score) / m for the combined score.
        m, s = sde.marginal_mean_coeff(t)[:, None], sde.marginal_std(t)[:, None]
        assert torch.allclose(model.denoise(x, t), (x + s**2 * model(x, t)) / m, atol=1e-10)
        for p in model.net.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        rebuilt = ScoreModel.from_config(json.loads(json.dumps(model.config()))).double()
        rebuilt.load_state_dict(model.state_dict())
        assert torch.equal(rebuilt(x, t), model(x, t))
        assert torch.equal(rebuilt.base.probs, base.probs)
    with pytest.raises(TypeError, match="marginal_score"):
        ScoreModel(MLP(3), sde, base=torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="'eps' or 'score'"):
        ScoreModel(MLP(3), sde, "x0", base=base)
    # The network's correction fades like alpha^2 = m^2 sd^2 / (m^2 sd^2 + s^2) at large t.
    with torch.no_grad():
        plain = ScoreModel(model.net, sde, "eps").double()
        for tt in (0.05, 0.5, 1.0):
            t1 = torch.full((8,), tt, dtype=torch.float64)
            m, s = sde.marginal_mean_coeff(t1)[:, None], sde.marginal_std(t1)[:, None]
            fade = (m * 0.5) ** 2 / ((m * 0.5) ** 2 + s**2)
            expected = fade * plain(x, t1) + base.marginal_score(sde, x, t1)
            assert torch.allclose(model(x, t1), expected, atol=1e-10)
