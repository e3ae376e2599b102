"""Latent tools: slerp (trainers/latent.py) and `ganops sample --class / --interpolate`, read
from a real MLflow store (the default SQLite one under GANOPS_HOME) as a trial logs it."""

import json
import math

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from orchestrator import tracking
from orchestrator.cli import app
from trainers.checkpoint import save_generator
from trainers.config import TrainerConfig
from trainers.latent import slerp
from trainers.models import build_models, sample_latent

runner = CliRunner()
T = torch.linspace(0, 1, 9)


# ---- slerp ----------------------------------------------------------------------------------


def test_slerp_starts_and_ends_at_its_inputs():
    a, b = (
        torch.randn(100, generator=torch.Generator().manual_seed(0)),
        torch.randn(100, generator=torch.Generator().manual_seed(1)),
    )
    path = slerp(a, b, T)
    assert path.shape == (9, 100)
    assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)


def test_slerp_midpoint_of_orthogonal_unit_vectors_is_on_the_circle():
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    mid = slerp(e1, e2, torch.tensor([0.5]))[0]
    assert torch.allclose(mid, torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2), atol=1e-7)
    # constant angular speed: 8 equal steps of 90/8 degrees
    path = slerp(e1, e2, T)
    angles = torch.rad2deg(torch.arccos((path[1:] * path[:-1]).sum(1).clamp(-1, 1)))
    assert torch.allclose(angles, torch.full((8,), 11.25), atol=1e-3)


def test_slerp_keeps_normal_latents_on_their_shell_where_a_straight_line_sinks():
    """Two N(0, I_100) latents are near-orthogonal with norm ~10: the line's midpoint has ~0.71 of
    that norm, slerp's stays between the endpoints' norms."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(100, generator=g), torch.randn(100, generator=g)
    norms = slerp(a, b, T).norm(dim=1)
    lo, hi = min(a.norm(), b.norm()), max(a.norm(), b.norm())
    assert ((norms >= lo - 1e-4) & (norms <= hi + 1e-4)).all()
    assert ((a + b) / 2).norm() < 0.85 * norms[4]  # the straight line's midpoint sinks inside the shell


@pytest.mark.parametrize(
    "b_of_a", [lambda a: 2 * a, lambda a: -a, lambda a: torch.zeros_like(a)], ids=["parallel", "opposite", "zero"]
)
def test_slerp_without_a_great_circle_is_a_finite_straight_line(b_of_a):
    a = torch.tensor([1.0, 2.0, -1.0])
    b = b_of_a(a)
    path = slerp(a, b, T)
    assert torch.isfinite(path).all() and torch.allclose(path, (1 - T[:, None]) * a + T[:, None] * b, atol=1e-6)


# ---- ganops sample --------------------------------------------------------------------------


def _logged_generator(cfg: TrainerConfig, tmp_path) -> str:
    """A run holding generator/generator.pt, as trainers/loop.py logs it at an eval."""
    uri = tracking.resolve_tracking_uri(None)
    client = MlflowClient(uri)
    run = client.create_run(tracking.ensure_experiment(client, "sample-test", uri)).info.run_id
    G, _ = build_models(cfg)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)  # not a fresh init
    save_generator(tmp_path / "generator.pt", G, cfg.model_dump())
    client.log_artifact(run, str(tmp_path / "generator.pt"), artifact_path="generator")
    return run


COND = TrainerConfig(model="cdcgan28", data="mnist", width=4, latent_dim=8)


def _run(*args):
    r = runner.invoke(app, ["sample", *args])
    return r, (json.loads(r.stdout) if r.exit_code == 0 and "--json" in args else None)


def test_class_draws_the_requested_class(ganops_home, tmp_path):
    run = _logged_generator(COND, tmp_path)
    r, info = _run(run, "--class", "3", "--n", "16", "--out", "threes.npy", "--seed", "5", "--json")
    assert r.exit_code == 0, r.output
    assert info["classes"] == [3] and info["shape"] == [16, 1, 28, 28] and info["conditional"]
    from orchestrator.sample import load_generator

    G, cfg, _ = load_generator(MlflowClient(tracking.resolve_tracking_uri(None)), run)
    with torch.no_grad():
        expected = G(sample_latent(16, cfg, torch.Generator().manual_seed(5)), torch.full((16,), 3))
    np.testing.assert_array_equal(np.load("threes.npy"), expected.numpy())

    r, _ = _run(run, "--class", "3", "--n", "64", "--out", "threes.png")
    assert r.exit_code == 0 and Image.open("threes.png").size == (8 * 30 + 2, 8 * 30 + 2)  # an 8x8 grid
    # Without --class the classes run 0-9 along each row: 20 samples = 2 rows of 10.
    r, info = _run(run, "--n", "20", "--out", "all.png", "--json")
    assert (
        r.exit_code == 0
        and info["classes"] == list(range(10))
        and Image.open("all.png").size == (10 * 30 + 2, 2 * 30 + 2)
    )


def test_interpolate_writes_a_strip_whose_ends_are_the_two_seeds_samples(ganops_home, tmp_path):
    run = _logged_generator(COND, tmp_path)
    r, info = _run(run, "--interpolate", "4,9", "--steps", "6", "--class", "7", "--out", "walk.npy", "--json")
    assert r.exit_code == 0, r.output
    assert info["shape"] == [6, 1, 28, 28] and info["interpolate"] == [4, 9] and info["steps"] == 6
    walk = np.load("walk.npy")
    for seed, end in ((4, walk[0]), (9, walk[-1])):
        assert _run(run, "--seed", str(seed), "--n", "1", "--class", "7", "--out", f"s{seed}.npy")[0].exit_code == 0
        np.testing.assert_allclose(np.load(f"s{seed}.npy")[0], end, atol=1e-5)
    # A conditional walk without --class: one row per class.
    r, info = _run(run, "--interpolate", "4,9", "--steps", "6", "--out", "walk.png", "--json")
    assert r.exit_code == 0 and info["n"] == 60 and Image.open("walk.png").size == (6 * 30 + 2, 10 * 30 + 2)


def test_interpolate_unconditional_and_uniform_latents_stay_in_range(ganops_home, tmp_path):
    cfg = TrainerConfig(model="dcgan28", data="mnist", width=4, latent_dim=8, latent_dist="uniform")
    run = _logged_generator(cfg, tmp_path)
    r, info = _run(run, "--interpolate", "0,1", "--out", "walk.png", "--json")
    assert r.exit_code == 0, r.output
    assert info["n"] == 10 and "classes" not in info and Image.open("walk.png").size == (10 * 30 + 2, 32)
    from orchestrator.sample import interpolation_latents

    z = interpolation_latents(cfg, (0, 1), 10)
    assert z.abs().max() <= 1 and torch.allclose(
        z[0], sample_latent(1, cfg, torch.Generator().manual_seed(0))[0], atol=1e-6
    )


@pytest.mark.parametrize(
    "model, args, message",
    [
        ("dcgan28", ["--class", "3"], "unconditional generator (model dcgan28); --class needs a conditional one"),
        ("cdcgan28", ["--class", "10"], "classes of a cdcgan28 generator are 0-9"),
        ("cdcgan28", ["--class", "-1"], "classes of a cdcgan28 generator are 0-9"),
        ("cdcgan28", ["--interpolate", "3"], "give two latent seeds as A,B"),
        ("cdcgan28", ["--interpolate", "a,b"], "give two latent seeds as A,B"),
        ("dcgan28", ["--device", "meta"], "ganops samples on cpu or cuda"),
        ("dcgan28", ["--device", "nonsense"], "not a torch device"),
    ]
    + ([] if torch.cuda.is_available() else [("dcgan28", ["--device", "cuda"], "sees no CUDA GPU")]),
)
def test_bad_class_or_interpolation_exits_2_saying_what_to_do(ganops_home, tmp_path, model, args, message):
    run = _logged_generator(TrainerConfig(model=model, data="mnist", width=4, latent_dim=8), tmp_path)
    r = runner.invoke(app, ["sample", run, *args, "--out", "x.png"])
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    assert not (ganops_home.parent / "x.png").exists()


def test_sample_on_the_named_device_gives_the_cpu_samples(ganops_home, tmp_path):
    """`--device cpu` (and `cuda` where there is one) draws the same z, so the samples match the
    CPU's (to float tolerance on a GPU); the JSON says where it ran."""
    run = _logged_generator(TrainerConfig(model="dcgan28", data="mnist", width=4, latent_dim=8), tmp_path)
    r, info = _run(run, "--n", "8", "--out", "cpu.npy", "--json", "--device", "cpu")
    assert r.exit_code == 0 and info["device"] == "cpu", r.output
    if torch.cuda.is_available():
        r, info = _run(run, "--n", "8", "--out", "gpu.npy", "--json", "--device", "cuda")
        assert r.exit_code == 0 and info["device"].startswith("cuda"), r.output
        np.testing.assert_allclose(np.load("gpu.npy"), np.load("cpu.npy"), atol=1e-3)
