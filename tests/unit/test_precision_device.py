"""Mixed precision (trainers/precision.py), device placement and the GPU spec rules, on the CPU."""

import math

import pytest
import torch

from search_spaces.spec import Resources
from trainers import device as placement
from trainers.checkpoint import load_state, restore, save_state
from trainers.config import TrainerConfig
from trainers.data import make_data
from trainers.models import build_models
from trainers.precision import build_precision
from trainers.step import build_optimizers, train_step

SMALL = dict(model="dcgan28", data="mnist", width=8, batch_size=16)


def _setup(cfg, precision="fp32"):
    torch.manual_seed(0)
    G, D = build_models(cfg)
    og, od = build_optimizers(G, D, cfg)
    return G, D, og, od, make_data(cfg), torch.Generator().manual_seed(1), build_precision(precision, "cpu")


def _flat(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


def test_fp32_precision_and_device_moves_change_nothing_on_cpu():
    """fp32 is the identity: with its Precision, data moved `.to("cpu")` and a generator made for
    the CPU device, three iterations give bit-identical weights and metrics to the plain call."""
    cfg = TrainerConfig(**SMALL, soft_labels=True)
    G1, D1, og1, od1, data1, g1, _ = _setup(cfg)
    G2, D2, og2, od2, data2, _, p32 = _setup(cfg)
    data2.to("cpu")
    g2 = torch.Generator(device="cpu").manual_seed(1)
    for i in range(3):
        m1 = train_step(G1, D1, og1, od1, data1, cfg, g1, step=i + 1)
        m2 = train_step(G2, D2, og2, od2, data2, cfg, g2, step=i + 1, precision=p32)
    assert torch.equal(_flat(G1), _flat(G2)) and torch.equal(_flat(D1), _flat(D2))
    assert m1 == m2


def test_bf16_autocast_runs_the_convolutions_in_bfloat16_on_cpu():
    """bf16: D's convolutions compute in bfloat16 under autocast, weights stay fp32, the step
    trains (weights move, losses finite)."""
    cfg = TrainerConfig(**SMALL, precision="bf16")
    G, D, og, od, data, g, bf16 = _setup(cfg, "bf16")
    seen = []
    conv = next(m for m in D.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    before = _flat(G).clone()
    m = train_step(G, D, og, od, data, cfg, g, step=1, precision=bf16)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in G.parameters())
    assert not torch.equal(before, _flat(G)) and all(math.isfinite(v) for v in m.values())


def test_fp16_overflow_in_d_skips_only_ds_step():
    """fp16 keeps one scaler per network: D's scaled gradients overflow (scale 2^120), so D's step
    is skipped and its scale halves, while G's own scaler lets G's update through."""
    cfg = TrainerConfig(**SMALL, precision="fp16")
    G, D, og, od, data, g, fp16 = _setup(cfg, "fp16")
    fp16.scaler_d = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    d_before, g_before = _flat(D).clone(), _flat(G).clone()
    m = train_step(G, D, og, od, data, cfg, g, step=1, precision=fp16)
    assert m["amp_skipped_d"] == 1.0 and m["loss_scale_d"] == 2.0**119
    assert m["amp_skipped_g"] == 0.0 and m["loss_scale_g"] == 2.0**16
    assert torch.equal(d_before, _flat(D)), "D stepped on an overflowing gradient"
    assert not torch.equal(g_before, _flat(G)), "G's step was skipped by D's overflow"
    assert "grad_norm_d" not in m and math.isfinite(m["grad_norm_g"])  # an inf norm stays out of the eval's mean


def test_fp16_scalers_travel_in_the_checkpoint(tmp_path):
    """Both loss scales are saved and restored with the rest of the training state."""
    cfg = TrainerConfig(**SMALL, precision="fp16")
    G, D, og, od, data, g, fp16 = _setup(cfg, "fp16")
    fp16.scaler_d = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    train_step(G, D, og, od, data, cfg, g, step=1, precision=fp16)
    save_state(tmp_path / "s.pt", G, D, og, od, 1, cfg.model_dump(), g, precision=fp16)
    G2, D2, og2, od2, _, g2, fresh = _setup(cfg, "fp16")
    restore(load_state(tmp_path / "s.pt"), G2, D2, og2, od2, g2, precision=fresh)
    assert fresh.scaler_d.get_scale() == 2.0**119 and fresh.scaler_g.get_scale() == 2.0**16


def test_placement_report_names_what_is_off_the_device():
    """The placement report lists every group not on the expected device (here: a meta tensor)."""
    report = placement.placement(
        torch.device("cpu"), parameters=[torch.zeros(2)], batches=[torch.empty(1, device="meta")], eval_features=["cpu"]
    )
    assert report["off_device"] == ["batches"] and report["groups"]["parameters"] == ["cpu"]
    assert placement.telemetry(torch.device("cpu")) == {}


def test_optimizer_state_report_leaves_out_adams_cpu_step_counter():
    """Adam keeps `step` as a CPU scalar by design; the placement check reads the moments only."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.Adam([p])
    p.grad = torch.ones(3)
    opt.step()
    tensors = placement.optimizer_tensors(opt)
    assert len(tensors) == 2 and all(t.shape == (3,) for t in tensors)


@pytest.mark.parametrize("gpus", [0, 0.25, 0.5, 1, 2, 0.3333])
def test_schedulable_gpu_amounts_validate(gpus):
    """0, a fraction up to 1 (in Ray's 1/10,000 steps) and whole GPUs are accepted."""
    assert Resources(gpus_per_worker=gpus).gpus_per_worker == gpus


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(gpus_per_worker=1.5), "must be whole"),
        (dict(gpus_per_worker=0.00001), "steps of 0.0001"),
        (dict(gpus_per_worker=0.5, workers_per_trial=2), "NCCL"),
    ],
)
def test_unschedulable_gpu_amounts_are_refused_with_the_reason(kw, words):
    """What Ray cannot schedule (1.5 GPUs, 1e-5 GPU) or NCCL cannot run (two ranks sharing a GPU) is
    refused, saying why."""
    with pytest.raises(ValueError, match=words):
        Resources(**kw)


# ---- a sweep whose workers run on other machines needs stores every node reaches -------------


def _node(nid, ip, cpu=2.0, gpu=0.0):
    return {
        "NodeID": nid,
        "NodeManagerAddress": ip,
        "Alive": True,
        "Resources": {"CPU": cpu, **({"GPU": gpu} if gpu else {})},
    }


def test_workers_elsewhere_sees_other_machines_and_a_head_without_cpus():
    """Another node address, or a node that cannot hold a worker (a `ganops cluster` head offers
    no CPUs: its workers come from the autoscaler), means workers on other machines; a one-machine
    cluster (ray.cluster_utils nodes all on 127.0.0.1 included) does not."""
    from orchestrator.sweep import workers_elsewhere
    from search_spaces.loader import spec_from_text

    spec = spec_from_text("name: x\ntrainer: {model: mlp2d, data: grid25}\n")
    assert workers_elsewhere(spec, [_node("a", "127.0.0.1"), _node("b", "127.0.0.1")], "a") is None
    assert "1 other machine (10.0.0.7)" in workers_elsewhere(
        spec, [_node("a", "10.0.0.5"), _node("b", "10.0.0.7")], "a"
    )
    assert "autoscaler" in workers_elsewhere(spec, [_node("a", "10.0.0.5", cpu=0)], "a")
    # a CPU-less head with worker nodes on the same machine (tests' multi-node Ray): all here
    assert workers_elsewhere(spec, [_node("a", "127.0.0.1", cpu=0), _node("b", "127.0.0.1")], "a") is None
    gpu_spec = spec_from_text("name: x\ntrainer: {model: mlp2d, data: grid25}\nresources: {gpus_per_worker: 0.5}\n")
    assert "autoscaler" in workers_elsewhere(gpu_spec, [_node("a", "10.0.0.5")], "a")


def test_local_stores_are_refused_when_workers_run_elsewhere(monkeypatch):
    """SQLite tracking or a local storage path with workers on other machines: SweepError naming
    both and what to set; a server plus s3:// passes, and GANOPS_SHARED_FS=1 vouches for a shared mount."""
    from orchestrator.sweep import SweepError, check_shared

    with pytest.raises(
        SweepError,
        match=r"tracking store sqlite:///h/mlflow.db and the storage /h/ray are on this machine's disk.*s3://",
    ):
        check_shared("2 other machines", "sqlite:///h/mlflow.db", "/h/ray")
    check_shared("2 other machines", "http://mlflow:5000", "s3://bucket/runs")
    check_shared(None, "sqlite:///h/mlflow.db", "/h/ray")
    monkeypatch.setenv("GANOPS_SHARED_FS", "1")
    check_shared("2 other machines", "sqlite:///nfs/mlflow.db", "/nfs/ray")
