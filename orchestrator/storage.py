"""Where Ray keeps a sweep's checkpoints and experiment state: a local directory or s3://.

Ray reads and writes it through pyarrow, which (like boto3) takes credentials from the usual
AWS chain and an S3-compatible endpoint from `AWS_ENDPOINT_URL`. `check` asks the store once,
before anything launches, so a missing bucket or a dead endpoint is a clear error up front
rather than a trial failing deep inside a worker.
"""

from __future__ import annotations

import os


class StorageError(Exception):
    """The sweep's storage cannot be reached or written."""


def check(storage: str) -> None:
    """Raise StorageError unless `storage` (a path or s3://bucket/prefix) is usable."""
    if "://" not in storage:
        try:
            os.makedirs(storage, exist_ok=True)
        except OSError as e:
            raise StorageError(
                f"storage {storage}: cannot create it ({e.strerror}); "
                "set `storage:` in the spec to a writable directory"
            ) from None
        return
    if not storage.startswith("s3://"):
        raise StorageError(f"storage {storage}: only local directories and s3://bucket/prefix are supported")
    import pyarrow.fs

    bucket = storage[len("s3://") :].split("/", 1)[0]
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    where = f" at {endpoint} (AWS_ENDPOINT_URL)" if endpoint else ""
    try:
        fs, _ = pyarrow.fs.FileSystem.from_uri(storage)
        info = fs.get_file_info(bucket)
    except OSError as e:
        first = str(e).splitlines()[0][:300]
        raise StorageError(
            f"storage {storage}: S3{where} cannot be reached ({first}); "
            "check the endpoint and the AWS credentials in your environment"
        ) from None
    if info.type == pyarrow.fs.FileType.NotFound:
        raise StorageError(
            f"storage {storage}: bucket {bucket!r} does not exist{where}; create it with `ganops cluster bucket "
            "PROFILE` (private, encrypted) or pick another bucket"
        )
