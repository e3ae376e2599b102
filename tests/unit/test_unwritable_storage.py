"""A local sweep storage that refuses a real write (issue 15 item 8) is a StorageLost naming
the path and `ganops resume`; a writable one passes and keeps no probe file behind."""

import pytest

from orchestrator.sweep import StorageLost, check_writable


def test_storage_replaced_by_a_file_is_lost_with_what_to_do(tmp_path):
    """A regular file where the storage directory was: ENOTDIR on the probe's mkdir."""
    store = tmp_path / "ray"
    store.write_text("not a directory")
    with pytest.raises(StorageLost) as e:
        check_writable(str(store), "s-20261201-000000")
    msg = str(e.value)
    assert str(store) in msg and "Free space" in msg and "ganops resume s-20261201-000000 --storage" in msg


def test_writable_storage_passes_and_leaves_no_probe(tmp_path):
    """A writable directory: no error, and only the sweep's directory is left."""
    check_writable(str(tmp_path), "s-1")
    assert [p.name for p in tmp_path.iterdir()] == ["s-1"] and not any((tmp_path / "s-1").iterdir())


def test_s3_storage_is_not_probed():
    """s3:// storage has its own mapping (StorageLost on Ray's OSError); nothing is written."""
    check_writable("s3://bucket/prefix", "s-1")


def test_full_disk_is_lost_with_no_space_left(tmp_path):
    """A real full filesystem (a 64 KiB tmpfs filled up): ENOSPC. Needs mount rights
    (CAP_SYS_ADMIN); skipped where the machine has none."""
    import subprocess

    store = tmp_path / "small"
    store.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(store)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        with pytest.raises(OSError), (store / "fill").open("wb") as f:
            while True:
                f.write(bytes(4096))
                f.flush()
        with pytest.raises(StorageLost, match="No space left on device"):
            check_writable(str(store), "s-1")
    finally:
        subprocess.run(["umount", str(store)], check=True)
