"""Where models live in the model store: shared by the stack, the publisher and the sync.

Names and paths only: it must not talk to S3 or create resources (the publisher, the sync
script and model_store.py do), so the commands can use it without the Pulumi engine.

    s3://<bucket>/<prefix>/<model>/<version>/...            TF Serving's SavedModel layout
    s3://<bucket>/<prefix>/<model>/_complete/<version>.sha256
        written last by the publisher; its presence means the version is complete. Its
        lines are `sha256sum` output (`<hex>  <path relative to the version folder>`), so
        the sync can verify every file with `sha256sum -c` before the version goes live.
"""

from __future__ import annotations

from components.config import StackConfig

COMPLETE_DIR = "_complete"
MAX_BUCKET_NAME = 63


def model_bucket_name(cfg: StackConfig, account_id: str) -> str:
    """The bucket's name: configured, or derived from the cluster name and the account."""
    if cfg.model_store.bucket_name:
        return cfg.model_store.bucket_name
    suffix = f"-models-{account_id}"
    return f"{cfg.cluster.name.lower().replace('_', '-')[: MAX_BUCKET_NAME - len(suffix)]}{suffix}"


def model_prefix(prefix: str, model: str) -> str:
    return f"{prefix.strip('/')}/{model}/"


def version_prefix(prefix: str, model: str, version: int) -> str:
    return f"{model_prefix(prefix, model)}{version}/"


def marker_key(prefix: str, model: str, version: int) -> str:
    return f"{model_prefix(prefix, model)}{COMPLETE_DIR}/{version}.sha256"
