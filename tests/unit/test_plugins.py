"""Trainer plugins (trainers/plugin.py): how a spec names one, its own searchable settings, and
what a broken one gets: exit 2 with the file, line and what to do, and no traceback."""

import textwrap

import pytest
import torch
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.tracking import _params
from search_spaces.loader import load_spec
from search_spaces.tune_space import trial_trainer_config
from trainers.config import TrainerConfig
from trainers.data import make_data
from trainers.models import BuiltinGan, build_models, gan_for, sample_latent
from trainers.step import build_optimizers, train_step

runner = CliRunner()

PLUGIN = """
import torch
from pydantic import BaseModel, Field
from torch import nn
from trainers.plugin import GanPlugin

class Tiny(GanPlugin):
    class Params(BaseModel):
        hidden: int = Field(16, ge=4, le=64)
    probabilities = False

    def build(self):
        c, h, w = self.cfg.image_shape
        G = nn.Sequential(
            nn.Linear(self.cfg.latent_dim, self.params.hidden),
            nn.ReLU(),
            nn.Linear(self.params.hidden, c * h * w),
            nn.Tanh(),
            nn.Unflatten(1, (c, h, w)),
        )
        D = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, self.params.hidden), nn.LeakyReLU(0.2), nn.Linear(self.params.hidden, 1)
        )
        return G, D

    def sample_latent(self, n, generator):
        return torch.zeros(n, self.cfg.latent_dim, device=generator.device) + 0.5

    def d_loss(self, D, out_real, out_fake, real, fake, generator, gp_scale=1.0):
        return torch.relu(1 - out_real).mean(), torch.relu(1 + out_fake).mean(), {}

    def g_loss(self, out):
        return -out.mean()

class NoBuild(GanPlugin):
    pass

class NotAPlugin:
    pass
"""


def _write(folder, spec: str, plugin: str = PLUGIN):
    (folder / "tiny.py").write_text(plugin)
    path = folder / "spec.yaml"
    path.write_text(textwrap.dedent(spec))
    return path


SPEC = """
name: plug
trainer: {model: tiny.py:Tiny, data: mnist, hidden: 8, latent_dim: 4, batch_size: 8}
search:
  hidden: {choice: [8, 32]}
sweep: {num_samples: 2}
"""


def test_a_file_plugin_beside_the_spec_validates_and_its_params_are_searched(tmp_path, monkeypatch):
    """`model: tiny.py:Tiny` is found beside the spec (from any working directory) and stored as
    an absolute path; its own `hidden` is a trainer key, searched, validated by its Params, and
    logged to MLflow as params.hidden."""
    spec = load_spec(_write(tmp_path, SPEC))
    monkeypatch.chdir("/")
    assert spec.trainer.model == f"{tmp_path / 'tiny.py'}:Tiny" and spec.trainer.params == {"hidden": 8}
    trial = trial_trainer_config(spec, {"hidden": 32})
    assert trial["params"] == {"hidden": 32}
    assert ("params.hidden", "32") in {(p.key, p.value) for p in _params(trial)}
    cfg = TrainerConfig.model_validate(trial)
    G, D = build_models(cfg)
    assert G[0].out_features == 32 and not cfg.is_bce


def test_a_plugins_losses_and_latents_replace_ganops_own(tmp_path):
    """The step uses the plugin's hinge losses and its constant latent: loss_g = -mean D(G(0.5))."""
    spec = load_spec(_write(tmp_path, SPEC))
    cfg = spec.trainer
    z = sample_latent(3, cfg, torch.Generator())
    assert torch.equal(z, torch.full((3, 4), 0.5))
    torch.manual_seed(0)
    G, D = build_models(cfg)
    og, od = build_optimizers(G, D, cfg)
    m = train_step(G, D, og, od, make_data(cfg), cfg, torch.Generator().manual_seed(0))
    assert "critic_real" in m and "d_x" not in m  # probabilities = False
    assert m["loss_d_real"] >= 0 and m["loss_d_fake"] >= 0  # hinge terms


def test_builtin_models_go_through_the_same_interface():
    """A built-in architecture is a GanPlugin too (BuiltinGan), with ganops' losses and latents."""
    cfg = TrainerConfig(width=8)
    assert isinstance(gan_for(cfg), BuiltinGan) and gan_for(cfg).d_loss(None, None, None, None, None, None) is None


@pytest.mark.parametrize(
    "model, words",
    [
        ("no_such_module_xyz:Gan", "module 'no_such_module_xyz' not found"),
        ("missing.py:Gan", "no file"),
        ("tiny.py:Gann", "has no 'Gann'; its classes: NoBuild, NotAPlugin, Tiny"),
        ("tiny.py:NotAPlugin", "the class NotAPlugin, not a GanPlugin"),
        ("tiny.py:NoBuild", "does not define build()"),
        ("unknown_name", "neither a built-in nor an installed plugin"),
    ],
)
def test_a_broken_plugin_reference_exits_2_naming_the_line(tmp_path, model, words):
    """Module missing, file missing, class missing, not a GanPlugin, no build(), unknown entry
    point: `ganops validate` exits 2 with the spec's line and what to do, no traceback."""
    path = _write(tmp_path, f"name: plug\ntrainer:\n  data: mnist\n  model: {model}\n")
    r = runner.invoke(app, ["validate", str(path)])
    out = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert f"{path}:4 trainer.model" in out and words in out and "Traceback" not in r.output


def test_a_plugins_params_rejecting_a_value_exits_2(tmp_path):
    """A value the plugin's Params refuse (hidden: 2 < 4), fixed or searched: exit 2 naming it."""
    path = _write(tmp_path, "name: plug\ntrainer: {model: tiny.py:Tiny, data: mnist, hidden: 2}\n")
    r = runner.invoke(app, ["validate", str(path)])
    assert r.exit_code == 2 and "rejects its params (hidden:" in " ".join(r.output.split()), r.output
    path = _write(
        tmp_path, "name: plug\ntrainer: {model: tiny.py:Tiny, data: mnist}\nsearch:\n  hidden: {choice: [8, 1000]}\n"
    )
    r = runner.invoke(app, ["validate", str(path)])
    assert r.exit_code == 2 and "search.hidden.choice: value 1000" in " ".join(r.output.split()), r.output
    path = _write(
        tmp_path, "name: plug\ntrainer: {model: tiny.py:Tiny, data: mnist}\nsearch:\n  hiden: {choice: [8]}\n"
    )
    r = runner.invoke(app, ["validate", str(path)])
    assert (
        r.exit_code == 2
        and "search.hiden: not a trainer setting" in " ".join(r.output.split())
        and "hidden" in r.output
    )


def test_a_builtin_model_refuses_plugin_keys(tmp_path):
    """An unknown key on a built-in model stays a spelling error (extra keys are only a plugin's)."""
    path = _write(tmp_path, "name: plug\ntrainer: {model: dcgan28, data: mnist, hidden: 8}\n")
    r = runner.invoke(app, ["validate", str(path)])
    assert r.exit_code == 2 and "trainer.hidden" in r.output and "unknown key" in r.output
