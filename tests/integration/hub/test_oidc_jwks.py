"""The provider's JWKS over real HTTP and HTTPS on 127.0.0.1: fetching, caching, rotation."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from edgefleet.hub.oidc import OidcConfig, OidcError, OidcUnavailable, OidcVerifier, fetch_jwks
from edgefleet.hub.tls import HubPki, init_pki
from edgefleet.identity import Role, Via
from edgefleet.waiting import wait_for

ISSUER = "https://login.example.com/realms/edge"
AUDIENCE = "edgefleet"
DEADLINE = 10.0
"""Seconds a thread or a server may take to do its part."""

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(kid: str) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "kid": kid, "use": "sig"}


def ec_jwk(kid: str) -> dict[str, Any]:
    return {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": kid, "use": "sig"}


def token(*, key: Any = RSA_KEY, kid: str = "rsa-1", alg: str = "RS256", **extra: Any) -> str:
    """A token valid now (the verifier checks against the real time here)."""
    now = int(datetime.now(UTC).timestamp())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-42",
        "iat": now,
        "exp": now + 600,
        "edgefleet_role": "viewer",
        "edgefleet_tenants": "shop factory",
        **extra,
    }
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


@dataclass
class Clock:
    """The monotonic clock of the fetch interval, moved by the test."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Provider:
    """What the JWKS endpoint serves, and how often it was asked."""

    document: Any = field(default_factory=lambda: {"keys": [rsa_jwk("rsa-1")]})
    status: int = 200
    hits: int = 0
    hold: threading.Event | None = None
    """When set, requests wait on it before being answered."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksServer:
    """An HTTP(S) server on 127.0.0.1 in a thread, serving ``provider`` at /certs."""

    def __init__(self, provider: Provider, tls: ssl.SSLContext | None = None) -> None:
        self.provider = provider

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with provider.lock:
                    provider.hits += 1
                if provider.hold is not None:
                    provider.hold.wait(DEADLINE)
                if self.path != "/certs":
                    self.send_error(404)
                    return
                body = (
                    provider.document
                    if isinstance(provider.document, bytes)
                    else json.dumps(provider.document).encode()
                )
                self.send_response(provider.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads the counts, not the log."""

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/certs"
        self._thread = threading.Thread(
            target=lambda: self.httpd.serve_forever(poll_interval=0.05), daemon=True
        )

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(DEADLINE)


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
def server(provider: Provider) -> Iterator[JwksServer]:
    with JwksServer(provider) as running:
        yield running


def verifier_for(url: str, clock: Clock, **changes: Any) -> OidcVerifier:
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, **changes)
    return OidcVerifier(config, clock=clock)


def test_a_good_token_with_keys_over_http(server: JwksServer, provider: Provider) -> None:
    verifier = verifier_for(server.url, Clock())
    principal = verifier.verify(token())
    assert (principal.subject, principal.role, principal.via) == ("u-42", Role.VIEWER, Via.OIDC)
    assert principal.tenants == ("shop", "factory")
    verifier.verify(token())
    assert provider.hits == 1


def test_key_rotation_fetches_the_new_kid_once(server: JwksServer, provider: Provider) -> None:
    clock = Clock()
    verifier = verifier_for(server.url, clock)
    verifier.verify(token())
    # The provider publishes a new key and, a while later, signs with it.
    provider.document = {"keys": [rsa_jwk("rsa-1"), ec_jwk("ec-2")]}
    clock.now += 300
    rotated = token(key=EC_KEY, kid="ec-2", alg="ES256")
    for _ in range(5):
        assert verifier.verify(rotated).subject == "u-42"
    assert verifier.verify(token()).subject == "u-42"
    assert provider.hits == 2


def test_made_up_kids_cannot_hammer_the_provider(server: JwksServer, provider: Provider) -> None:
    clock = Clock()
    verifier = verifier_for(server.url, clock, jwks_refresh=60)
    verifier.verify(token())
    for n in range(200):
        with pytest.raises(OidcError, match=r"no key kid='made-up-\d+' in the JWKS"):
            verifier.verify(token(kid=f"made-up-{n}"))
        clock.now += 0.25
    assert provider.hits == 1
    clock.now += 10  # 60 s since the fetch: one more is allowed, then none again
    for n in range(20):
        with pytest.raises(OidcError):
            verifier.verify(token(kid=f"again-{n}"))
    assert provider.hits == 2


def test_threads_verifying_at_once_fetch_once(server: JwksServer, provider: Provider) -> None:
    provider.hold = threading.Event()
    verifier = verifier_for(server.url, Clock())
    results: list[Any] = []

    def verify() -> None:
        try:
            results.append(verifier.verify(token()).subject)
        except OidcError as exc:
            results.append(exc)

    threads = [threading.Thread(target=verify) for _ in range(16)]
    for thread in threads:
        thread.start()
    wait_for(lambda: provider.hits >= 1, timeout=DEADLINE, what="the first JWKS request")
    provider.hold.set()
    for thread in threads:
        thread.join(DEADLINE)
    assert results == ["u-42"] * 16
    assert provider.hits == 1


@pytest.mark.parametrize(
    ("status", "document", "message"),
    [
        (500, {"error": "down"}, "answered HTTP 500, not 200"),
        (200, b"<html>login</html>", "is not JSON"),
        (200, {"keys": {}}, 'not a JWKS: expected a JSON object with a "keys" list'),
    ],
)
def test_a_broken_provider_is_unavailable(
    server: JwksServer, provider: Provider, status: int, document: Any, message: str
) -> None:
    provider.status, provider.document = status, document
    clock = Clock()
    verifier = verifier_for(server.url, clock)
    for _ in range(3):
        with pytest.raises(OidcUnavailable, match=message):
            verifier.verify(token())
    assert provider.hits == 1
    provider.status, provider.document = 200, {"keys": [rsa_jwk("rsa-1")]}
    clock.now += 60
    assert verifier.verify(token()).subject == "u-42"


def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verifier = verifier_for(f"http://127.0.0.1:{port}/certs", Clock())
    with pytest.raises(OidcUnavailable, match=r"cannot fetch the JWKS from http://127\.0\.0\.1"):
        verifier.verify(token())


def test_a_provider_that_does_not_answer_times_out() -> None:
    # A listening socket nobody accepts from: the connection opens, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/certs"
        with pytest.raises(OidcUnavailable, match="ReadTimeout"):
            fetch_jwks(url, timeout=0.2)


# ---------------------------------------------------------------------------------------------
# HTTPS with the operator's own CA


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A private CA and a certificate for 127.0.0.1 it signed (what ``hub init`` makes)."""
    folder = tmp_path_factory.mktemp("pki")
    init_pki(folder, ["127.0.0.1"])
    files = HubPki(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.server_cert, files.server_key)
    return Pki(ca_file=files.ca_cert, server=context)


def test_https_with_the_operators_ca(pki: Pki, provider: Provider) -> None:
    with JwksServer(provider, tls=pki.server) as server:
        verifier = verifier_for(server.url, Clock(), ca_file=pki.ca_file)
        assert verifier.verify(token()).subject == "u-42"
        assert provider.hits == 1
        # Without the CA, the system's trust store does not know the server: no keys.
        untrusting = verifier_for(server.url, Clock())
        with pytest.raises(OidcUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.verify(token())
