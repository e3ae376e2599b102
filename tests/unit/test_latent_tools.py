"""From an image back to z (issue 18): `ganops encode` trains E from a trial's D so G(E(x)) rebuilds
x, `ganops sample --like` writes an image's style as other classes, and `ganops latent vector` /
`ganops sample --add` build and walk attribute vectors. Tiny GANs trained here with trainers' own
step on MNIST, logged to a real MLflow store as a trial logs them, scored by ganops' classifier."""

import json

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from orchestrator import tracking
from orchestrator.cli import app
from trainers.checkpoint import save_generator, save_state
from trainers.config import TrainerConfig
from trainers.data import load_mnist, make_data
from trainers.metrics import classifier_logits, load_feature_extractor
from trainers.models import build_models
from trainers.step import build_optimizers, train_step

runner = CliRunner()

# Measured on this machine (2 CPU cores, shared, one torch thread): 600 steps of this cdcgan28
# take ~50 s and reach class_match 0.82 on its own samples; 1,000 give style transfer a margin.
COND = TrainerConfig(model="cdcgan28", data="mnist", width=16, latent_dim=16, batch_size=64)
UNCOND = TrainerConfig(model="dcgan28", data="mnist", width=16, latent_dim=16, batch_size=64)
GAN_STEPS = {"cdcgan28": 1000, "dcgan28": 600}
ENCODER_STEPS = 300
# Training the two GANs and their encoders is most of this module's time (~3 min on one thread).
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]  # ~3 min: two tiny GANs trained in-process


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One MLflow store (GANOPS_HOME) and working directory for the module's trials."""
    root = tmp_path_factory.mktemp("latent")
    threads = torch.get_num_threads()
    # One thread: on a small shared machine torch's default (one per core) is several times slower.
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANOPS_HOME", str(root / "ganops_runs"))
        mp.chdir(root)
        yield root
    torch.set_num_threads(threads)


def _build(cfg: TrainerConfig):
    """G, D and their optimizers from seed 0 (the global RNG: call it on the main thread only)."""
    torch.manual_seed(0)
    G, D = build_models(cfg)
    return (G, D, *build_optimizers(G, D, cfg))


def _fit(cfg: TrainerConfig, models, steps: int):
    """`steps` train steps; every draw comes from the step's own generator, so this may run on
    another thread beside the main one and trains bit for bit what it would train there."""
    torch.set_num_threads(1)  # per thread: a new thread starts with torch's default
    G, D, og, od = models
    data, gen = make_data(cfg), torch.Generator().manual_seed(0)
    for _ in range(steps):
        train_step(G, D, og, od, data, cfg, gen)
    return G, D, og, od, gen


def _train(cfg: TrainerConfig, steps: int):
    return _fit(cfg, _build(cfg), steps)


@pytest.fixture(scope="module")
def uncond_training(home):
    """The dcgan28's training, started on a second thread before the cdcgan28's so the two tiny
    GANs (one torch thread each) train side by side: ~1 of this module's ~3 minutes saved."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(_fit, UNCOND, _build(UNCOND), GAN_STEPS[UNCOND.model])


def _trial(home, cfg: TrainerConfig, trained=None) -> tuple[str, object]:
    """A trained tiny GAN as a sweep leaves it: generator.pt on the trial's MLflow run (child of a
    sweep run tagged with its storage) and state.pt in <storage>/<sweep>/train/<trial>/checkpoint_*.
    `trained`: (G, D, og, od, gen) already trained, else trained here."""
    G, D, og, od, gen = trained or _train(cfg, GAN_STEPS[cfg.model])
    uri = tracking.resolve_tracking_uri(None)
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(client, "latent-test", uri)
    storage, sweep, trial = home / "ray", f"sweep-{cfg.model}", f"trial_{cfg.model}"
    parent = client.create_run(exp, tags={tracking.TAG_SWEEP: sweep, tracking.TAG_STORAGE: str(storage)}).info.run_id
    run = client.create_run(exp, tags={tracking.TAG_PARENT: parent, tracking.TAG_TRIAL: trial}).info.run_id
    files = home / cfg.model
    save_generator(files / "generator.pt", G, cfg.model_dump())
    client.log_artifact(run, str(files / "generator.pt"), artifact_path="generator")
    save_state(
        storage / sweep / "train" / trial / "checkpoint_000000" / "state.pt", G, D, og, od, 1, cfg.model_dump(), gen
    )
    return run, G.eval()


def _cli(*args):
    r = runner.invoke(app, list(args))
    return r, (json.loads(r.stdout) if r.exit_code == 0 and "--json" in args else None)


@pytest.fixture(scope="module")
def cond(home, uncond_training):
    """(run id, G, `ganops encode --json`'s output) of a trained cdcgan28 trial with its encoder."""
    run, G = _trial(home, COND)
    r, info = _cli("encode", run, "--steps", str(ENCODER_STEPS), "--json")
    assert r.exit_code == 0, r.output
    return run, G, info


@pytest.fixture(scope="module")
def uncond(home, uncond_training):
    run, G = _trial(home, UNCOND, uncond_training.result())
    # D from --checkpoint this time (the default path is the cdcgan28 trial's).
    state = home / "ray" / "sweep-dcgan28" / "train" / "trial_dcgan28" / "checkpoint_000000" / "state.pt"
    r, info = _cli("encode", run, "--steps", str(ENCODER_STEPS), "--checkpoint", str(state), "--json")
    assert r.exit_code == 0, r.output
    return run, G, info


@pytest.fixture(scope="module")
def classifier(feature_cache):
    return load_feature_extractor(feature_cache).classifier


def _encoder(run):
    """The E `ganops encode` logged on the run, loaded as the CLI loads it."""
    from orchestrator.latent import load_encoder
    from orchestrator.sample import load_generator

    client = MlflowClient(tracking.resolve_tracking_uri(None))
    return load_encoder(client, run, load_generator(client, run)[1])


def _png(path, x: torch.Tensor) -> None:
    """(1, 28, 28) in [-1, 1] -> an 8-bit grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy(), mode="L").save(path)


# ---- the encoder ------------------------------------------------------------------------------


def test_encoder_reconstructs_far_better_than_a_random_z(cond, uncond):
    """E(x) fed to the frozen G rebuilds x with well under half the L2 error of a random z; E, its
    falling error curve and the (input, reconstruction) grid are on the trial's run."""
    client = MlflowClient(tracking.resolve_tracking_uri(None))
    for run, _, info in (cond, uncond):
        print(f"{run}: recon {info['recon_error']:.4f} vs random z {info['random_z_error']:.4f}")
        assert info["recon_error"] < 0.6 * info["random_z_error"], info  # measured: 0.34-0.44 of it
        curve = [m.value for m in sorted(client.get_metric_history(run, "encoder_recon_error"), key=lambda m: m.step)]
        assert len(curve) == ENCODER_STEPS // 10 and curve[-1] < 0.7 * curve[0]
        names = {f.path for f in client.list_artifacts(run, "encoder")}
        assert names == {"encoder/encoder.pt", "encoder/pairs.png"}
    assert cond[2]["d_checkpoint"].endswith("checkpoint_000000/state.pt")  # found in the sweep's storage


# ---- style transfer ----------------------------------------------------------------------------


def test_style_transfer_writes_a_real_digit_as_each_class(cond, classifier, home):
    """Real digits' z drawn as each class 0-9 are classified as that class (class_match)."""
    run, G, _ = cond
    E = _encoder(run)
    digits = load_mnist()[-20:]  # (20, 1, 28, 28) in [-1, 1]
    classes = torch.arange(10)
    with torch.no_grad():
        z = E(digits)  # (20, latent)
        fakes = G(z.repeat_interleave(10, 0), classes.repeat(20))  # digit i as 0..9
    match = (classifier_logits(classifier, fakes).argmax(1) == classes.repeat(20)).float().mean().item()
    print(f"style-transfer class_match {match:.3f}")
    assert match >= 0.8

    _png(home / "digit.png", digits[0])
    r, info = _cli("sample", run, "--like", "digit.png", "--all-classes", "--out", "styles.png", "--json")
    assert r.exit_code == 0, r.output
    assert info["classes"] == list(range(10)) and Image.open("styles.png").size == (10 * 30 + 2, 32)
    r, info = _cli("sample", run, "--like", "digit.png", "--class", "3", "--out", "three.npy", "--json")
    assert r.exit_code == 0 and info["shape"] == [1, 1, 28, 28], r.output
    with torch.no_grad():
        expected = G(
            E(((torch.from_numpy(np.asarray(Image.open("digit.png"), dtype=np.float32)) / 127.5 - 1)[None, None])),
            torch.tensor([3]),
        )
    np.testing.assert_allclose(np.load("three.npy"), expected.numpy(), atol=1e-5)


# ---- attribute vectors -------------------------------------------------------------------------


def test_attribute_vector_of_ones_against_sevens_moves_sevens_toward_one(uncond, classifier, home):
    """mean z(digits classified 1) - mean z(digits classified 7), added to z's of other 7s, raises
    the classifier's share of 1s among G's images; `sample --add` writes the walk."""
    run, G, _ = uncond
    real = load_mnist()
    pred = classifier_logits(classifier, real).argmax(1)
    ones, sevens = real[pred == 1], real[pred == 7]
    for i in range(100):
        _png(home / "ones" / f"{i}.png", ones[i])
        _png(home / "sevens" / f"{i}.png", sevens[i])
    r, info = _cli("latent", "vector", run, "--with", "ones", "--without", "sevens", "--out", "v.npy", "--json")
    assert r.exit_code == 0 and info["with"] == 100 and info["without"] == 100, r.output
    v = torch.from_numpy(np.load("v.npy"))
    E = _encoder(run)
    with torch.no_grad():
        z = E(sevens[100:300])  # sevens the vector never saw
        before = classifier_logits(classifier, G(z)).softmax(1)
        after = classifier_logits(classifier, G(z + v)).softmax(1)
    p1 = before[:, 1].mean().item(), after[:, 1].mean().item()  # mean P(1)
    share1 = (before.argmax(1) == 1).float().mean().item(), (after.argmax(1) == 1).float().mean().item()
    print(f"P(1) {p1[0]:.3f} -> {p1[1]:.3f}; classified 1: {share1[0]:.3f} -> {share1[1]:.3f}")
    # Measured: P(1) 0.017 -> 0.375, classified 1: 0.015 -> 0.375 (at 2v it falls back to 0.15:
    # a tiny G's z leaves the region it was trained on).
    assert p1[1] > p1[0] + 0.2 and share1[1] > share1[0] + 0.2

    r, info = _cli(
        "sample", run, "--add", "v.npy", "--scale", "-2,2", "--steps", "9", "--n", "4", "--out", "walk.png", "--json"
    )
    assert r.exit_code == 0 and info["rows"] == 4, r.output
    assert Image.open("walk.png").size == (9 * 30 + 2, 4 * 30 + 2)


# ---- bad input ---------------------------------------------------------------------------------


def test_bad_input_exits_2_saying_what_to_do(cond, uncond, home):
    """An unconditional G with --class, an image of the wrong size or channels, an empty folder,
    a run without a D checkpoint or an encoder: exit 2 with the reason, nothing written."""
    (home / "empty").mkdir(exist_ok=True)
    Image.new("L", (32, 32)).save(home / "big.png")
    Image.new("RGB", (28, 28)).save(home / "rgb.png")
    _png(home / "ok.png", torch.zeros(1, 28, 28))
    u, c = uncond[0], cond[0]
    client = MlflowClient(tracking.resolve_tracking_uri(None))
    bare = client.create_run(client.get_run(u).info.experiment_id).info.run_id  # a G, no sweep, no encoder
    save_generator(home / "bare" / "generator.pt", build_models(UNCOND)[0], UNCOND.model_dump())
    client.log_artifact(bare, str(home / "bare" / "generator.pt"), artifact_path="generator")
    cases = [
        (
            ["sample", u, "--like", "ok.png", "--class", "3"],
            "unconditional generator (model dcgan28); --class needs a conditional one",
        ),
        (["sample", u, "--like", "ok.png", "--all-classes"], "unconditional generator"),
        (["sample", c, "--like", "big.png", "--class", "3"], "the image is 32x32 mode L"),
        (
            ["sample", c, "--like", "rgb.png", "--all-classes"],
            "mode RGB (3 channels); this trial's G draws 28x28 grayscale",
        ),
        (
            ["latent", "vector", u, "--with", "empty", "--without", "empty", "--out", "v2.npy"],
            "--with empty: no images",
        ),
        (
            ["latent", "vector", u, "--with", "nowhere", "--without", "empty", "--out", "v2.npy"],
            "--with nowhere: not a folder",
        ),
        (["sample", u, "--add", "missing.npy"], "--add missing.npy: no such file"),
        (["sample", u, "--add", "missing.npy", "--scale", "two"], "give the walk's range as LO,HI"),
        (["encode", bare, "--steps", "2"], "no Ray checkpoint of its trial found"),
        (["sample", bare, "--like", "ok.png"], f"run {bare} has no encoder yet; train one first: ganops encode {bare}"),
    ]
    for args, message in cases:
        r = runner.invoke(app, [*args, "--out", "x.png"] if "--out" not in args and args[0] == "sample" else args)
        assert r.exit_code == 2 and message in " ".join(r.output.split()), (args, r.output)
    assert not (home / "x.png").exists() and not (home / "v2.npy").exists()


# ---- every built-in image D becomes an encoder --------------------------------------------------

IMAGE_MODELS = [
    TrainerConfig(model="dcgan28", data="mnist", width=4, latent_dim=8),
    TrainerConfig(model="dcgan28_upsample", data="mnist", width=4, latent_dim=8),
    TrainerConfig(model="fc", data="mnist", latent_dim=8, norm="none", latent_dist="uniform"),
    TrainerConfig(model="cdcgan28", data="mnist", width=4, latent_dim=8),
    TrainerConfig(model="dcgan32", data="image_folder", data_dir=".", image_size=32, channels=3, width=4, latent_dim=8),
    TrainerConfig(model="dcgan64", data="image_folder", data_dir=".", image_size=64, channels=3, width=4, latent_dim=8),
]


@pytest.mark.parametrize("cfg", IMAGE_MODELS, ids=lambda c: c.model)
def test_every_builtin_d_widens_into_an_encoder_that_keeps_its_logit(cfg):
    """E(x) is (B, latent_dim); before training its first output is D's own logit (tanh of it for
    uniform latents), and D itself is untouched."""
    from trainers.encoder import build_encoder

    _, D = build_models(cfg)
    D.eval()
    before = {k: v.clone() for k, v in D.state_dict().items()}
    E = build_encoder(D, cfg).eval()
    x = torch.rand((4, *cfg.image_shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = E(x)
        logit = D(x, torch.zeros(4, dtype=torch.long)) if cfg.is_conditional else D(x)
    assert z.shape == (4, cfg.latent_dim)
    expected = torch.tanh(logit[:, 0]) if cfg.latent_dist == "uniform" else logit[:, 0]
    torch.testing.assert_close(z[:, 0], expected)
    assert all(torch.equal(v, D.state_dict()[k]) for k, v in before.items())


def test_a_plugins_d_becomes_an_encoder_too(home, monkeypatch):
    """A plugin that exposes its D (the example package's SNGAN, spectral norm and all) gets an
    encoder the same way: widened from its D, trained with its G frozen, logged on its run."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "examples" / "sngan_hinge"))
    cfg = TrainerConfig(model="sngan_hinge.model:SNGan", data="mnist", latent_dim=16, batch_size=32)
    GAN_STEPS[cfg.model] = 20  # the plumbing, not the quality
    run, _ = _trial(home, cfg)
    r, info = _cli("encode", run, "--steps", "20", "--batch-size", "16", "--json")
    assert r.exit_code == 0, r.output
    assert info["run_id"] == run and np.isfinite(info["recon_error"]), info
    assert info["d_checkpoint"].endswith("checkpoint_000000/state.pt")
    names = {f.path for f in MlflowClient(tracking.resolve_tracking_uri(None)).list_artifacts(run, "encoder")}
    assert names == {"encoder/encoder.pt", "encoder/pairs.png"}
