"""Digests from a registry that speaks the OCI distribution API, served on loopback.

The fake registry does what Docker Hub and ECR Public do for an anonymous pull
(distribution-spec spec.md, docker/distribution docs/spec/auth/token.md): a manifest HEAD
without a token gets 401 and a `Bearer realm=...,service=...` challenge; the realm hands
out a token for `repository:<name>:pull`; with it, the HEAD answers the digest in
`Docker-Content-Digest`, and an unknown tag 404.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from components import images

DIGEST = "sha256:" + "ab" * 32
TOKEN = "anonymous-pull-token"


class FakeRegistry(BaseHTTPRequestHandler):
    tags: dict[tuple[str, str], str] = {("tensorflow/serving", "2.19.1-gpu"): DIGEST}
    seen: list[tuple[str, str, dict[str, str]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.seen.append(("GET", url.path, dict(self.headers)))
        if url.path == "/token":
            query = parse_qs(url.query)
            ok = query.get("service") == ["fake.registry"] and query["scope"][0].endswith(":pull")
            self._answer(200 if ok else 400, {"Content-Type": "application/json"}, json.dumps({"token": TOKEN}).encode())
        else:
            self._answer(404, {})

    def do_HEAD(self) -> None:
        url = urlparse(self.path)
        self.seen.append(("HEAD", url.path, dict(self.headers)))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            # The fixture serves over TCP: its address is (host, port), not a socket path.
            assert isinstance(self.server, ThreadingHTTPServer)
            realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
            self._answer(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake.registry"'})
            return
        name, _, tag = url.path.removeprefix("/v2/").partition("/manifests/")
        digest = self.tags.get((name, tag))
        if digest is None:
            self._answer(404, {})
        else:
            self._answer(200, {"Docker-Content-Digest": digest, "Content-Type": "application/vnd.oci.image.index.v1+json"})


@pytest.fixture
def registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeRegistry.seen = []
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_resolves_a_tag_through_the_token_challenge(registry: str) -> None:
    image = images.Image("docker.io", "tensorflow/serving", "2.19.1-gpu")
    assert images.resolve_digest(image, scheme="http", api_host=registry) == DIGEST
    methods = [(m, p) for m, p, _ in FakeRegistry.seen]
    assert methods == [
        ("HEAD", "/v2/tensorflow/serving/manifests/2.19.1-gpu"),
        ("GET", "/token"),
        ("HEAD", "/v2/tensorflow/serving/manifests/2.19.1-gpu"),
    ]
    # The index types are asked for first: a multi-arch tag's digest is its index.
    accept = FakeRegistry.seen[-1][2]["Accept"]
    assert accept.startswith("application/vnd.oci.image.index.v1+json")


def test_an_unknown_tag_is_a_clear_error(registry: str) -> None:
    image = images.Image("docker.io", "tensorflow/serving", "9.9.9-gpu")
    with pytest.raises(images.ImageDigestError, match=r"tensorflow/serving:9\.9\.9-gpu: the registry has no such tag"):
        images.resolve_digest(image, scheme="http", api_host=registry)


def test_an_unreachable_registry_is_a_clear_error() -> None:
    image = images.Image("public.ecr.aws", "aws-cli/aws-cli", "2.34.48")
    with pytest.raises(images.ImageDigestError, match=r"public\.ecr\.aws/aws-cli/aws-cli:2\.34\.48: the registry .* could not be reached"):
        images.resolve_digest(image, scheme="http", api_host="127.0.0.1:9", timeout=2)


def test_a_recorded_digest_wins_over_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = "sha256:" + "cd" * 32
    path = tmp_path / "digests.json"
    path.write_text(json.dumps({"digests": {"tensorflow/serving:2.19.1-gpu": recorded}}))
    monkeypatch.setattr(images, "DIGESTS_FILE", path)
    asked: list[str] = []

    def resolve(image: images.Image) -> str:
        asked.append(image.name)
        return DIGEST

    previous = images.set_resolver(resolve)
    try:
        monkeypatch.setattr(images, "recorded_digests", lambda p=path: json.loads(p.read_text())["digests"])
        image = images.Image("docker.io", "tensorflow/serving", "2.19.1-gpu")
        assert images.pinned(image, by_digest=True) == f"tensorflow/serving:2.19.1-gpu@{recorded}"
        other = images.Image("docker.io", "tensorflow/serving", "2.19.1")
        assert images.pinned(other, by_digest=True) == f"tensorflow/serving:2.19.1@{DIGEST}"
        assert images.pinned(other, by_digest=False) == "tensorflow/serving:2.19.1"
        assert asked == ["tensorflow/serving:2.19.1"]
    finally:
        images.set_resolver(previous)


def test_a_mirror_keeps_the_repository_and_the_digest() -> None:
    image = images.Image("docker.io", "tensorflow/serving", "2.19.1-gpu")
    mirror = "123456789012.dkr.ecr.us-west-2.amazonaws.com/docker-hub"
    assert image.reference(DIGEST, mirror=mirror) == f"{mirror}/tensorflow/serving:2.19.1-gpu@{DIGEST}"


def test_pin_check_names_every_image_without_a_recorded_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools import pin_images

    path = tmp_path / "digests.json"
    path.write_text(json.dumps({"digests": {}}))
    assert pin_images.main(["--check"], path=path) == 1
    missing = capsys.readouterr().err
    assert "tensorflow/serving:2.19.1-gpu" in missing and "public.ecr.aws/aws-cli/aws-cli:2.34.48" in missing
    every = {i.name: "sha256:" + "ef" * 32 for found in pin_images.stack_images().values() for i in found}
    path.write_text(json.dumps({"digests": every}))
    assert pin_images.main(["--check"], path=path) == 0
