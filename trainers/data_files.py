"""Is the data a config names present on this machine? Checked when a spec is validated, so
`ganops validate` / `ganops sweep` refuse a missing folder before launching anything.

Kept apart from trainers.data (no torch import): the spec's validation imports it.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Iterator

from trainers.config import TrainerConfig

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def iter_image_files(root: str | Path, ordered: bool = True) -> Iterator[Path]:
    """Image files under `root` (recursively, by suffix); sorted unless `ordered` is False
    (finding the first one then needs no walk of the whole tree)."""
    paths = Path(root).expanduser().rglob("*")
    for p in sorted(paths) if ordered else paths:
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            yield p


def open_torchvision(name: str, root: str):
    """torchvision.datasets.<name> under `root`, training split, never downloading."""
    import torchvision

    cls = getattr(torchvision.datasets, name)
    if name == "SVHN":
        return cls(root, split="train", download=False)
    return cls(root, train=True, download=False)


def data_problem(cfg: TrainerConfig) -> str | None:
    """What stops cfg.data from loading here, as a message saying what to do; None if nothing."""
    if cfg.data == "image_folder":
        assert cfg.data_dir is not None  # TrainerConfig requires data_dir for image_folder
        root = Path(cfg.data_dir).expanduser()
        if not root.is_dir():
            return (
                f"folder {cfg.data_dir!r} does not exist (data: image_folder reads its images from there); "
                "give the folder of your images"
            )
        if next(iter_image_files(root, ordered=False), None) is None:
            return (
                f"folder {cfg.data_dir!r} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}, searched recursively); "
                "put the training images there"
            )
    elif cfg.data.startswith("torchvision:"):
        assert cfg.data_dir is not None  # TrainerConfig requires data_dir for torchvision data
        return torchvision_problem(cfg.data.removeprefix("torchvision:"), str(Path(cfg.data_dir).expanduser()))
    return None


def _how_to_place(name: str, root: str) -> str:
    return (
        f"this machine cannot download datasets: on a machine with internet run "
        f'`python -c "import torchvision; torchvision.datasets.{name}({root!r}, download=True)"` '
        f"(with train=True / split='train' as the dataset takes) and copy {root!r} here"
    )


@functools.lru_cache(maxsize=16)
def torchvision_problem(name: str, root: str) -> str | None:
    """torchvision installed, and its dataset `name` readable under `root` without downloading."""
    if importlib.util.find_spec("torchvision") is None:
        return (
            f"data 'torchvision:{name}' needs torchvision, which is not installed: `pip install 'ganops[torchvision]'` "
            "(pick the torchvision build that matches your torch, or pip may replace torch); then place the dataset "
            f"under trainer.data_dir - {_how_to_place(name, root)}"
        )
    try:
        open_torchvision(name, root)
    except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError, FileNotFoundError, ... for missing files
        return f"torchvision dataset {name} is not readable under {root!r} ({e}); {_how_to_place(name, root)}"
    return None
