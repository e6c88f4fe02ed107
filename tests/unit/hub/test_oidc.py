"""The operator's provider's JWTs as principals: configuration, claims, keys and their cache.

Keys are made here and tokens signed with PyJWT; the JWKS comes from a function (no network;
tests/integration/hub/test_oidc_jwks.py fetches it over HTTP).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from edgefleet.hub.oidc import (
    JwtHeader,
    OidcConfig,
    OidcError,
    OidcUnavailable,
    OidcVerifier,
    check_claims,
    fetch_jwks,
    jwks_fetch_due,
    looks_like_jwt,
    parse_header,
    parse_jwks,
    principal_from_claims,
    read_jwks_file,
    select_key,
)
from edgefleet.identity import Principal, Role, Via

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T0 = int(NOW.timestamp())
ISSUER = "https://login.example.com/realms/edge"
AUDIENCE = "edgefleet"

# Keys are slow to make (RSA): once per module.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``key`` as a provider publishes it."""
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    return {**jwk, "use": "sig", **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    return {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}


def ed_jwk(key: ed25519.Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    return {**OKPAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


def claims(**changes: Any) -> dict[str, Any]:
    """A developer's good claims at NOW; ``None`` values remove a claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-1234",
        "email": "ada@example.com",
        "iat": T0 - 10,
        "exp": T0 + 300,
        "jti": "tok-1",
        "edgefleet_role": "developer",
        "edgefleet_tenants": ["shop"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    payload: dict[str, Any],
    key: Any = RSA_KEY,
    *,
    kid: str | None = "k1",
    alg: str = "RS256",
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def config(**changes: Any) -> OidcConfig:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": "https://login.example.com/realms/edge/certs",
    }
    values.update(changes)
    return OidcConfig(**values)


@dataclass
class Clock:
    """A monotonic clock the test moves."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Provider:
    """The provider's JWKS endpoint, as a function that counts its calls."""

    document: Any
    calls: int = 0
    failure: str | None = None

    def __call__(self) -> Any:
        self.calls += 1
        if self.failure is not None:
            raise OidcUnavailable(self.failure)
        return self.document


@dataclass
class Setup:
    verifier: OidcVerifier
    provider: Provider
    clock: Clock = field(default_factory=Clock)


def make(document: Any = None, **changes: Any) -> Setup:
    provider = Provider(document if document is not None else jwks(rsa_jwk(RSA_KEY, "k1")))
    clock = Clock()
    verifier = OidcVerifier(config(**changes), fetch=provider, clock=clock, wall_clock=lambda: NOW)
    return Setup(verifier, provider, clock)


def refused(setup: Setup, token: str) -> str:
    with pytest.raises(OidcError) as caught:
        setup.verifier.verify(token)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# Good tokens


def test_a_good_token_is_a_principal() -> None:
    setup = make()
    principal = setup.verifier.verify(sign(claims()))
    assert principal == Principal(
        subject="u-1234",
        role=Role.DEVELOPER,
        via=Via.OIDC,
        tenants=("shop",),
        token_id="tok-1",
        expires=datetime.fromtimestamp(T0 + 300, UTC),
    )
    assert setup.provider.calls == 1


@pytest.mark.parametrize(
    ("key", "jwk", "alg"),
    [
        (EC_KEY, ec_jwk(EC_KEY, "k1"), "ES256"),
        (ED_KEY, ed_jwk(ED_KEY, "k1"), "EdDSA"),
    ],
)
def test_ec_and_ed25519_keys_verify_too(key: Any, jwk: dict[str, Any], alg: str) -> None:
    setup = make(jwks(jwk))
    assert setup.verifier.verify(sign(claims(), key, alg=alg)).role == Role.DEVELOPER


def test_the_subject_can_be_the_email_when_verified() -> None:
    setup = make(subject_claim="email")
    assert setup.verifier.verify(sign(claims())).subject == "ada@example.com"
    assert setup.verifier.verify(sign(claims(email_verified=True))).subject == "ada@example.com"
    for unverified in (False, "false"):
        why = refused(setup, sign(claims(email_verified=unverified)))
        assert why == "email 'ada@example.com' is not verified by the provider"


def test_admins_and_operators_need_no_tenants() -> None:
    setup = make()
    for role in ("admin", "operator"):
        principal = setup.verifier.verify(sign(claims(edgefleet_role=role, edgefleet_tenants=None)))
        assert principal.role == Role(role)
        assert principal.tenants == ()


# ---------------------------------------------------------------------------------------------
# Time, issuer, audience


def test_an_expired_token_is_refused_after_the_leeway() -> None:
    setup = make()
    assert setup.verifier.verify(sign(claims(exp=T0 - 29))).subject == "u-1234"
    why = refused(setup, sign(claims(exp=T0 - 30)))
    assert why == ("token expired at 2026-03-01T11:59:30Z (now 2026-03-01T12:00:00Z, leeway 30s)")


def test_a_token_must_carry_exp() -> None:
    why = refused(make(), sign(claims(exp=None)))
    assert why == "the token has no exp claim: tokens must carry an expiry time"


@pytest.mark.parametrize("bad", ["tomorrow", True, float("inf"), -1, 10**13])
def test_exp_must_be_a_time(bad: Any) -> None:
    setup = make()
    payload = json.dumps(claims(exp=bad)).encode()
    token = jwt.PyJWS().encode(payload, RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
    assert refused(setup, token).startswith("claim exp is not a time in seconds since 1970")


def test_a_token_not_yet_valid_is_refused() -> None:
    setup = make()
    assert setup.verifier.verify(sign(claims(nbf=T0 + 30))).subject == "u-1234"
    why = refused(setup, sign(claims(nbf=T0 + 31)))
    assert why == "token not valid before 2026-03-01T12:00:31Z (now 2026-03-01T12:00:00Z)"
    why = refused(setup, sign(claims(iat=T0 + 600)))
    assert why.startswith("token issued in the future, at 2026-03-01T12:10:00Z")


def test_another_issuer_is_refused() -> None:
    why = refused(make(), sign(claims(iss="https://evil.example.com")))
    assert why == (
        "issuer 'https://evil.example.com' is not the configured"
        " 'https://login.example.com/realms/edge'"
    )
    assert "no iss claim" in refused(make(), sign(claims(iss=None)))


def test_a_token_for_another_audience_is_refused() -> None:
    setup = make()
    why = refused(setup, sign(claims(aud="billing")))
    assert why == (
        "audience 'billing' does not include the configured 'edgefleet':"
        " the token was made for another application"
    )
    assert setup.verifier.verify(sign(claims(aud=["billing", AUDIENCE]))).subject == "u-1234"
    assert "no audience" in refused(setup, sign(claims(aud=None)))


@given(
    exp_offset=st.integers(min_value=-10_000, max_value=10_000),
    leeway=st.integers(min_value=0, max_value=300),
)
def test_a_token_is_good_until_exp_plus_leeway(exp_offset: int, leeway: int) -> None:
    # RFC 7519 4.1.4: the current time must be before exp (here, give or take the leeway).
    token_claims = claims(exp=T0 + exp_offset, iat=None)
    try:
        check_claims(token_claims, config=config(leeway=leeway), now=NOW)
        accepted = True
    except OidcError as exc:
        assert str(exc).startswith("token expired at")
        accepted = False
    assert accepted == (exp_offset + leeway > 0)


# ---------------------------------------------------------------------------------------------
# Signatures and algorithms


def test_a_token_signed_by_another_key_is_refused() -> None:
    why = refused(make(), sign(claims(), RSA_OTHER))
    assert why == "signature does not match key kid='k1': the token was not signed by the provider"


def test_alg_none_is_refused() -> None:
    token = jwt.encode(claims(), "", algorithm="none", headers={"kid": "k1"})
    assert looks_like_jwt(token)
    setup = make()
    assert refused(setup, token) == "unsigned token (alg none): never accepted"
    assert setup.provider.calls == 0


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    # Algorithm confusion: a verifier that takes the token's word for the algorithm would check
    # an HMAC with the provider's public key as the secret, which anyone can compute.
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    token = f"{head}.{body}.{b64(mac)}"
    assert looks_like_jwt(token)
    why = refused(make(algorithms=("RS256",)), token)
    assert why == "algorithm 'HS256' is not accepted (accepted: RS256)"


def test_a_key_of_one_type_does_not_verify_another_algorithm() -> None:
    setup = make(jwks(rsa_jwk(RSA_KEY, "k1"), ec_jwk(EC_KEY, "k2")))
    token = sign(claims(), EC_KEY, kid="k1", alg="ES256")
    # The key is known: no refetch for a type mismatch beyond the first fetch.
    assert refused(setup, token) == ("key kid='k1' is a RSA key for RS256, the token says 'ES256'")
    assert setup.provider.calls == 1


def test_an_algorithm_outside_the_configured_ones_is_refused() -> None:
    why = refused(make(algorithms=("ES256",)), sign(claims()))
    assert why == "algorithm 'RS256' is not accepted (accepted: ES256)"


def test_a_tampered_payload_is_refused() -> None:
    head, _body, sig = sign(claims()).split(".")
    forged = b64(json.dumps(claims(edgefleet_role="admin")).encode())
    assert refused(make(), f"{head}.{forged}.{sig}").startswith("signature does not match")


def test_a_token_without_kid_uses_the_only_fitting_key() -> None:
    setup = make(jwks(rsa_jwk(RSA_KEY, None)))
    assert setup.verifier.verify(sign(claims(), kid=None)).subject == "u-1234"
    setup = make(jwks(rsa_jwk(RSA_KEY, "k1"), rsa_jwk(RSA_OTHER, "k2")))
    assert "names no key" in refused(setup, sign(claims(), kid=None))


# ---------------------------------------------------------------------------------------------
# Role and tenants


def test_a_missing_role_is_refused() -> None:
    why = refused(make(), sign(claims(edgefleet_role=None)))
    assert why == (
        "claim edgefleet_role missing: the provider must send one of"
        " admin, operator, developer, viewer"
    )


def test_an_unknown_role_is_refused() -> None:
    why = refused(make(), sign(claims(edgefleet_role="superuser")))
    assert why == (
        "claim edgefleet_role is 'superuser': the provider must send one of"
        " admin, operator, developer, viewer"
    )
    assert "must be a role name" in refused(make(), sign(claims(edgefleet_role={"x": 1})))


def test_the_site_role_cannot_come_from_oidc() -> None:
    for role in ("site", ["viewer", "site"]):
        why = refused(make(), sign(claims(edgefleet_role=role)))
        assert why.startswith("role site cannot come from OIDC")


def test_a_list_of_roles_gives_the_strongest_known_one() -> None:
    token = sign(claims(edgefleet_role=["offline_access", "Viewer", "developer"]))
    assert make().verifier.verify(token).role == Role.DEVELOPER


@pytest.mark.parametrize(
    ("sent", "tenants"),
    [
        (["shop", "factory"], ("shop", "factory")),
        ("shop factory", ("shop", "factory")),
        ("shop,factory", ("shop", "factory")),
        (" shop, factory  shop ", ("shop", "factory")),
    ],
)
def test_tenants_as_a_list_or_a_string(sent: Any, tenants: tuple[str, ...]) -> None:
    assert make().verifier.verify(sign(claims(edgefleet_tenants=sent))).tenants == tenants


def test_a_developer_without_tenants_is_refused() -> None:
    sent: Any
    for sent in (None, [], " , "):
        why = refused(make(), sign(claims(edgefleet_tenants=sent)))
        assert why.startswith("claim edgefleet_tenants missing or empty: role developer")
    assert "must be a list of tenant names" in refused(
        make(), sign(claims(edgefleet_tenants=["shop", 3]))
    )


def test_claim_names_are_configurable() -> None:
    setup = make(role_claim="https://edge.example/role", tenants_claim="tenants")
    token = sign(
        claims(
            edgefleet_role=None,
            edgefleet_tenants=None,
            **{"https://edge.example/role": "viewer", "tenants": "lab"},
        )
    )
    principal = setup.verifier.verify(token)
    assert (principal.role, principal.tenants) == (Role.VIEWER, ("lab",))


def test_groups_map_to_the_strongest_role() -> None:
    setup = make(group_roles={"edge-devs": "developer", "edge-ops": "operator", "all": "viewer"})
    token = sign(claims(edgefleet_role=None, groups=["all", "edge-devs", "edge-ops"]))
    assert setup.verifier.verify(token).role == Role.OPERATOR
    token = sign(claims(edgefleet_role=None, groups="all edge-devs"))
    assert setup.verifier.verify(token).role == Role.DEVELOPER
    why = refused(setup, sign(claims(groups=["marketing"])))
    assert why.startswith("no group of the caller maps to a role: claim groups holds 'marketing'")


def test_with_group_roles_the_role_claim_does_not_count() -> None:
    setup = make(group_roles={"edge-ops": "operator"})
    # The token claims admin, its groups say operator: groups win.
    principal = setup.verifier.verify(sign(claims(edgefleet_role="admin", groups=["edge-ops"])))
    assert principal.role == Role.OPERATOR
    assert "no group of the caller" in refused(setup, sign(claims(edgefleet_role="admin")))


# ---------------------------------------------------------------------------------------------
# Keys: cache, rotation, rate limit


def test_keys_are_cached() -> None:
    setup = make()
    for _ in range(5):
        setup.verifier.verify(sign(claims()))
    assert setup.provider.calls == 1


def test_a_new_kid_is_fetched_once_after_rotation() -> None:
    setup = make()
    setup.verifier.verify(sign(claims()))
    setup.provider.document = jwks(rsa_jwk(RSA_KEY, "k1"), rsa_jwk(RSA_OTHER, "k2"))
    setup.clock.now += 61
    for _ in range(3):
        assert setup.verifier.verify(sign(claims(), RSA_OTHER, kid="k2")).subject == "u-1234"
    assert setup.provider.calls == 2
    assert setup.verifier.verify(sign(claims())).subject == "u-1234"
    assert setup.provider.calls == 2


def test_unknown_kids_refetch_at_most_once_per_interval() -> None:
    setup = make()
    setup.verifier.verify(sign(claims()))
    for n in range(50):
        why = refused(setup, sign(claims(), kid=f"garbage-{n}"))
        assert why.startswith(f"no key kid='garbage-{n}' in the JWKS")
        setup.clock.now += 1
    # 50 s passed since the fetch: none of them fetched; the 61st second may.
    assert setup.provider.calls == 1
    setup.clock.now += 11
    refused(setup, sign(claims(), kid="garbage-x"))
    refused(setup, sign(claims(), kid="garbage-y"))
    assert setup.provider.calls == 2


def test_a_provider_that_is_down_is_asked_at_most_once_per_interval() -> None:
    setup = make()
    setup.provider.failure = "cannot fetch the JWKS: connection refused"
    for _ in range(3):
        with pytest.raises(OidcUnavailable, match="connection refused"):
            setup.verifier.verify(sign(claims()))
    assert setup.provider.calls == 1
    setup.provider.failure = None
    setup.clock.now += 60
    assert setup.verifier.verify(sign(claims())).subject == "u-1234"
    assert setup.provider.calls == 2


def test_old_keys_are_refetched_and_a_withdrawn_key_stops_working() -> None:
    setup = make(jwks_max_age=600)
    setup.verifier.verify(sign(claims()))
    setup.provider.document = jwks(rsa_jwk(RSA_OTHER, "k2"))
    setup.clock.now += 599
    setup.verifier.verify(sign(claims()))
    assert setup.provider.calls == 1
    setup.clock.now += 1
    assert refused(setup, sign(claims())).startswith("no key kid='k1' in the JWKS")
    assert setup.provider.calls == 2


def test_keys_at_hand_are_kept_when_a_refresh_fails() -> None:
    setup = make(jwks_max_age=600)
    setup.verifier.verify(sign(claims()))
    setup.provider.failure = "HTTP 503"
    setup.clock.now += 700
    assert setup.verifier.verify(sign(claims())).subject == "u-1234"
    assert setup.provider.calls == 2
    why = refused(setup, sign(claims(), RSA_OTHER, kid="k2"))
    assert "the last fetch failed: HTTP 503" in why


def test_a_jwks_without_usable_keys_is_unavailable() -> None:
    setup = make(jwks({"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}))
    with pytest.raises(OidcUnavailable, match="holds no key for RS256, ES256, EdDSA"):
        setup.verifier.verify(sign(claims()))


def test_jwks_parsing_keeps_signature_keys_only() -> None:
    document = {
        "keys": [
            rsa_jwk(RSA_KEY, "sig"),
            rsa_jwk(RSA_OTHER, "enc", use="enc"),
            {**rsa_jwk(RSA_OTHER, "private"), "d": "AQAB"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            ec_jwk(EC_KEY, "ec"),
            rsa_jwk(RSA_OTHER, "ps", alg="PS256"),
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not a key",
        ]
    }
    keys, skipped = parse_jwks(document, accepted=("RS256", "ES256", "PS256"))
    assert [(k.kid, sorted(k.algorithms)) for k in keys] == [
        ("sig", ["PS256", "RS256"]),
        ("ec", ["ES256"]),
        ("ps", ["PS256"]),
    ]
    assert len(skipped) == 5
    with pytest.raises(ValueError, match="not a JWKS"):
        parse_jwks({"keys": "none"}, accepted=("RS256",))


def test_select_key_by_kid_and_algorithm() -> None:
    keys, _ = parse_jwks(
        jwks(rsa_jwk(RSA_KEY, "a"), ec_jwk(EC_KEY, "b")), accepted=("RS256", "ES256")
    )
    assert select_key(keys, JwtHeader("ES256", "b")) is keys[1]
    assert select_key(keys, JwtHeader("RS256", "b")) is None
    assert select_key(keys, JwtHeader("RS256", None)) is keys[0]
    assert select_key(keys, JwtHeader("RS256", "c")) is None


@given(
    last=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    since=st.integers(min_value=0, max_value=10**6),
    found=st.booleans(),
    refresh=st.integers(min_value=0, max_value=3600),
)
def test_never_two_fetches_within_the_refresh_interval(
    last: int | None, since: int, found: bool, refresh: int
) -> None:
    # Whole seconds: the property is about the rule, not about float rounding.
    now = (last or 0) + since
    due = jwks_fetch_due(
        now=now, last_attempt=last, fetched_at=last, key_found=found, refresh=refresh, max_age=60
    )
    if last is not None and since < refresh:
        assert not due
    if last is None or (since >= refresh and not found):
        assert due


def test_jwks_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(rsa_jwk(RSA_KEY, "k1"))))
    clock = Clock()
    cfg = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_file=path)
    verifier = OidcVerifier(cfg, clock=clock, wall_clock=lambda: NOW)
    assert verifier.verify(sign(claims())).subject == "u-1234"
    # The operator copies the provider's new keys; the next unknown kid reads the file again.
    path.write_text(json.dumps(jwks(rsa_jwk(RSA_OTHER, "k2"))))
    clock.now += 60
    assert verifier.verify(sign(claims(), RSA_OTHER, kid="k2")).subject == "u-1234"
    path.unlink()
    clock.now += 60
    with pytest.raises(OidcError) as caught:
        verifier.verify(sign(claims(), kid="k3"))
    assert f"the last fetch failed: cannot read the JWKS file {path}" in str(caught.value)


def test_read_jwks_file_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(OidcUnavailable, match="cannot read the JWKS file"):
        read_jwks_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(OidcUnavailable, match="is not JSON"):
        read_jwks_file(tmp_path / "bad.json")


def test_fetch_jwks_over_a_fake_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/certs":
            return httpx.Response(200, json=jwks(rsa_jwk(RSA_KEY, "k1")))
        if request.url.path == "/moved":
            return httpx.Response(302, headers={"location": "/certs"})
        return httpx.Response(200, content=b"x" * (2 * 1024 * 1024))

    transport = httpx.MockTransport(handler)
    document = fetch_jwks("https://idp.example/certs", transport=transport)
    assert document["keys"][0]["kid"] == "k1"
    with pytest.raises(OidcUnavailable, match="answered HTTP 302, not 200"):
        fetch_jwks("https://idp.example/moved", transport=transport)
    with pytest.raises(OidcUnavailable, match="larger than"):
        fetch_jwks("https://idp.example/huge", transport=transport)
    assert len(seen) == 3


# ---------------------------------------------------------------------------------------------
# Shape of tokens


def test_looks_like_jwt() -> None:
    assert looks_like_jwt(sign(claims()))
    assert make().verifier.looks_like_jwt(sign(claims()))
    assert parse_header(sign(claims(), kid="k9")) == JwtHeader("RS256", "k9")
    head = b64(b'{"alg":"RS256"}')
    not_jwts = [
        "efu_0123456789abcdef_" + "A" * 43,
        "",
        "a.b",
        f"{head}.e30.sig.more",
        f"{head}.e30!.sig",
        f"{b64(b'not json')}.e30.sig",
        f"{b64(b'[1]')}.e30.sig",
        f"{b64(b'{}')}.e30.sig",
        f"{b64(json.dumps({'alg': 'RS256', 'kid': 7}).encode())}.e30.sig",
        f"{head}.{'A' * 20000}.sig",
    ]
    for token in not_jwts:
        assert not looks_like_jwt(token), token


@given(st.text(max_size=300))
def test_any_text_is_refused_with_an_oidc_error(text: str) -> None:
    setup = make()
    looks_like_jwt(text)
    with pytest.raises(OidcError):
        setup.verifier.verify(text)


@given(
    part=st.sampled_from([0, 1, 2]),
    garbage=st.text(alphabet="ABCDEFabcdef0123456789-_", min_size=0, max_size=40),
)
def test_a_mangled_token_is_refused_with_an_oidc_error(part: int, garbage: str) -> None:
    setup = make()
    parts = sign(claims()).split(".")
    parts[part] = garbage
    with pytest.raises(OidcError):
        setup.verifier.verify(".".join(parts))


def test_the_token_never_reaches_the_log_or_the_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgefleet.hub.oidc")
    setup = make(jwks(rsa_jwk(RSA_KEY, "k1"), rsa_jwk(RSA_OTHER, "k2", use="enc")))
    tokens = [
        sign(claims()),
        sign(claims(exp=T0 - 3600)),
        sign(claims(), RSA_OTHER),
        sign(claims(), kid="unknown"),
        sign(claims(edgefleet_role="site")),
    ]
    messages = []
    for token in tokens:
        try:
            setup.verifier.verify(token)
        except OidcError as exc:
            messages.append(str(exc))
        setup.provider.failure = "down"
        setup.clock.now += 120
    assert len(messages) == 4
    assert caplog.records, "fetches and failures are logged"
    for token in tokens:
        signature = token.rsplit(".", 1)[1]
        assert signature not in caplog.text
        assert all(signature not in message for message in messages)


# ---------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/certs", "http://localhost/certs", "http://[::1]/certs"],
)
def test_plain_http_only_to_loopback(url: str) -> None:
    assert config(jwks_url=url).jwks_url == url


@pytest.mark.parametrize(
    "url", ["http://idp.example.com/certs", "ftp://idp.example.com/certs", "https:///x", "certs"]
)
def test_other_jwks_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"must be an https:// URL \(plain http:// only"):
        config(jwks_url=url)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"issuer": ""}, "issuer: required"),
        ({"audience": "  "}, "audience: required"),
        ({"jwks_url": None}, "exactly one of them"),
        ({"jwks_file": Path("keys.json")}, "exactly one of them"),
        ({"algorithms": ("none",)}, "'none' accepts unsigned tokens"),
        ({"algorithms": ("RS256", "HS256")}, "HS256 is a shared-secret algorithm"),
        ({"algorithms": ("RS1",)}, "'RS1' is not one of"),
        ({"algorithms": ()}, "name at least one"),
        ({"algorithms": "RS256"}, "expected a list"),
        ({"group_roles": {"agents": "site"}}, "role site cannot come from OIDC"),
        ({"group_roles": {"x": "root"}}, "role 'root' is not one of admin, operator"),
        ({"leeway": -1}, "leeway: expected 0 or more seconds"),
        ({"jwks_refresh": "often"}, "jwks_refresh: expected a number"),
        ({"jwks_max_age": 0}, "jwks_max_age: expected more than 0"),
        ({"role_claim": ""}, "role_claim: a claim name"),
    ],
)
def test_bad_configuration_says_which_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**changes)


def test_ca_file_only_with_a_url() -> None:
    with pytest.raises(ValueError, match="ca_file: applies to jwks_url only"):
        OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_file=Path("k"), ca_file=Path("ca"))


def test_group_roles_are_roles_and_immutable() -> None:
    cfg = config(group_roles={"ops": "operator"})
    assert cfg.group_roles == {"ops": Role.OPERATOR}
    with pytest.raises(TypeError):
        cfg.group_roles["ops"] = Role.ADMIN  # type: ignore[index]


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "oidc.yaml"
    path.write_text(
        f"""
issuer: {ISSUER}
audience: {AUDIENCE}
jwksFile: keys/jwks.json
roleClaim: role
tenantsClaim: tenants
groupRoles:
  edge-ops: operator
algorithms: [RS256, PS256]
leeway: 10
jwksRefresh: 120
"""
    )
    cfg = OidcConfig.from_file(path)
    assert cfg == OidcConfig(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=tmp_path / "keys" / "jwks.json",
        role_claim="role",
        tenants_claim="tenants",
        group_roles={"edge-ops": Role.OPERATOR},
        algorithms=("RS256", "PS256"),
        leeway=10,
        jwks_refresh=120,
    )


HEAD = "issuer: x\naudience: y\n"
GOOD = HEAD + "jwksUrl: https://a/b\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD + "jwks_url: https://a/b\n", "jwks_url: unknown field: did you mean 'jwksUrl'?"),
        (GOOD + "leway: 3\n", "leway: unknown field: did you mean 'leeway'?"),
        ("audience: y\njwksUrl: https://a/b\n", "issuer: required"),
        (
            HEAD + "jwksUrl: http://idp.example/certs\n",
            "jwksUrl: 'http://idp.example/certs' must be an https:// URL",
        ),
        (GOOD + "leeway: soon\n", "leeway: expected a number of seconds"),
        (GOOD + "algorithms: [HS256]\n", "algorithms: HS256 is a shared-secret"),
        (GOOD + "groupRoles: [a]\n", "groupRoles: expected a mapping"),
        (HEAD, "jwksUrl: set jwksUrl (the provider's keys over HTTPS) or jwksFile"),
        ("- a\n", "expected a mapping of OIDC settings"),
        ("issuer: [\n", "not valid YAML"),
    ],
)
def test_from_file_names_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "oidc.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        OidcConfig.from_file(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_from_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read it"):
        OidcConfig.from_file(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------------------------
# The pure parts alone


def test_principal_from_claims_alone() -> None:
    cfg = config()
    principal = principal_from_claims(claims(edgefleet_role="viewer", jti=None), config=cfg)
    assert (principal.role, principal.tenants, principal.token_id) == (
        Role.VIEWER,
        ("shop",),
        None,
    )
    assert principal.in_tenant("shop")
    assert not principal.in_tenant("factory")


def test_check_claims_alone() -> None:
    cfg = config()
    check_claims(claims(), config=cfg, now=NOW)
    check_claims(claims(), config=cfg, now=NOW + timedelta(seconds=329))
    with pytest.raises(OidcError, match="token expired"):
        check_claims(claims(), config=cfg, now=NOW + timedelta(seconds=330))
