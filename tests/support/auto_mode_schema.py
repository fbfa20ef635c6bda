"""The EKS Auto Mode NodeClass (eks.amazonaws.com/v1) as the EKS user guide documents it, as a
JSON Schema for tests/support/conformance.py: no CRD of it is published with a chart we pin, so
the fields and ranges are recorded here from the guide, with unknown fields refused as the API
server refuses them under a structural schema.

Source: awsdocs/amazon-eks-user-guide at 4d52b4d05e3478582e7d10a73cbd9ba9194dd5f7,
latest/ug/automode/create-node-class.adoc, "Node Class Specification": role, subnetSelectorTerms
(tags or id) and securityGroupSelectorTerms (tags, id or name) marked required; snatPolicy
Random|Disabled; networkPolicy DefaultAllow|DefaultDeny; networkPolicyEventLogs
Disabled|Enabled; ephemeralStorage size (1-59000Gi, 1-64000G, 1-58Ti or 1-64T), iops
(3000-16000), throughput (125-1000); tags. Later editions of the page add more optional fields
(e.g. ephemeralStorage.kmsKeyID, podSubnetSelectorTerms); we use none of them, so they are left
out and would be refused here until recorded.

It asserts nothing and must not import the code under test.
"""

from __future__ import annotations

import re
from typing import Any

GUIDE = "awsdocs/amazon-eks-user-guide latest/ug/automode/create-node-class.adoc"

# The documented size range, per unit: the value's integer part must lie within it.
EPHEMERAL_SIZE_RANGES = {"Gi": 59000, "G": 64000, "Ti": 58, "T": 64}


def ephemeral_size_problem(size: str) -> str | None:
    """Why a ephemeralStorage.size is outside the documented range, or None."""
    match = re.fullmatch(r"([0-9]+)(Gi|G|Ti|T)", size)
    if match is None:
        return f"size {size!r} is not a whole number of Gi, G, Ti or T ({GUIDE})"
    value, unit = int(match[1]), match[2]
    if not 1 <= value <= EPHEMERAL_SIZE_RANGES[unit]:
        return f"size {size!r} is outside 1-{EPHEMERAL_SIZE_RANGES[unit]}{unit} ({GUIDE})"
    return None


def _strings() -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"type": "string"}}


def _terms(*keys: str) -> dict[str, Any]:
    return {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {k: (_strings() if k == "tags" else {"type": "string", "minLength": 1}) for k in keys},
        },
    }


NODE_CLASS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "eks.amazonaws.com/v1"},
        "kind": {"const": "NodeClass"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["role", "subnetSelectorTerms", "securityGroupSelectorTerms"],
            "properties": {
                "role": {"type": "string", "minLength": 1},
                "subnetSelectorTerms": _terms("tags", "id"),
                "securityGroupSelectorTerms": _terms("tags", "id", "name"),
                "snatPolicy": {"enum": ["Random", "Disabled"]},
                "networkPolicy": {"enum": ["DefaultAllow", "DefaultDeny"]},
                "networkPolicyEventLogs": {"enum": ["Disabled", "Enabled"]},
                "ephemeralStorage": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "size": {"type": "string", "pattern": r"^[0-9]+(Gi|G|Ti|T)$"},
                        "iops": {"type": "integer", "minimum": 3000, "maximum": 16000},
                        "throughput": {"type": "integer", "minimum": 125, "maximum": 1000},
                    },
                },
                "tags": _strings(),
            },
        },
    },
}
