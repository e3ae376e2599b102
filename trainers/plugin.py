"""The trainer plugin interface: what a GAN gives ganops so that a sweep can train it.

The split: the plugin owns its networks (and may own its losses, its latent sampler and its
hyperparameters); ganops' pure step (trainers/step.py) keeps the D-then-G order, the D:G
ratio, label smoothing and flipping, precision, gradient sync, clipping and the divergence
check, and everything around a trial (Ray, MLflow, balance stopping, checkpoints, sampling,
the registry) is the same as for the built-in GANs, which implement this interface too
(trainers/models: `BuiltinGan`). docs/plugins.md is the user's page.

A spec names a plugin in `trainer.model`:
  - `package.module:Class` (importable: an installed package, or on PYTHONPATH),
  - `path/to/file.py:Class` (a file; relative to the spec's folder), or
  - a name registered under the entry-point group `ganops.models` by an installed package.
Its data may come the same way in `trainer.data` (a `PluginData`). Plugins are code: ganops
imports them, so a spec that names one runs it, as a training script would.

No Ray, MLflow or boto3 here (trainers/step.py imports it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

if TYPE_CHECKING:  # torch only where a plugin runs: loading a spec (`ganops validate`) must not pay its ~1 s import
    import torch
    from torch import Tensor, nn

# Config annotations say TrainerConfig (trainers/config.py), which imports this module; the
# name is not imported back, so the two stay out of an import circle.
TrainerConfig = Any

ENTRY_POINTS = {"ganops.models": "model", "ganops.data": "data"}


class PluginError(ValueError):
    """A plugin reference that cannot be used; the message says what to do."""


class GanPlugin:
    """A GAN ganops can sweep. The minimum is `build`; override the rest to change them.

        class FaceGan(GanPlugin):
            class Params(BaseModel):          # searchable like lr_g: `search: {blocks: {choice: [2, 3]}}`
                blocks: int = 2
            def build(self):                  # (G, D); G(z) -> samples, D(x) -> (N,) or (N, 1) scores
                return Generator(self.cfg.latent_dim, self.params.blocks), Discriminator(self.params.blocks)

    `self.cfg` is the trial's TrainerConfig (lr_g, batch_size, latent_dim, seed, ...), and
    `self.params` its Params instance (None without Params). G and D are built under
    `torch.manual_seed(cfg.seed)` and moved to the worker's device by ganops.
    """

    Params: ClassVar[type[BaseModel] | None] = None
    # True when D outputs logits of "real": ganops then reports D(x), D(G(z)) and the balance
    # rules read them. Set False for a critic (raw scores), as hinge / wgan-gp are.
    probabilities: ClassVar[bool] = True

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        params_model = type(self).Params
        self.params = params_model.model_validate(cfg.params) if params_model is not None else None

    def build(self) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError(f"{type(self).__name__}.build() must return (G, D)")

    def sample_latent(self, n: int, generator: torch.Generator) -> Tensor:
        """z of shape (n, latent_dim) from `generator`, on its device (default: cfg.latent_dist)."""
        import torch

        if self.cfg.latent_dist == "normal":
            return torch.randn(n, self.cfg.latent_dim, generator=generator, device=generator.device)
        return torch.rand(n, self.cfg.latent_dim, generator=generator, device=generator.device) * 2.0 - 1.0

    def d_loss(
        self,
        D: Callable[[Tensor], Tensor],
        out_real: Tensor,
        out_fake: Tensor,
        real: Tensor,
        fake: Tensor,
        generator: torch.Generator,
        gp_scale: float = 1.0,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]] | None:
        """D's loss as (real term, fake term, extras summed in with weight 1); None: ganops' cfg.loss
        (with label smoothing, flips and gradient penalty as configured). `D` is the discriminator
        as a function of its input: the nn.Module itself, or a conditional D bound to the real labels."""
        return None

    def g_loss(self, out: Tensor) -> Tensor | None:
        """G's loss on D's outputs for its samples; None: ganops' cfg.loss."""
        return None


class PluginData:
    """A dataset a plugin brings: `trainer.data: my_gans.data:Faces`.

    `shape`: (C, H, W) of one image, or None for non-image samples (e.g. tabular rows, (D,)).
    `real(cfg)` returns every real sample as one tensor (images in [-1, 1]); ganops draws batches
    from it and scores samples against it. Override `sample` for data drawn on the fly."""

    shape: ClassVar[tuple[int, int, int] | None] = None

    def real(self, cfg: TrainerConfig) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.real(cfg) must return the real samples as a tensor")


def is_reference(value: str) -> bool:
    """`module:attr` or `file.py:attr` (a name without a colon is a built-in or an entry point)."""
    return ":" in value


def resolve_reference(value: str, base_dir: str | Path | None) -> str:
    """A file reference made absolute against `base_dir` (the spec's folder), so workers and a
    later `ganops resume` / `sample` find the same file; module references unchanged."""
    target, _, attr = value.rpartition(":")
    if target.endswith(".py") and not Path(target).expanduser().is_absolute():
        return f"{(Path(base_dir or '.') / target).expanduser().resolve()}:{attr}"
    return value


def import_file(path: str | Path) -> Any:
    """The module in a .py file, imported once per process under a private name (plugins here,
    feature networks in trainers/metrics.py)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PluginError(
            f"no file {p}; give a .py file beside the spec (path relative to the spec's folder) or an importable module"
        )
    name = f"ganops_file_{hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:  # no loader for the suffix: not a Python source file
        raise PluginError(f"{p} is not a Python source file (no import loader for {p.suffix!r}); give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise PluginError(f"{p} raised {type(e).__name__} while it was imported: {e}") from None
    return module


def _entry_point(name: str, group: str) -> Any:
    eps = [ep for ep in entry_points(group=group) if ep.name == name]
    if not eps:
        return None
    try:
        return eps[0].load()
    except Exception as e:
        raise PluginError(
            f"entry point {name!r} ({group}: {eps[0].value}) failed to load: {type(e).__name__}: {e}"
        ) from None


@functools.lru_cache(maxsize=64)
def load_object(value: str, group: str = "ganops.models") -> Any:
    """The object `value` names: `module:attr`, `file.py:attr`, or an entry point in `group`."""
    if not is_reference(value):
        obj = _entry_point(value, group)
        if obj is None:
            raise PluginError(
                f"{value!r} is neither a built-in nor an installed plugin (no entry point {value!r} in group {group}); "
                "name a plugin as package.module:Class or path/to/file.py:Class"
            )
        return obj
    target, _, attr = value.rpartition(":")
    if not target or not attr:
        raise PluginError(f"{value!r}: write a plugin as package.module:Class or path/to/file.py:Class")
    if target.endswith(".py"):
        module = import_file(target)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise PluginError(
                f"module {target!r} not found ({e}); install the package that has it (pip install -e ...) "
                "or name a file: path/to/file.py:Class"
            ) from None
        except Exception as e:
            raise PluginError(f"module {target!r} raised {type(e).__name__} while it was imported: {e}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        # the classes it defines (not those it imports)
        have = sorted(
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and v.__module__ == module.__name__ and not n.startswith("_")
        )
        raise PluginError(f"{target} has no {attr!r}; its classes: {', '.join(have) or 'none'}") from None


def _what(obj: Any) -> str:
    return f"the class {obj.__name__}" if isinstance(obj, type) else f"a {type(obj).__name__}"


def plugin_class(value: str) -> type[GanPlugin]:
    obj = load_object(value, "ganops.models")
    if not (isinstance(obj, type) and issubclass(obj, GanPlugin)):
        raise PluginError(
            f"{value} is {_what(obj)}, not a GanPlugin: "
            "subclass trainers.plugin.GanPlugin and define build() -> (G, D) (docs/plugins.md)"
        )
    if obj.build is GanPlugin.build:
        raise PluginError(
            f"{value} does not define build(); a GanPlugin must return (G, D) from build() (docs/plugins.md)"
        )
    return obj


def data_class(value: str) -> type[PluginData]:
    obj = load_object(value, "ganops.data")
    if not (isinstance(obj, type) and issubclass(obj, PluginData)):
        raise PluginError(
            f"{value} is {_what(obj)}, not a PluginData: "
            "subclass trainers.plugin.PluginData and define real(cfg) (docs/plugins.md)"
        )
    if obj.real is PluginData.real:
        raise PluginError(
            f"{value} does not define real(cfg); a PluginData returns its real samples as a tensor (docs/plugins.md)"
        )
    return obj
