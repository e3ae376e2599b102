"""metrics.features: FID, KID, precision/recall, density/coverage and diversity in the feature
space of any network (a TorchScript file or a callable), on any image data; broken references
are spec errors. A small random conv net stands in for a real feature network: random conv
features already tell digits from noise (as the untrained classifier does in
test_trainers_metrics.py)."""

import math
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from trainers.config import TrainerConfig
from trainers.data import load_mnist

MODULE = "ganops_test_feature_net"  # the tmp module's name on sys.path
NET_SOURCE = '''
import torch
from torch import nn


class Features(nn.Module):
    """(N, 1, H, W) in [-1, 1] -> (N, 64): two strided convs, pooled to 2x2."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())

    def forward(self, x):
        return self.body(x)


class Unpooled(nn.Module):
    """(N, 8, H/2, W/2): not (N, D) features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, 2, 1)

    def forward(self, x):
        return self.conv(x)


def build():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Features()
'''
REAL, HELD_OUT, FAKES = 400, 128, 128  # digits in the folder, held-out digits, samples scored (KID: 100 subsets of 128)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder of REAL MNIST digits as PNGs, HELD_OUT other digits, the net's module file and
    TorchScript files (the same weights as the module's build(), a 4-D one, a state dict)."""
    import importlib.util

    from PIL import Image

    root = tmp_path_factory.mktemp("features")
    # the shipped digits come sorted by class
    digits = load_mnist()[torch.randperm(5000, generator=torch.Generator().manual_seed(0))]
    (root / "digits").mkdir()
    pix = ((digits[:REAL, 0] + 1) * 127.5).round().byte().numpy()
    for i, img in enumerate(pix):
        Image.fromarray(img).save(root / "digits" / f"{i}.png")
    (root / "mods").mkdir()
    (root / "mods" / f"{MODULE}.py").write_text(NET_SOURCE)
    spec = importlib.util.spec_from_file_location("_feature_net_source", root / "mods" / f"{MODULE}.py")
    src = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(src)
    torch.jit.save(torch.jit.script(src.build()), str(root / "features.pt"))
    torch.jit.save(torch.jit.script(src.Unpooled()), str(root / "unpooled.pt"))
    torch.save(src.build().state_dict(), root / "state_dict.pt")
    # uint8 round trip, as the folder's PNGs
    held_out = ((digits[REAL : REAL + HELD_OUT] + 1) * 127.5).round() / 127.5 - 1
    return {"root": root, "digits": str(root / "digits"), "held_out": held_out}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_CACHE", str(tmp_path / "cache"))  # decoded image folders go here


class Oracle(torch.nn.Module):
    """A 'generator' that returns fixed images."""

    def __init__(self, images):
        super().__init__()
        self.images = images

    def forward(self, z):
        return self.images[: z.shape[0]]


def _folder_cfg(world, **kw):
    return TrainerConfig(
        model="dcgan28", data="image_folder", data_dir=world["digits"], channels=1, eval_samples=FAKES, **kw
    )


def _scores(world, features, cfg=None):
    from trainers.evaluate import Evaluator

    cfg = cfg or _folder_cfg(world)
    ev = Evaluator(cfg, features=features)
    noise = torch.rand(FAKES, *cfg.image_shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = torch.zeros(8, cfg.latent_dim)
    real, picture = ev.evaluate(Oracle(world["held_out"]), z)
    fake, _ = ev.evaluate(Oracle(noise), z)
    return ev, real, fake, picture


FEATURE_SCORES = {"fid", "kid", "precision", "recall", "density", "coverage", "diversity"}


@pytest.fixture(scope="module")
def torchscript_run(world):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANOPS_CACHE", str(world["root"] / "cache"))
        return _scores(world, str(world["root"] / "features.pt"))


def test_torchscript_features_score_an_image_folder_and_separate_digits_from_noise(torchscript_run):
    """Held-out digits against the folder's digits read as real; uniform noise far from them."""
    ev, real, noise, picture = torchscript_run
    # no class logits: no inception_score, class_coverage
    assert set(real) == set(noise) == FEATURE_SCORES | {"pixel_hist"}
    assert all(math.isfinite(v) for v in [*real.values(), *noise.values()])
    print(
        f"\nfid real {real['fid']:.4g} noise {noise['fid']:.4g}; kid real {real['kid']:.3g} noise {noise['kid']:.3g}; "
        f"precision {real['precision']:.2f}/{noise['precision']:.2f} coverage "
        f"{real['coverage']:.2f}/{noise['coverage']:.2f}"
    )
    assert noise["fid"] > 20 * real["fid"] and noise["fid"] - real["fid"] > 0.1
    assert abs(real["kid"]) < 0.02 and noise["kid"] > 0.3
    assert real["precision"] > 0.7 and real["coverage"] > 0.7 and noise["coverage"] < 0.1
    assert real["density"] > 0.7 and noise["density"] < 0.3
    assert 0.8 < real["diversity"] < 1.2
    assert ev.fid.extractor.num_features == 64 and picture.dtype.name == "uint8"


def test_a_module_callable_scores_the_same_as_its_torchscript(world, torchscript_run, monkeypatch):
    """package.module:callable on sys.path builds the same net as the TorchScript file: the same
    scores; path/to/file.py:callable the same features."""
    from trainers.metrics import load_feature_network

    monkeypatch.syspath_prepend(str(world["root"] / "mods"))
    ts, ts_real, ts_noise, _ = torchscript_run
    _, real, noise, _ = _scores(world, f"{MODULE}:build")
    assert real == pytest.approx(ts_real, rel=1e-4, abs=1e-6) and noise == pytest.approx(ts_noise, rel=1e-4, abs=1e-6)
    from_file = load_feature_network(f"{world['root'] / 'mods' / MODULE}.py:build", (1, 28, 28))
    x = world["held_out"][:16]
    assert torch.allclose(from_file(x), ts.feature_net(x), atol=1e-6)


def test_mnist_with_features_scores_in_that_space_and_keeps_the_classifier_scores(world, monkeypatch):
    """data: mnist + metrics.features: fid & co. from the network, class_coverage / class_kl /
    inception_score still from the MNIST classifier (an untrained one here, for speed)."""
    import trainers.evaluate as evaluate
    from trainers.metrics import FeatureNetwork, MnistClassifier, MnistFeatures

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clf = MnistFeatures(MnistClassifier()).eval()
    monkeypatch.setattr(evaluate, "load_feature_extractor", lambda cache_dir: clf)
    ev, real, noise, _ = _scores(
        world, str(world["root"] / "features.pt"), TrainerConfig(model="dcgan28", data="mnist", eval_samples=FAKES)
    )
    assert set(real) == FEATURE_SCORES | {"pixel_hist", "class_coverage", "class_kl", "inception_score"}
    assert isinstance(ev.fid.extractor, FeatureNetwork) and ev.features is clf
    assert noise["fid"] > 20 * real["fid"]
    assert ev.devices() == ["cpu"]


def _spec(tmp_path, features, trainer=None, extra=""):
    trainer = trainer or "{model: dcgan28, data: image_folder, data_dir: DIGITS, channels: 1}"
    return (
        textwrap.dedent(f"""\
        name: feats
        trainer: {trainer}
        metrics:
          features: {features}
        """)
        + extra
    )


def test_spec_resolves_a_relative_file_against_its_folder_and_makes_fid_a_metric(world, tmp_path, monkeypatch):
    from search_spaces.loader import load_spec, spec_from_text

    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "net.pt").write_bytes((world["root"] / "features.pt").read_bytes())
    (spec_dir / "s.yaml").write_text(
        _spec(tmp_path, "net.pt", extra="sweep: {metric: kid}\n").replace("DIGITS", world["digits"])
    )
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    spec = load_spec(spec_dir / "s.yaml")
    assert spec.metrics.features == str(spec_dir / "net.pt")
    assert spec.metric == "kid" and {"fid", "kid", "precision", "recall", "coverage"} <= set(spec.metric_table)
    assert not {"inception_score", "class_coverage"} & set(spec.metric_table)
    assert load_spec(spec_dir / "s.yaml", ["sweep.metric=null"]).metric == "fid"  # the default with features
    again = type(spec).model_validate(spec.model_dump())  # a worker's re-validation: the absolute path stands
    assert again.metrics.features == spec.metrics.features
    without = (
        f"name: plain\ntrainer: {{model: dcgan28, data: image_folder, data_dir: {world['digits']}, channels: 1}}\n"
    )
    assert spec_from_text(without).metric == "pixel_hist"


@pytest.mark.parametrize(
    "features,trainer,extra,says",
    [
        ("nope.pt", None, "", "no file"),
        ("state_dict.pt", None, "", "is not a TorchScript file"),
        ("ganops_no_such_module_xyz:build", None, "", "'ganops_no_such_module_xyz' cannot be imported"),
        (f"{MODULE}:nope", None, "", "has no attribute 'nope'"),
        ("unpooled.pt", None, "", "it must return (N, D) features"),
        # a searched shape
        (
            "features.pt",
            None,
            "search:\n  channels: {choice: [1, 3]}\n",
            "fails on a (2, 3, 28, 28) batch",
        ),
        ("resnet", None, "", "neither a TorchScript file"),
        ("features.pt", "{model: mlp2d, data: grid25}", "", "2-D points"),
    ],
)
def test_a_broken_feature_network_is_a_spec_error(world, tmp_path, monkeypatch, features, trainer, extra, says):
    """`ganops validate`: exit 2, the field and what is wrong, no traceback."""
    from orchestrator.cli import app

    monkeypatch.syspath_prepend(str(world["root"] / "mods"))
    # beside the nets: relative names resolve there
    p = world["root"] / f"spec_{abs(hash((features, trainer, extra)))}.yaml"
    p.write_text(_spec(tmp_path, features, trainer, extra).replace("DIGITS", world["digits"]))
    r = CliRunner().invoke(app, ["validate", str(p)])
    out = " ".join(r.output.split())  # rich wraps long lines
    assert r.exit_code == 2, r.output
    assert "metrics.features:" in out and says in out, r.output
    assert "Traceback" not in r.output
