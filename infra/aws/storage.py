"""The S3 bucket a sweep keeps its Ray checkpoints and experiment state in.

`ensure_bucket` creates it once and makes it safe: private (ACLs off, public access blocked on
all four switches) and encrypted at rest by default (SSE-S3, AES256). An existing bucket gets
the same settings re-applied, so running it again is harmless. boto3 and pyarrow both read
`AWS_ENDPOINT_URL`, so an S3-compatible store (moto's server, MinIO) needs no code here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.aws.session import client

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]}


@dataclass(frozen=True)
class BucketState:
    name: str
    created: bool
    public_access_blocked: bool
    encrypted: bool


def split_s3_uri(uri: str) -> tuple[str, str]:
    """("bucket", "prefix") of s3://bucket/prefix."""
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r} (expected s3://bucket/prefix)")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def ensure_bucket(name: str, region: str, *, s3: Any = None) -> BucketState:
    """Create `name` in `region` if it is missing; block public access and turn on default
    encryption either way. Returns what it found and did."""
    s3 = s3 or client("s3", region)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    created = name not in existing
    if created:
        kwargs: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
        if region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=ENCRYPTION)
    return bucket_state(name, s3, created)


def bucket_state(name: str, s3: Any, created: bool = False) -> BucketState:
    """Read back the bucket's public access block and default encryption."""
    block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    encrypted = any(r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms") for r in rules)
    return BucketState(name, created, all(block.get(k) for k in PUBLIC_ACCESS_BLOCK), encrypted)
