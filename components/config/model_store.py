"""The `model_store` key: the S3 model repository and who may read and write it.

The bucket name derived from the cluster name needs two keys: that rule is on the root
model (components/config/stack.py); this module must not reach into other sections.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from components import validation
from components.config.base import IamPrincipalArn, Section, _by_env
from components.validation import checked, worded

BucketName = Annotated[str, checked(validation.bucket_name)]
S3Prefix = Annotated[str, worded(
    r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*",
    "must be '/'-separated parts of letters, digits, '_', '.' and '-', each starting with a "
    "letter or digit (no leading, trailing or double '/')",
    max_length=200,
)]


class ModelStoreConfig(Section):
    """The versioned, encrypted S3 model repository and who may read and write it."""

    env_defaults = {
        "noncurrent_version_expiration_days": _by_env(7, 90),
        "protect": _by_env(False, True),
        "access_logging": _by_env(False, True),
    }

    bucket_name: BucketName | None = Field(
        None,
        description="S3 bucket name. Unset: `<cluster.name>-models-<account id>` (S3 names are "
        "global, so the account keeps it unique).",
    )
    prefix: S3Prefix = Field(
        "models", description="Key prefix; models live at <prefix>/<model>/<version>/."
    )
    noncurrent_version_expiration_days: int = Field(
        ge=1, le=3650, description="Days an overwritten or deleted object version is kept."
    )
    protect: bool = Field(
        description="Protect the bucket and its KMS key: `pulumi destroy` fails and never "
        "deletes them."
    )
    access_logging: bool = Field(description="Write S3 server access logs to a log bucket.")
    identity: Literal["pod_identity", "irsa"] = Field(
        "pod_identity",
        description="How serving pods get the read-only role: EKS Pod Identity or IRSA.",
    )
    publisher_principals: list[IamPrincipalArn] = Field(
        default_factory=list,
        description="IAM principals (e.g. CI roles) allowed to assume the publisher role.",
    )
