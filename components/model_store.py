"""The model store: a versioned, KMS-encrypted S3 bucket, its identities, and model delivery.

TF Serving images from 2.7 on cannot read `s3://` paths, so models reach the pods through
a pod volume: an init container syncs the configured versions before TF Serving starts, and
a sidecar keeps syncing. A version becomes visible only once complete: the publisher writes
a checksum manifest last (see model_layout.py); the sync downloads into a staging folder,
verifies every checksum and then renames the folder into place, which is atomic on one
filesystem, so TF Serving never sees half a version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import catalog
from components.cluster import ClusterOutputs
from components.config import ModelStoreConfig
from components.images import Image
from components.iam import irsa_trust_policy, pod_identity_trust_policy, policy_document
from components.model_layout import COMPLETE_DIR
from components.podsecurity import restricted_container

# AWS CLI v2 (Pod Identity credentials need >= 2.15), on ECR Public to avoid pull limits.
SYNC_IMAGE = "public.ecr.aws/aws-cli/aws-cli:2.34.48"
# Above 10000, like the server's (CIS 5.2.6; checkov CKV_K8S_40).
SYNC_UID = 10001


def sync_image() -> Image:
    registry, _, rest = SYNC_IMAGE.partition("/")
    repository, _, tag = rest.rpartition(":")
    return Image(registry, repository, tag)
SYNC_INTERVAL_SECONDS = 30
MODELS_FILE = "/etc/model-sync/models.txt"
SYNC_SCRIPT = "/etc/model-sync/sync.sh"
READY_SCRIPT = "/etc/model-sync/ready.sh"
# EKS Pod Identity agent, on every node (link-local).
POD_IDENTITY_AGENT_CIDR = "169.254.170.23/32"

SCRIPTS = Path(__file__).parent / "scripts"
SYNC_SH = (SCRIPTS / "model-sync.sh").read_text().replace("__COMPLETE_DIR__", COMPLETE_DIR)


@dataclass(frozen=True)
class ModelSync:
    """Which versions of one model the pods should hold."""

    policy: Literal["latest", "specific"]
    latest_count: int = 1
    versions: tuple[int, ...] = ()

    def line(self, model: str) -> str:
        arg = str(self.latest_count) if self.policy == "latest" else ",".join(map(str, self.versions))
        return f"{model} {self.policy} {arg}"


def models_file(models: Mapping[str, ModelSync]) -> str:
    return "".join(f"{spec.line(name)}\n" for name, spec in sorted(models.items()))


@dataclass(frozen=True)
class ModelStoreOutputs:
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    key_arn: pulumi.Output[str]
    prefix: str
    reader_role_arn: pulumi.Output[str]
    publisher_policy_arn: pulumi.Output[str]
    publisher_role_arn: pulumi.Output[str] | None
    identity: Literal["pod_identity", "irsa"]
    # What serving pods must not start before: their credentials are bound at pod creation
    # (the Pod Identity association, or the IRSA role) and must already read the bucket.
    reader_ready: list[pulumi.Resource] = field(default_factory=list)


def tls_only_policy(bucket_arn: str) -> str:
    return policy_document(
        [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]
    )


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
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [log_bucket_arn, f"{log_bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ]
    )


READY_SH = (SCRIPTS / "model-ready.sh").read_text()


def sync_config_data(models: Mapping[str, ModelSync]) -> dict[str, str]:
    """Contents of the ConfigMap mounted at /etc/model-sync."""
    return {"sync.sh": SYNC_SH, "ready.sh": READY_SH, "models.txt": models_file(models)}


def model_sync_containers(
    *,
    image: str,
    bucket: pulumi.Input[str],
    prefix: str,
    region: str,
    model_root: str,
    model_volume: str,
    config_volume: str,
    tmp_volume: str,
    rest_port: int,
) -> tuple[k8s.core.v1.ContainerArgs, k8s.core.v1.ContainerArgs]:
    """The init container (one pass before TF Serving starts) and the native sidecar (loops).

    The sidecar is an init container with `restartPolicy: Always`: it starts before TF
    Serving, runs beside it, and does not keep the pod alive on its own.
    """

    def container(name: str, args: list[str], sidecar: bool) -> k8s.core.v1.ContainerArgs:
        return k8s.core.v1.ContainerArgs(
            name=name,
            image=image,
            command=["/bin/bash"],
            args=[SYNC_SCRIPT, *args],
            restart_policy="Always" if sidecar else None,
            env=[
                k8s.core.v1.EnvVarArgs(name="MODEL_BUCKET", value=bucket),
                k8s.core.v1.EnvVarArgs(name="MODEL_PREFIX", value=prefix),
                k8s.core.v1.EnvVarArgs(name="MODEL_ROOT", value=model_root),
                k8s.core.v1.EnvVarArgs(name="MODELS_FILE", value=MODELS_FILE),
                k8s.core.v1.EnvVarArgs(name="SYNC_INTERVAL_SECONDS", value=str(SYNC_INTERVAL_SECONDS)),
                # The region is given, never looked up: pods cannot reach IMDS (hop limit 1).
                # CLI v2 reads AWS_REGION, v1 and older SDKs AWS_DEFAULT_REGION.
                k8s.core.v1.EnvVarArgs(name="AWS_REGION", value=region),
                k8s.core.v1.EnvVarArgs(name="AWS_DEFAULT_REGION", value=region),
                # No pager: CLI v2 pipes output through `less` by default (AWS CLI v2 user
                # guide, "Using AWS CLI pagination options": client-side pager).
                k8s.core.v1.EnvVarArgs(name="AWS_PAGER", value=""),
                # The image's root filesystem is read-only; the CLI keeps its state in /tmp.
                k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp"),
                k8s.core.v1.EnvVarArgs(name="REST_PORT", value=str(rest_port)),
            ],
            # The sidecar gates pod readiness: every configured model must be AVAILABLE.
            readiness_probe=k8s.core.v1.ProbeArgs(
                exec_=k8s.core.v1.ExecActionArgs(command=["/bin/bash", READY_SCRIPT]),
                period_seconds=10,
                timeout_seconds=5,
                failure_threshold=3,
            )
            if sidecar
            else None,
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(name=model_volume, mount_path=model_root),
                k8s.core.v1.VolumeMountArgs(name=config_volume, mount_path="/etc/model-sync", read_only=True),
                k8s.core.v1.VolumeMountArgs(name=tmp_volume, mount_path="/tmp"),
            ],
            resources=k8s.core.v1.ResourceRequirementsArgs(
                requests=dict(catalog.MODEL_SYNC_RESOURCES["requests"]),
                limits=dict(catalog.MODEL_SYNC_RESOURCES["limits"]),
            ),
            security_context=restricted_container(SYNC_UID),
        )

    return (
        container("model-sync-init", ["--once"], sidecar=False),
        container("model-sync", [], sidecar=True),
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
        super().__init__("tf-serving-eks:models:ModelStore", name, None, opts)
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
            reader_ready.append(aws.eks.PodIdentityAssociation(
                f"{name}-reader-identity",
                cluster_name=cluster.name,
                namespace=serving_namespace,
                service_account=serving_service_account,
                role_arn=reader.arn,
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
            bucket_arn=bucket.arn,
            key_arn=key.arn,
            prefix=prefix,
            reader_role_arn=reader.arn,
            publisher_policy_arn=publisher.arn,
            publisher_role_arn=publisher_role_arn,
            identity=cfg.identity,
            reader_ready=reader_ready,
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
