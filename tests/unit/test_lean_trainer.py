"""orchestrator.trial.lean_torch_trainer: Ray Train's TorchTrainer without the Ray Data actor
(DatasetManager, a process per trial) when a run has no datasets; with datasets it is Ray's own."""

from ray.train import ScalingConfig

from orchestrator.trial import lean_torch_trainer


def _callbacks(**kwargs) -> list[str]:
    trainer = lean_torch_trainer()(lambda: None, scaling_config=ScalingConfig(num_workers=1), **kwargs)
    return [type(c).__name__ for c in trainer._create_default_callbacks()]


def test_a_run_without_datasets_starts_no_dataset_manager():
    names = _callbacks()
    assert "DatasetsCallback" not in names
    # Ray's other callbacks stay: placement-group cleanup, backend setup, the user's callbacks
    assert {"PlacementGroupCleanerCallback", "BackendSetupCallback", "UserCallbackHandler"} <= set(names)


def test_a_run_given_datasets_keeps_rays_datasets_callback():
    assert "DatasetsCallback" in _callbacks(datasets={"train": lambda: None})
