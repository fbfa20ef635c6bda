"""What every config section shares: the `Section` base, per-environment defaults, rule
errors, and the value types more than one stack key uses.

It knows no section of its own: a section's model and rules live in the module named
after its key, never here. The exception is a top-level key that has no section (`tags`):
its type, rules included, is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import InitErrorDetails, ValidationError as CoreValidationError

from components import validation
from components.validation import checked, worded

PROJECT = "tf-serving-eks"

Environment = Literal["dev", "staging", "prod"]
ENVIRONMENTS: tuple[Environment, ...] = ("dev", "staging", "prod")

# A DNS-1123 label, the shape of Kubernetes names and of our keyed-map keys; 40 characters
# leave room for the suffixes our object names add.
Name = Annotated[str, checked(lambda v: validation.dns1123_label(v, 40))]

IamPrincipalArn = Annotated[str, worded(
    r"arn:aws[a-z-]*:iam::\d{12}:(role|user)/[A-Za-z0-9_+=,.@/-]+",
    "must be an IAM role or user ARN: arn:aws:iam::<12-digit account>:role/<name> (or user/)",
    max_length=600,
)]

# The values CloudWatch Logs accepts for a log group's retention.
LogRetentionDays = Literal[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
]


class RuleError(ValueError):
    """A rule that spans fields failed; `key` is relative to the model or the field that
    raised it ("" for the field's value as a whole)."""

    def __init__(self, key: str, value: Any, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.value = value
        self.message = message


class Section(BaseModel):
    """Base of every config model: unknown keys rejected, values frozen after validation.

    `env_defaults` maps a field name to its default per environment; it fills keys the
    stack file leaves out, so the model's types stay exact (no Optional for "unset").
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    env_defaults: ClassVar[Mapping[str, Mapping[Environment, Any]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _fill_env_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        context = info.context or {}
        env = context.get("environment")
        if env not in ENVIRONMENTS and context.get("environment_unusable"):
            # `environment` is missing or invalid, and says so in its own error: the dev
            # defaults keep every env-defaulted key from adding a "Field required" of its own.
            env = "dev"
        if not cls.env_defaults or env not in ENVIRONMENTS or not isinstance(data, dict):
            return data
        filled = dict(data)
        for key, per_env in cls.env_defaults.items():
            filled.setdefault(key, per_env[env])
        return filled


def _off_means_absent(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """`{enabled: false}` turns an optional section off with that one key: the section reads
    as absent. Keys given beside it are still checked (an unknown or ill-typed key is an
    error), but the keys only an enabled section needs are not required."""
    if not (isinstance(value, dict) and value.get("enabled") is False):
        return handler(value)
    try:
        handler(value)
    except ValidationError as exc:
        kept: list[InitErrorDetails] = []
        for err in exc.errors(include_url=False):
            if err["type"] == "missing":
                continue
            detail: InitErrorDetails = {"type": err["type"], "loc": err["loc"], "input": err["input"]}
            if "ctx" in err:
                detail["ctx"] = err["ctx"]
            kept.append(detail)
        if kept:
            raise CoreValidationError.from_exception_data(exc.title, kept) from None
    return None


# An optional section with an `enabled` switch: `{enabled: false}` alone means "off" (None).
SwitchedOffIsAbsent = WrapValidator(_off_means_absent)


def section(description: str) -> Any:
    """A nested section that may be left out: validated from `{}` so env defaults apply."""
    return Field(default_factory=dict, validate_default=True, description=description)


def _by_env(dev: Any, prod: Any, staging: Any | None = None) -> dict[Environment, Any]:
    return {"dev": dev, "staging": prod if staging is None else staging, "prod": prod}


def environment_of(info: ValidationInfo) -> Environment | None:
    """The stack's environment, for a section's production rules: parse_stack_config puts
    it in the validation context. None when it is missing or invalid (its own error says
    so), and then no production rule runs."""
    env = (info.context or {}).get("environment")
    return env if env in ENVIRONMENTS else None


# Namespaces other components of the stack create: neither serving nor monitoring may take one.
NAMESPACES_OF_OTHERS = {
    "nvidia": "the NVIDIA device plugin (gpu_pools)",
    "keda": "KEDA (autoscaling.engine keda)",
}


def created_namespace_problem(key: str, namespace: str) -> RuleError | None:
    """Why the stack cannot create `namespace` (set at `key`): Kubernetes' own are not ours
    to create or delete, and two components of ours creating one namespace collide."""
    reserved = validation.reserved_namespace(namespace)
    if reserved:
        return RuleError(key, namespace, f"the stack creates this namespace, but {reserved}")
    if namespace in NAMESPACES_OF_OTHERS:
        owner = NAMESPACES_OF_OTHERS[namespace]
        return RuleError(key, namespace, f"is the namespace of {owner}; pick another")
    return None


class NodeGroupSizing(Section):
    min_size: int = Field(ge=0, le=100, description="Fewest nodes.")
    desired_size: int = Field(
        ge=0, le=100, description="Nodes at creation; later left to the autoscaler."
    )
    max_size: int = Field(ge=1, le=100, description="Most nodes.")

    @model_validator(mode="after")
    def _ordered(self) -> NodeGroupSizing:
        if self.min_size > self.max_size:
            raise RuleError(
                "min_size", self.min_size, f"must be <= max_size ({self.max_size})"
            )
        if not self.min_size <= self.desired_size <= self.max_size:
            raise RuleError(
                "desired_size",
                self.desired_size,
                f"must lie between min_size ({self.min_size}) and max_size ({self.max_size})",
            )
        return self


LabelValue = Annotated[str, checked(validation.label_value)]
QualifiedName = Annotated[str, checked(validation.qualified_name)]


TagKey = Annotated[str, checked(validation.tag_key)]
TagValue = Annotated[str, checked(validation.tag_value)]
# The tags every AWS resource gets from the stack itself (components/naming.py base_tags).
BASE_TAG_KEYS = frozenset({"project", "stack", "environment", "managed-by"})


def _tags_fit_beside_the_base_tags(tags: dict[str, str]) -> dict[str, str]:
    # AWS takes at most 50 tags per resource, the base tags included.
    room = validation.MAX_TAGS_PER_RESOURCE - len(BASE_TAG_KEYS)
    if len(set(tags) - BASE_TAG_KEYS) > room:
        raise RuleError(
            "",
            f"{len(tags)} tags",
            f"AWS takes 50 tags per resource and the stack sets {len(BASE_TAG_KEYS)} itself: at most {room}",
        )
    overridden = sorted(BASE_TAG_KEYS & set(tags))
    if overridden:
        raise RuleError(
            overridden[0],
            tags[overridden[0]],
            "is one of the tags the stack sets itself (project, stack, environment, managed-by)",
        )
    return tags


# The `tags` key: extra tags on every AWS resource, beside the base tags.
Tags = Annotated[dict[TagKey, TagValue], AfterValidator(_tags_fit_beside_the_base_tags)]
