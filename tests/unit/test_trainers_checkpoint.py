import pytest
import torch

from trainers.checkpoint import (
    load_generator,
    load_state,
    restore,
    save_generator,
    save_state,
)
from trainers.config import TrainerConfig
from trainers.data import make_data
from trainers.models import build_models, sample_latent
from trainers.step import build_optimizers, train_step


@pytest.mark.parametrize(
    "cfg",
    [
        TrainerConfig(model="dcgan28", data="mnist", width=4, latent_dim=8, batch_size=8),
        TrainerConfig(model="mlp2d", data="ring8", width=16, latent_dim=4, batch_size=32, dg_ratio="2:1"),
        # D's dropout draws from torch's global RNG; stacked MNIST from the step's generator
        TrainerConfig(
            model="dcgan28_upsample",
            data="stacked_mnist",
            width=4,
            latent_dim=8,
            batch_size=8,
            dropout=0.3,
            norm="instance",
            output="sigmoid",
        ),
    ],
    ids=["dcgan28", "mlp2d", "upsample-stacked-dropout"],
)
def test_resumed_run_matches_uninterrupted_run_bit_for_bit(cfg, tmp_path):
    """save -> load -> restore into fresh objects: the next steps' metrics equal an uninterrupted run's."""
    G, D = build_models(cfg)
    og, od = build_optimizers(G, D, cfg)
    data, gen = make_data(cfg), torch.Generator().manual_seed(cfg.seed)
    for _ in range(3):
        train_step(G, D, og, od, data, cfg, gen)
    path = tmp_path / "ckpt" / "state.pt"
    save_state(path, G, D, og, od, 3, cfg.model_dump(), gen)
    uninterrupted = [train_step(G, D, og, od, data, cfg, gen) for _ in range(2)]

    # A fresh process would build from another seed's RNG stream; restore must overwrite it all.
    G2, D2 = build_models(cfg.model_copy(update={"seed": 99}))
    og2, od2 = build_optimizers(G2, D2, cfg)
    gen2 = torch.Generator().manual_seed(12345)
    state = load_state(path)
    assert restore(state, G2, D2, og2, od2, gen2) == 3
    assert TrainerConfig.model_validate(state["config"]) == cfg
    resumed = [train_step(G2, D2, og2, od2, data, cfg, gen2) for _ in range(2)]
    assert resumed == uninterrupted
    assert not list(path.parent.glob("*.tmp")), "temporary file left behind"


def test_restore_brings_back_torch_global_rng_state(tmp_path):
    """The global torch RNG state saved with the checkpoint is restored."""
    cfg = TrainerConfig(model="mlp2d", data="grid25", width=8, latent_dim=2)
    G, D = build_models(cfg)
    og, od = build_optimizers(G, D, cfg)
    gen = torch.Generator().manual_seed(0)
    save_state(tmp_path / "s.pt", G, D, og, od, 0, cfg.model_dump(), gen)
    expected = torch.rand(3)
    restore(load_state(tmp_path / "s.pt"), G, D, og, od, gen)
    assert torch.equal(torch.rand(3), expected)


def test_saved_generator_rebuilds_from_its_config_alone(tmp_path):
    """load_generator returns an eval-mode G (and its config) producing the saved G's samples."""
    cfg = TrainerConfig(model="dcgan28", data="mnist", width=4, latent_dim=8, seed=3)
    G, _ = build_models(cfg)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.01)  # differ from a fresh build
    save_generator(tmp_path / "g.pt", G, cfg.model_dump())
    G2, cfg2 = load_generator(tmp_path / "g.pt")
    assert cfg2 == cfg and not G2.training
    z = sample_latent(4, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(G.eval()(z), G2(z))


def test_pbt_exploit_adopts_the_donors_networks_and_optimizers_with_the_explored_settings(tmp_path):
    """The in-trial exploit (trainers/loop.py): the donor's G, D and optimizer states are
    loaded, the explored settings go into the optimizers, the trial's own RNG is untouched;
    a donor checkpoint that is gone leaves the trial as it was."""
    from trainers.loop import CHECKPOINT_FILE, _exploit

    cfg = TrainerConfig(model="mlp2d", data="grid25", width=16, latent_dim=4, batch_size=32, lr_d=1e-3)
    torch.manual_seed(1)
    donor = build_models(cfg)
    d_opts = build_optimizers(*donor, cfg)
    gen = torch.Generator().manual_seed(1)
    train_step(*donor, *d_opts, make_data(cfg), cfg, gen)
    save_state(tmp_path / CHECKPOINT_FILE, *donor, *d_opts, 40, cfg.model_dump(), gen)

    torch.manual_seed(2)
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    rng = torch.get_rng_state()
    order = {"donor": "d", "checkpoint": str(tmp_path), "config": {"lr_d": 2.5e-4, "dg_ratio": "2:1"}}
    new = _exploit(order, cfg, G, D, opt_g, opt_d)
    assert new.lr_d == 2.5e-4 and new.d_steps == 2 and new.lr_g == cfg.lr_g
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), donor[0].state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(D.state_dict().values(), donor[1].state_dict().values()))
    assert opt_d.param_groups[0]["lr"] == 2.5e-4 and opt_d.state_dict()["state"]  # donor's Adam moments, new lr
    assert torch.equal(torch.get_rng_state(), rng)

    assert _exploit({**order, "checkpoint": str(tmp_path / "rotated-out")}, cfg, G, D, opt_g, opt_d) is None
