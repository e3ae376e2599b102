"""The one place boto3 is imported, lazily, with an install hint.

boto3 reads `AWS_ENDPOINT_URL` (and per-service `AWS_ENDPOINT_URL_EC2`) itself, so an
S3/EC2-compatible endpoint such as moto's server on 127.0.0.1 needs no code here.
"""

from __future__ import annotations

from typing import Any


class AwsUnavailable(RuntimeError):
    """boto3 is not installed."""


def client(service: str, region: str) -> Any:
    """A boto3 client for `service` in `region`."""
    try:
        import boto3
    except ImportError:
        raise AwsUnavailable(
            "boto3 is not installed: pip install 'ganops[aws]' (or pip install 'boto3>=1.35')"
        ) from None
    return boto3.client(service, region_name=region)
