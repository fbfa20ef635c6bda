"""Container images of our own workload: a pinned tag, and where the stack asks for it
(prod by default) the digest of that tag, so every pod of a rollout runs the same bytes.

It names and resolves images only: it must not decide which image a component runs (the
components do) and creates no resource; third-party software comes from its chart instead.

A digest comes from the catalogue `image-digests.json` when recorded there
(`python -m tools.pin_images` writes it), else it is resolved from the registry when the
program runs, over the OCI distribution API (distribution-spec `spec.md`: a HEAD of
`/v2/<name>/manifests/<tag>` answers the digest in `Docker-Content-Digest`; anonymous
pulls get a bearer token from the realm named in the 401 `WWW-Authenticate` challenge,
docker/distribution `docs/spec/auth/token.md`). Docker Hub and ECR Public both work so.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pulumi

DIGESTS_FILE = Path(__file__).with_name("image-digests.json")
DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
# Index types first: a multi-arch tag's digest is its index, which every node can pull.
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
# Docker Hub serves its API from another host than the name people write.
REGISTRY_API_HOSTS = {"docker.io": "registry-1.docker.io"}


class ImageDigestError(pulumi.RunError):
    """A digest that could not be had: names the image and what went wrong (a RunError:
    `pulumi up` prints the message alone, no traceback)."""


@dataclass(frozen=True)
class Image:
    registry: str  # as people write it: docker.io, public.ecr.aws
    repository: str  # tensorflow/serving, aws-cli/aws-cli
    tag: str

    @property
    def name(self) -> str:
        """`repository:tag`, with the registry unless it is Docker Hub (as `docker pull` takes it)."""
        base = self.repository if self.registry == "docker.io" else f"{self.registry}/{self.repository}"
        return f"{base}:{self.tag}"

    def reference(self, digest: str | None = None, mirror: str | None = None) -> str:
        """What a pod's `image` field gets: the tag, `@digest` if pinned (the digest wins,
        the tag stays for people), through `mirror` (a pull-through cache prefix) if set."""
        base = f"{mirror}/{self.repository}" if mirror else self.name.rsplit(":", 1)[0]
        return f"{base}:{self.tag}" + (f"@{digest}" if digest else "")


def recorded_digests(path: Path = DIGESTS_FILE) -> dict[str, str]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {k: v for k, v in data.get("digests", {}).items()}


Fetch = Callable[[urllib.request.Request, float], tuple[int, dict[str, str], bytes]]


def _fetch(request: urllib.request.Request, timeout: float) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (https only)
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def _challenge(header: str) -> dict[str, str]:
    """The parameters of a `Bearer realm="...",service="...",scope="..."` challenge."""
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def resolve_digest(
    image: Image,
    *,
    scheme: str = "https",
    api_host: str | None = None,
    fetch: Fetch = _fetch,
    timeout: float = 20.0,
) -> str:
    """The digest the registry serves for `image`'s tag now."""
    host = api_host or REGISTRY_API_HOSTS.get(image.registry, image.registry)
    url = f"{scheme}://{host}/v2/{image.repository}/manifests/{urllib.parse.quote(image.tag)}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        status, answer, _ = fetch(urllib.request.Request(url, method="HEAD", headers=headers), timeout)
        if status == 401:
            params = _challenge(answer.get("www-authenticate", ""))
            if "realm" not in params:
                raise ImageDigestError(f"{image.name}: the registry asks for credentials it does not name")
            query = {"service": params.get("service", host), "scope": f"repository:{image.repository}:pull"}
            token_url = params["realm"] + "?" + urllib.parse.urlencode(query)
            t_status, _, body = fetch(urllib.request.Request(token_url), timeout)
            if t_status != 200:
                raise ImageDigestError(f"{image.name}: the registry refused an anonymous token (HTTP {t_status})")
            token_doc = json.loads(body)
            token = token_doc.get("token") or token_doc.get("access_token")
            headers["Authorization"] = f"Bearer {token}"
            status, answer, _ = fetch(urllib.request.Request(url, method="HEAD", headers=headers), timeout)
    except (OSError, ValueError) as err:
        raise ImageDigestError(f"{image.name}: the registry {host} could not be reached ({err})") from err
    if status == 404:
        raise ImageDigestError(f"{image.name}: the registry has no such tag")
    if status != 200:
        raise ImageDigestError(f"{image.name}: the registry answered HTTP {status}")
    digest = answer.get("docker-content-digest", "")
    if not DIGEST_PATTERN.match(digest):
        raise ImageDigestError(f"{image.name}: the registry sent no sha256 digest (got {digest!r})")
    return digest


Resolver = Callable[[Image], str]
_resolver: Resolver = resolve_digest


def set_resolver(resolver: Resolver) -> Resolver:
    """Swap how unrecorded digests are found (the offline mock engine has no registry);
    returns the previous resolver."""
    global _resolver
    previous, _resolver = _resolver, resolver
    return previous


def digest_for(image: Image) -> str:
    """The digest to run `image` by: the recorded one, else the registry's answer now."""
    return recorded_digests().get(image.name) or _resolver(image)


def pinned(image: Image, *, by_digest: bool, mirror: str | None = None) -> str:
    """The pod `image` for `image`: by digest when asked (recorded first, else resolved)."""
    return image.reference(digest_for(image) if by_digest else None, mirror=mirror)
