"""The model store: a versioned, KMS-encrypted S3 bucket (with its access-log bucket), the
role serving pods read it with, and the policy (and role) publishers write it with.

AWS only: it must not build pods or other Kubernetes objects. How models reach the pods
(the sync containers and their scripts) is components/model_sync.py; where a version lives
in the bucket is components/model_layout.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws

from components.cluster import ClusterOutputs
from components.config import ModelStoreConfig
from components.iam import (
    irsa_trust_policy,
    pod_identity_association,
    pod_identity_trust_policy,
    policy_document,
)

TYPE_TOKEN = "tf-serving-eks:model_store:ModelStore"
# The token before the module was named after its stack key: the alias keeps a deployed store
# (and, through its children's parent, every bucket, key and role) where it is.
OLD_TYPE_TOKEN = "tf-serving-eks:models:ModelStore"

@dataclass(frozen=True)
class ModelStoreOutputs:
    """What serving and the stack outputs need of the store."""

    bucket_name: pulumi.Output[str]
    key_arn: pulumi.Output[str]
    prefix: str
    reader_role_arn: pulumi.Output[str]
    publisher_policy_arn: pulumi.Output[str]
    publisher_role_arn: pulumi.Output[str] | None
    identity: Literal["pod_identity", "irsa"]
    # What serving pods must not start before: their credentials are bound at pod creation
    # (the Pod Identity association, or the IRSA role) and must already read the bucket.
    reader_ready: tuple[pulumi.Resource, ...]


def deny_insecure_transport(bucket_arn: str) -> dict[str, object]:
    """Refuse every request to the bucket and its objects that is not over TLS."""
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def tls_only_policy(bucket_arn: str) -> str:
    return policy_document([deny_insecure_transport(bucket_arn)])


def list_prefix_statement(bucket_arn: str, prefix: str) -> dict[str, object]:
    """List the bucket, but only under the model prefix."""
    return {
        "Sid": "ListModelPrefix",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": bucket_arn,
        "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}},
    }


def reader_policy(bucket_arn: str, prefix: str, key_arn: str) -> str:
    """Read the model prefix and nothing else: list under it, get objects, decrypt."""
    return policy_document(
        [
            list_prefix_statement(bucket_arn, prefix),
            {
                "Sid": "ReadModels",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"{bucket_arn}/{prefix}/*",
            },
            {"Sid": "DecryptModels", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn},
        ]
    )


def publisher_policy(bucket_arn: str, prefix: str, key_arn: str) -> str:
    """Write (and replace) versions under the model prefix."""
    return policy_document(
        [
            list_prefix_statement(bucket_arn, prefix),
            {
                "Sid": "WriteModels",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": f"{bucket_arn}/{prefix}/*",
            },
            {
                "Sid": "EncryptModels",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": key_arn,
            },
        ]
    )


def principals_trust_policy(principals: list[str]) -> str:
    return policy_document(
        [{"Effect": "Allow", "Principal": {"AWS": principals}, "Action": "sts:AssumeRole"}]
    )


def access_log_policy(log_bucket_arn: str, source_bucket_arn: str, account_id: str) -> str:
    """Let S3 server access logging write into the log bucket, for our bucket only."""
    return policy_document(
        [
            {
                "Sid": "S3ServerAccessLogs",
                "Effect": "Allow",
                "Principal": {"Service": "logging.s3.amazonaws.com"},
                "Action": "s3:PutObject",
                "Resource": f"{log_bucket_arn}/*",
                "Condition": {
                    "ArnLike": {"aws:SourceArn": source_bucket_arn},
                    "StringEquals": {"aws:SourceAccount": account_id},
                },
            },
            deny_insecure_transport(log_bucket_arn),
        ]
    )


class ModelStore(pulumi.ComponentResource):
    outputs: ModelStoreOutputs

    def __init__(
        self,
        name: str,
        cfg: ModelStoreConfig,
        *,
        bucket_name: str,
        cluster: ClusterOutputs,
        serving_namespace: str,
        serving_service_account: str,
        account_id: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            TYPE_TOKEN,
            name,
            None,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=OLD_TYPE_TOKEN)])
            ),
        )
        child = pulumi.ResourceOptions(parent=self)
        # Models outlive stacks: a protected bucket and key survive `pulumi destroy`.
        keep = pulumi.ResourceOptions(parent=self, protect=cfg.protect, retain_on_delete=cfg.protect)

        key = aws.kms.Key(
            f"{name}-key",
            description=f"Model store {bucket_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=keep,
        )
        aws.kms.Alias(f"{name}-key-alias", name=f"alias/{bucket_name}", target_key_id=key.key_id, opts=child)
        bucket = self._private_bucket(
            name,
            f"{name}-bucket",
            bucket_name,
            encryption=aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms", kms_master_key_id=key.arn
                ),
                # One data key per bucket, not per object: far fewer KMS calls on sync.
                bucket_key_enabled=True,
            ),
            lifecycle=aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-noncurrent-versions",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=cfg.noncurrent_version_expiration_days
                ),
                abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                    days_after_initiation=7
                ),
            ),
            policy=("tls-only", lambda arn: pulumi.Output.from_input(tls_only_policy(arn))),
            keep=keep,
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[bucket]),
        )
        if cfg.access_logging:
            self._access_logging(name, bucket, bucket_name, account_id, keep)

        prefix = cfg.prefix.strip("/")
        read_policy = pulumi.Output.all(bucket.arn, key.arn).apply(
            lambda a: reader_policy(a[0], prefix, a[1])
        )
        if cfg.identity == "pod_identity":
            trust: pulumi.Input[str] = pod_identity_trust_policy()
        else:
            trust = pulumi.Output.all(cluster.oidc_provider_arn, cluster.oidc_issuer_url).apply(
                lambda a: irsa_trust_policy(a[0], a[1], serving_namespace, serving_service_account)
            )
        reader = aws.iam.Role(
            f"{name}-reader-role",
            assume_role_policy=trust,
            description=f"Serving pods: read {bucket_name}/{prefix}",
            opts=child,
        )
        reader_ready: list[pulumi.Resource] = [
            reader,
            aws.iam.RolePolicy(f"{name}-reader-policy", role=reader.id, policy=read_policy, opts=child),
        ]
        if cfg.identity == "pod_identity":
            # The EKS Pod Identity webhook gives a pod credentials when the pod is created,
            # from the associations that exist then (EKS user guide, "Assign an IAM role to
            # a Kubernetes service account"): pods started earlier get none until restarted.
            reader_ready.append(pod_identity_association(
                f"{name}-reader-identity",
                reader,
                cluster_name=cluster.name,
                namespace=serving_namespace,
                service_account=serving_service_account,
                opts=child,
            ))

        publisher = aws.iam.Policy(
            f"{name}-publisher-policy",
            description=f"Publish models to {bucket_name}/{prefix}",
            policy=pulumi.Output.all(bucket.arn, key.arn).apply(
                lambda a: publisher_policy(a[0], prefix, a[1])
            ),
            opts=child,
        )
        publisher_role_arn: pulumi.Output[str] | None = None
        if cfg.publisher_principals:
            role = aws.iam.Role(
                f"{name}-publisher-role",
                assume_role_policy=principals_trust_policy(list(cfg.publisher_principals)),
                description=f"CI: publish models to {bucket_name}/{prefix}",
                opts=child,
            )
            aws.iam.RolePolicyAttachment(
                f"{name}-publisher-role-policy", role=role.name, policy_arn=publisher.arn, opts=child
            )
            publisher_role_arn = role.arn

        self.outputs = ModelStoreOutputs(
            bucket_name=bucket.bucket,
            key_arn=key.arn,
            prefix=prefix,
            reader_role_arn=reader.arn,
            publisher_policy_arn=publisher.arn,
            publisher_role_arn=publisher_role_arn,
            identity=cfg.identity,
            reader_ready=tuple(reader_ready),
        )
        self.register_outputs({"bucket": bucket.bucket, "reader_role_arn": reader.arn})

    def _private_bucket(
        self,
        stem: str,
        resource_name: str,
        bucket_name: str,
        *,
        encryption: aws.s3.BucketServerSideEncryptionConfigurationRuleArgs,
        lifecycle: aws.s3.BucketLifecycleConfigurationRuleArgs,
        policy: tuple[str, Callable[[str], pulumi.Output[str]]],
        keep: pulumi.ResourceOptions,
    ) -> aws.s3.Bucket:
        """A bucket only its account can use: owner-enforced, no public access, encrypted by
        default, with a lifecycle rule and a bucket policy. Children are `<stem>-<role>`."""
        bucket = aws.s3.Bucket(resource_name, bucket=bucket_name, force_destroy=False, opts=keep)
        in_bucket = pulumi.ResourceOptions(parent=self, depends_on=[bucket])
        aws.s3.BucketOwnershipControls(
            f"{stem}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=in_bucket,
        )
        aws.s3.BucketPublicAccessBlock(
            f"{stem}-public-access-block",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=in_bucket,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{stem}-encryption", bucket=bucket.id, rules=[encryption], opts=in_bucket
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{stem}-lifecycle", bucket=bucket.id, rules=[lifecycle], opts=in_bucket
        )
        policy_role, make_policy = policy
        document: pulumi.Output[str] = bucket.arn.apply(make_policy)
        aws.s3.BucketPolicy(
            f"{stem}-{policy_role}", bucket=bucket.id, policy=document, opts=in_bucket
        )
        return bucket

    def _access_logging(
        self,
        name: str,
        bucket: aws.s3.Bucket,
        bucket_name: str,
        account_id: str,
        keep: pulumi.ResourceOptions,
    ) -> None:
        stem = f"{name}-access-logs"
        logs = self._private_bucket(
            stem,
            stem,
            f"{bucket_name[:58]}-logs",
            # Server access logs can only be delivered to SSE-S3 buckets, not SSE-KMS.
            encryption=aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"
                )
            ),
            lifecycle=aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-access-logs",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=365),
            ),
            policy=(
                "policy",
                lambda logs_arn: bucket.arn.apply(
                    lambda source_arn: access_log_policy(logs_arn, source_arn, account_id)
                ),
            ),
            keep=keep,
        )
        aws.s3.BucketLogging(
            f"{name}-access-logging",
            bucket=bucket.id,
            target_bucket=logs.id,
            target_prefix=f"{bucket_name}/",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[bucket, logs]),
        )
