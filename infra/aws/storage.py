"""The S3 bucket a sweep keeps its Ray checkpoints and experiment state in.

`ensure_bucket` creates it once and makes it safe: private (ACLs off, public access blocked on
all four switches), encrypted at rest by default (SSE-S3, AES256), and TLS only (a bucket policy
denies every request with `aws:SecureTransport` false). An existing bucket gets the same settings
re-applied, so running it again is harmless; its own policy statements are kept. boto3 and
pyarrow both read `AWS_ENDPOINT_URL`, so an S3-compatible store (moto's server, MinIO) needs no
code here; on a plain-http endpoint the TLS-only policy is left off, as it would lock the
store's own clients out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from infra.aws.session import client

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
TLS_ONLY_SID = "ganops-deny-insecure-transport"
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]}


@dataclass(frozen=True)
class BucketState:
    name: str
    created: bool
    public_access_blocked: bool
    encrypted: bool
    tls_only: bool = False


def tls_only_statement(name: str) -> dict[str, Any]:
    """Deny any request to the bucket or its objects made over plain HTTP."""
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def _policy(name: str, s3: Any) -> dict[str, Any] | None:
    try:
        return json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])
    except Exception as e:  # botocore ClientError: NoSuchBucketPolicy is the only expected one
        if getattr(e, "response", {}).get("Error", {}).get("Code") == "NoSuchBucketPolicy":
            return None
        raise


def _require_tls(name: str, s3: Any) -> None:
    # Merge, not replace: a bucket that already existed may carry its owner's own statements.
    policy = _policy(name, s3) or {"Version": "2012-10-17", "Statement": []}
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    policy["Statement"] = [st for st in statements if st.get("Sid") != TLS_ONLY_SID] + [tls_only_statement(name)]
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))


def split_s3_uri(uri: str) -> tuple[str, str]:
    """("bucket", "prefix") of s3://bucket/prefix."""
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r} (expected s3://bucket/prefix)")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def ensure_bucket(name: str, region: str, *, s3: Any = None) -> BucketState:
    """Create `name` in `region` if it is missing; block public access, turn on default
    encryption and deny non-TLS requests either way. Returns what it found and did."""
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
    if not str(getattr(s3.meta, "endpoint_url", "https:")).startswith("http:"):
        _require_tls(name, s3)
    return bucket_state(name, s3, created)


def bucket_state(name: str, s3: Any, created: bool = False) -> BucketState:
    """Read back the bucket's public access block, default encryption and TLS-only policy."""
    block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    encrypted = any(r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms") for r in rules)
    statements = (_policy(name, s3) or {}).get("Statement", [])
    tls_only = any(
        st.get("Effect") == "Deny" and st.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for st in (statements if isinstance(statements, list) else [statements])
    )
    return BucketState(name, created, all(block.get(k) for k in PUBLIC_ACCESS_BLOCK), encrypted, tls_only)
