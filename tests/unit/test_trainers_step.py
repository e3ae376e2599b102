import math
import subprocess
import sys

import pytest
import torch

from trainers.config import TrainerConfig
from trainers.data import DataSource, make_data
from trainers.models import build_models
from trainers.step import DivergenceError, build_optimizers, train_step

TINY_DCGAN = TrainerConfig(model="dcgan28", data="mnist", width=4, latent_dim=8, batch_size=8)
TINY_MLP = TrainerConfig(model="mlp2d", data="grid25", width=16, latent_dim=4, batch_size=32)
KEYS = {"loss_d_real", "loss_d_fake", "loss_d", "loss_g", "d_x", "d_g_z", "grad_norm_d", "grad_norm_g"}


def _setup(cfg):
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    return G, D, opt_g, opt_d, make_data(cfg), torch.Generator().manual_seed(cfg.seed)


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("cfg", [TINY_DCGAN, TINY_MLP], ids=["dcgan28", "mlp2d"])
def test_train_step_returns_finite_float_metrics_with_d_terms_summing_to_loss_d(cfg):
    """One iteration reports the eight metrics as finite floats; loss_d = loss_d_real + loss_d_fake."""
    G, D, og, od, data, g = _setup(cfg)
    m = train_step(G, D, og, od, data, cfg, g)
    assert set(m) == KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert m["loss_d"] == pytest.approx(m["loss_d_real"] + m["loss_d_fake"], rel=1e-5)
    assert 0 < m["d_x"] < 1 and 0 < m["d_g_z"] < 1


def test_d_update_leaves_g_params_unchanged_and_g_update_leaves_d_params_unchanged():
    """Only one network moves per update: D's steps never touch G, G's steps never touch D."""
    cfg = TINY_MLP
    G, D, og, od, data, g = _setup(cfg)
    g0, d0 = _params(G), _params(D)
    d_after_d_update = []
    real_step = od.step

    def spy_d_step(*a, **k):  # snapshot between the D phase and the G phase
        out = real_step(*a, **k)
        assert _same(_params(G), g0), "G moved during D's update"
        d_after_d_update[:] = _params(D)
        return out

    od.step = spy_d_step
    real_g_step = og.step

    def spy_g_step(*a, **k):
        assert all(p.grad is None for p in D.parameters()), "G's backward left gradients on D"
        return real_g_step(*a, **k)

    og.step = spy_g_step
    train_step(G, D, og, od, data, cfg, g)
    assert not _same(d_after_d_update, d0), "D did not move in its own update"
    assert _same(_params(D), d_after_d_update), "D moved during G's update"
    assert not _same(_params(G), g0), "G did not move in its own update"
    assert all(p.requires_grad for p in D.parameters()), "D left frozen after the step"


@pytest.mark.parametrize("ratio,expected", [("1:1", (1, 1)), ("3:1", (3, 1)), ("1:2", (1, 2))])
def test_dg_ratio_sets_the_number_of_optimizer_steps_per_iteration(ratio, expected):
    """dg_ratio 'n_d:n_g' means n_d D optimizer steps then n_g G optimizer steps."""
    cfg = TINY_MLP.model_copy(update={"dg_ratio": ratio})
    G, D, og, od, data, g = _setup(cfg)
    order = []
    for name, opt in (("d", od), ("g", og)):
        real = opt.step
        opt.step = lambda *a, _real=real, _name=name, **k: (order.append(_name), _real(*a, **k))[1]
    train_step(G, D, og, od, data, cfg, g)
    assert order == ["d"] * expected[0] + ["g"] * expected[1]


@pytest.mark.parametrize("cfg", [TINY_DCGAN, TINY_MLP], ids=["dcgan28", "mlp2d"])
def test_fixed_seed_gives_identical_metrics_twice(cfg):
    """Same config and seed -> bit-identical metrics over several iterations (CPU)."""

    def run():
        G, D, og, od, data, g = _setup(cfg)
        return [train_step(G, D, og, od, data, cfg, g) for _ in range(3)]

    assert run() == run()


def test_sync_grads_is_called_on_the_network_being_updated_before_its_step():
    """sync_grads(D) after each D backward, sync_grads(G) after each G backward, before the step."""
    cfg = TINY_MLP.model_copy(update={"dg_ratio": "2:1"})
    G, D, og, od, data, g = _setup(cfg)
    calls = []

    def sync(module):
        assert any(p.grad is not None for p in module.parameters())
        calls.append("G" if module is G else "D")

    train_step(G, D, og, od, data, cfg, g, sync_grads=sync)
    assert calls == ["D", "D", "G"]


def test_nan_weights_raise_divergence_error_naming_the_quantity_and_step():
    """A non-finite loss or gradient raises DivergenceError before any optimizer step applies it."""
    cfg = TINY_MLP
    G, D, og, od, data, g = _setup(cfg)
    with torch.no_grad():
        next(D.parameters()).fill_(float("nan"))
    with pytest.raises(DivergenceError) as err:
        train_step(G, D, og, od, data, cfg, g, step=42)
    assert err.value.quantity == "loss_d" and err.value.step == 42
    assert "42" in str(err.value)


def test_non_finite_real_batch_raises_divergence_error_before_d_moves():
    """Inf in the data makes loss_d non-finite: DivergenceError, and D's weights are left as they were."""

    class InfData(DataSource):
        def sample(self, n, generator):
            return torch.full((n, 2), float("inf"))

    cfg = TINY_MLP
    G, D, og, od, _, g = _setup(cfg)
    d0 = _params(D)
    with pytest.raises(DivergenceError) as err:
        train_step(G, D, og, od, InfData(), cfg, g)
    assert err.value.quantity in {"loss_d", "grad_norm_d"}
    assert _same(_params(D), d0)


def test_step_and_models_import_with_ray_mlflow_and_boto3_blocked():
    """The pure trainer modules import nothing from Ray, MLflow or boto3."""
    code = (
        "import sys\n"
        "for name in ('ray', 'mlflow', 'boto3', 'botocore'):\n"
        "    sys.modules[name] = None\n"
        "import trainers.step, trainers.models, trainers.data, trainers.metrics, trainers.checkpoint\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "name,cls", [("adam", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop), ("sgd", torch.optim.SGD)]
)
def test_each_network_gets_the_optimizer_and_learning_rate_the_config_names(name, cls):
    """optimizer_g / optimizer_d pick the optimizer per network; lr_g / lr_d and momentum reach it."""
    cfg = TINY_MLP.model_copy(update={"optimizer_d": name, "lr_d": 3e-3, "lr_g": 7e-4, "momentum": 0.5})
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    assert isinstance(opt_g, torch.optim.Adam) and opt_g.param_groups[0]["lr"] == 7e-4
    assert isinstance(opt_d, cls) and opt_d.param_groups[0]["lr"] == 3e-3
    if name != "adam":
        assert opt_d.param_groups[0]["momentum"] == 0.5


def test_a_non_finite_loss_raises_a_typed_error_before_any_step():
    """A D whose weights have blown up (one set to inf, as a reckless learning rate leaves them)
    gives a non-finite loss: train_step raises DivergenceError naming the quantity and the
    iteration, and neither network is stepped on it. (SGD at lr 1.0 used to get there within
    200 iterations on one machine; on another its D saturates at a finite loss: numerics differ
    by CPU, so the blow-up is set directly.)"""
    cfg = TrainerConfig(
        model="dcgan28",
        data="mnist",
        width=16,
        batch_size=64,
        optimizer_d="sgd",
        optimizer_g="sgd",
        lr_d=1.0,
        lr_g=1.0,
        momentum=0.9,
    )
    torch.manual_seed(0)
    G, D, og, od, data, g = _setup(cfg)
    with torch.no_grad():
        next(D.parameters()).view(-1)[0] = float("inf")
    before_g, before_d = _params(G), _params(D)
    with pytest.raises(DivergenceError) as e:
        train_step(G, D, og, od, data, cfg, g, step=7)
    assert not math.isfinite(e.value.value) and e.value.quantity in {"loss_d", "grad_norm_d"} and e.value.step == 7
    assert _same(before_g, _params(G))
    assert all(torch.equal(a, b) or not torch.isfinite(a).all() for a, b in zip(before_d, _params(D)))
