"""Model store: bucket safety and least-privilege identities (the sync that reads it: test_model_sync.py)."""

from __future__ import annotations

import json

from tests.support import raw_stack, render_raw
from tools.lib.mock_engine import Rendering


def inputs(r: Rendering, type_token: str, name: str) -> dict:
    return r.one(type_token, name).inputs


def test_bucket_is_versioned_encrypted_private_and_tls_only(prod: Rendering) -> None:
    bucket = prod.one("aws:s3/bucket:Bucket", "models-bucket")
    assert bucket.inputs["bucket"] == "tfs-prod-models-123456789012"
    assert bucket.inputs["forceDestroy"] is False
    assert inputs(prod, "aws:s3/bucketVersioning:BucketVersioning", "models-versioning")[
        "versioningConfiguration"
    ] == {"status": "Enabled"}
    rule = inputs(prod, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "models-encryption")["rules"][0]
    key = prod.one("aws:kms/key:Key", "models-key")
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    assert rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"] == prod.outputs["model_key_arn"]
    assert rule["bucketKeyEnabled"] is True
    assert key.inputs["enableKeyRotation"] is True
    block = inputs(prod, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "models-public-access-block")
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    ownership = inputs(prod, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "models-ownership")
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    policy = json.loads(inputs(prod, "aws:s3/bucketPolicy:BucketPolicy", "models-tls-only")["policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    bucket_arn = "arn:aws:s3:::tfs-prod-models-123456789012"
    assert deny["Resource"] == [bucket_arn, f"{bucket_arn}/*"]


def test_noncurrent_versions_expire_per_environment(dev: Rendering, prod: Rendering) -> None:
    for r, days in ((dev, 7), (prod, 90)):
        rule = inputs(r, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "models-lifecycle")["rules"][0]
        assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": days}
        assert rule["status"] == "Enabled"


def test_prod_protects_bucket_and_key_and_logs_access(dev: Rendering, prod: Rendering) -> None:
    for name, token in (("models-bucket", "aws:s3/bucket:Bucket"), ("models-key", "aws:kms/key:Key")):
        assert prod.one(token, name).protect and prod.one(token, name).retain_on_delete
        assert not dev.one(token, name).protect and not dev.one(token, name).retain_on_delete
    logging = inputs(prod, "aws:s3/bucketLogging:BucketLogging", "models-access-logging")
    logs = prod.one("aws:s3/bucket:Bucket", "models-access-logs")
    assert logging["targetBucket"] == logs.inputs["bucket"]
    assert not dev.of_type("aws:s3/bucketLogging:BucketLogging")


def reader_statements(r: Rendering) -> list[dict]:
    return json.loads(inputs(r, "aws:iam/rolePolicy:RolePolicy", "models-reader-policy")["policy"])["Statement"]


def test_reader_role_is_scoped_to_the_prefix(prod: Rendering) -> None:
    statements = {s["Sid"]: s for s in reader_statements(prod)}
    bucket_arn = "arn:aws:s3:::tfs-prod-models-123456789012"
    assert statements["ListModelPrefix"] == {
        "Sid": "ListModelPrefix",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": bucket_arn,
        "Condition": {"StringLike": {"s3:prefix": ["models/", "models/*"]}},
    }
    assert statements["ReadModels"]["Action"] == "s3:GetObject"
    assert statements["ReadModels"]["Resource"] == f"{bucket_arn}/models/*"
    assert statements["DecryptModels"]["Action"] == "kms:Decrypt"
    assert statements["DecryptModels"]["Resource"] == prod.outputs["model_key_arn"]
    actions = {a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"}


def test_pod_identity_binds_the_serving_service_account(prod: Rendering) -> None:
    assoc = inputs(prod, "aws:eks/podIdentityAssociation:PodIdentityAssociation", "models-reader-identity")
    assert (assoc["namespace"], assoc["serviceAccount"]) == ("tf-serving", "tf-serving")
    assert assoc["roleArn"] == prod.outputs["model_reader_role_arn"]
    trust = json.loads(inputs(prod, "aws:iam/role:Role", "models-reader-role")["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}


def test_irsa_mode_trusts_only_the_service_account() -> None:
    raw = raw_stack("dev")
    raw["model_store"]["identity"] = "irsa"
    r = render_raw(raw)
    assert not r.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation") or all(
        not x.name.startswith("models-") for x in r.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    )
    statement = json.loads(inputs(r, "aws:iam/role:Role", "models-reader-role")["assumeRolePolicy"])["Statement"][0]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"] == r.outputs["oidc_provider_arn"]
    conditions = statement["Condition"]["StringEquals"]
    assert "system:serviceaccount:tf-serving:tf-serving" in conditions.values()
    account = next(m for m in r.k8s_objects() if m["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == r.outputs["model_reader_role_arn"]


def test_publisher_policy_writes_only_the_prefix_and_prod_has_a_role(dev: Rendering, prod: Rendering) -> None:
    policy = json.loads(inputs(prod, "aws:iam/policy:Policy", "models-publisher-policy")["policy"])
    write = next(s for s in policy["Statement"] if s["Sid"] == "WriteModels")
    assert write["Resource"].endswith("/models/*")
    assert set(write["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    trust = json.loads(inputs(prod, "aws:iam/role:Role", "models-publisher-role")["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"AWS": ["arn:aws:iam::123456789012:role/ci-deployer"]}
    assert prod.outputs["model_publisher_role_arn"]
    assert dev.outputs["model_publisher_role_arn"] is None
    assert dev.outputs["model_publisher_policy_arn"]
