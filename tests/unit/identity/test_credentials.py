"""Site credentials: signing keys, issuing, and every way a credential can fail to hold."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edgefleet.identity.credentials import (
    LEEWAY,
    CredentialClaims,
    CredentialError,
    Keyring,
    SigningKey,
    issue,
    key_id,
    verify,
)
from edgefleet.model import PublicKey, RoutingTable

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
KEY = SigningKey.generate()
OTHER = SigningKey.generate()


def paris(key: SigningKey = KEY, *, jti: str = "c-1", ttl: timedelta = HOUR) -> str:
    return issue(key, subject="site:paris", site="paris", ttl=ttl, now=NOW, jti=jti)


def refusal(token: str, keys: list[PublicKey], **options: object) -> str:
    with pytest.raises(CredentialError) as caught:
        verify(token, keys, now=options.pop("now", NOW), **options)  # type: ignore[arg-type]
    return caught.value.reason


def segments(token: str) -> tuple[dict[str, object], dict[str, object], str]:
    head, body, signature = token.split(".")
    return _json(head), _json(body), signature


def _json(part: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return loaded


def _part(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


# -- keys -----------------------------------------------------------------------------------------


def test_kid_is_the_rfc7638_thumbprint_cut_short() -> None:
    # RFC 8037 A.3: the thumbprint of the example Ed25519 key.
    assert key_id("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo") == "kPrK_qmxVWaYVA9w"


def test_signing_key_survives_pem_and_keeps_its_kid() -> None:
    pem = KEY.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = SigningKey.from_pem(pem)
    assert again.kid == KEY.kid and again == KEY and again != OTHER
    assert again.public() == KEY.public()
    assert KEY.public().kid == key_id(KEY.public()) == KEY.kid
    # A credential signed with the reloaded key checks out with the original's public key.
    assert verify(paris(again), [KEY.public()], now=NOW).site == "paris"


def test_signing_key_never_shows_the_private_key() -> None:
    assert repr(KEY) == f"SigningKey(kid={KEY.kid!r})"
    assert "PRIVATE" not in str(KEY)


def test_from_pem_refuses_other_keys_and_garbage() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="not an Ed25519 key"):
        SigningKey.from_pem(ec_pem)
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        SigningKey.from_pem(b"hello")


def test_public_key_is_a_jwk() -> None:
    public = KEY.public()
    wire = public.to_wire()
    assert wire == {"kid": KEY.kid, "x": public.x, "kty": "OKP", "crv": "Ed25519"}
    # A standard JWK reader takes it as it is.
    jwk = jwt.PyJWK(wire)
    assert jwk.key_id == KEY.kid
    assert PublicKey.model_validate(wire) == public


@pytest.mark.parametrize(
    "x", ["", "AAAA", "not base64!", base64.urlsafe_b64encode(b"x" * 33).decode()]
)
def test_public_key_refuses_what_is_not_32_bytes(x: str) -> None:
    with pytest.raises(ValidationError):
        PublicKey(kid="k", x=x)


def test_routing_table_carries_keys_and_revocations() -> None:
    table = RoutingTable(version="v", signing_keys=[KEY.public()], revoked_credentials=["c-9"])
    wire = table.to_wire()
    assert wire["signingKeys"][0]["kty"] == "OKP"
    assert wire["revokedCredentials"] == ["c-9"]
    assert RoutingTable.model_validate(wire) == table
    assert RoutingTable(version="v").signing_keys == []  # older tables still read


# -- issue and verify -----------------------------------------------------------------------------


def test_a_site_credential_round_trips() -> None:
    token = paris(ttl=timedelta(days=30))
    header, claims, _ = segments(token)
    assert header["alg"] == "EdDSA" and header["kid"] == KEY.kid
    assert claims["iss"] == "edgefleet"
    assert claims["iat"] == int(NOW.timestamp())
    assert verify(token, [KEY.public()], now=NOW) == CredentialClaims(
        subject="site:paris", site="paris", jti="c-1", expires=NOW + timedelta(days=30)
    )


def test_the_hubs_own_credential_has_no_site() -> None:
    token = issue(KEY, subject="hub", site=None, ttl=HOUR, now=NOW, jti="h-1")
    claims = verify(token, [KEY.public()], now=NOW)
    assert claims.site is None and claims.is_hub
    assert not verify(paris(), [KEY.public()], now=NOW).is_hub


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"subject": "someone", "site": None}, "hub"),
        ({"ttl": timedelta(0)}, "positive"),
        ({"jti": ""}, "jti"),
        ({"now": datetime(2030, 5, 1, 12)}, "time zone"),
    ],
)
def test_issue_refuses_what_cannot_be_a_credential(options: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {
        "subject": "site:paris",
        "site": "paris",
        "ttl": HOUR,
        "now": NOW,
        "jti": "c-1",
        **options,
    }
    with pytest.raises(ValueError, match=match):
        issue(KEY, **arguments)  # type: ignore[arg-type]


def test_expiry_allows_a_little_clock_skew_and_no_more() -> None:
    token = paris()
    expires = NOW + HOUR
    assert verify(token, [KEY.public()], now=expires + LEEWAY).site == "paris"
    reason = refusal(token, [KEY.public()], now=expires + LEEWAY + timedelta(seconds=1))
    assert reason == f"expired at {expires:%Y-%m-%dT%H:%M:%SZ}"
    assert timedelta(seconds=30) == LEEWAY  # the documented skew


def test_revoked_credentials_are_refused() -> None:
    assert refusal(paris(jti="c-7"), [KEY.public()], revoked=["c-7"]) == "revoked (jti=c-7)"
    assert verify(paris(jti="c-8"), [KEY.public()], now=NOW, revoked=["c-7"]).jti == "c-8"


def test_a_credential_signed_by_an_unknown_key_is_refused_naming_the_kid() -> None:
    assert refusal(paris(OTHER), [KEY.public()]) == f"signed by an unknown key kid={OTHER.kid}"
    assert refusal(paris(), []) == f"signed by an unknown key kid={KEY.kid}"


def test_a_wrong_key_under_the_right_kid_is_refused() -> None:
    # Someone publishes their own key under the hub's kid: the signature does not match.
    impostor = PublicKey(kid=KEY.kid, x=OTHER.public().x)
    assert refusal(paris(), [impostor]).startswith("altered")
    # Someone signs with their own key and names the hub's in the header.
    _, body, signature = paris(OTHER).split(".")
    forged = f"{paris().split('.')[0]}.{body}.{signature}"
    assert refusal(forged, [KEY.public()]).startswith("altered")


def test_tampered_claims_are_refused() -> None:
    header, claims, signature = segments(paris())
    for change in ({"site": "lyon"}, {"exp": int((NOW + 1000 * HOUR).timestamp())}):
        tampered = f"{_part(header)}.{_part({**claims, **change})}.{signature}"
        assert refusal(tampered, [KEY.public()]).startswith("altered")


@given(position=st.integers(0, 10_000), char=st.sampled_from("AQgw-_09azZ."))
def test_no_change_of_one_character_yields_other_claims(position: int, char: str) -> None:
    token = paris()
    index = position % len(token)
    changed = token[:index] + char + token[index + 1 :]
    try:
        claims = verify(changed, [KEY.public()], now=NOW)
    except CredentialError:
        return
    # base64url's last character carries spare bits: a change there may decode the same.
    assert claims == verify(token, [KEY.public()], now=NOW)


def test_other_algorithms_are_refused() -> None:
    _, claims, _ = segments(paris())
    unsigned = f"{_part({'alg': 'none', 'kid': KEY.kid})}.{_part(claims)}."
    assert refusal(unsigned, [KEY.public()]).startswith("malformed")
    # The classic confusion: an HMAC keyed with the (public) key bytes.
    hmac = jwt.encode(claims, KEY.public().x, algorithm="HS256", headers={"kid": KEY.kid})
    assert refusal(hmac, [KEY.public()]).startswith("malformed")


@pytest.mark.parametrize(
    ("claims", "headers", "reason"),
    [
        ({"iss": "elsewhere"}, {}, "malformed: not issued by edgefleet"),
        ({"sub": None}, {}, "malformed: no subject (sub)"),
        ({"jti": None}, {}, "malformed: no id (jti)"),
        ({"exp": None}, {}, "malformed: no expiry (exp)"),
        ({"exp": "tomorrow"}, {}, "malformed: no expiry (exp)"),
        ({"site": 7}, {}, "malformed: site is not a site name"),
        ({}, {"kid": None}, "malformed: no key id (kid) in its header"),
        ({}, {"kid": "a b\n"}, "malformed: no key id (kid) in its header"),
    ],
)
def test_malformed_credentials_say_what_is_wrong(
    claims: dict[str, object], headers: dict[str, object], reason: str
) -> None:
    payload = {
        "iss": "edgefleet",
        "sub": "site:paris",
        "site": "paris",
        "jti": "c-1",
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + HOUR).timestamp()),
    }
    payload = {k: v for k, v in {**payload, **claims}.items() if v is not None}
    token = jwt.encode(payload, KEY.private, algorithm="EdDSA", headers={"kid": KEY.kid})
    if headers:
        header = {k: v for k, v in {"alg": "EdDSA", **headers}.items() if v is not None}
        token = ".".join([_part(header), *token.split(".")[1:]])
    assert refusal(token, [KEY.public()]) == reason


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "Bearer x.y.z"])
def test_garbage_is_malformed(token: str) -> None:
    assert refusal(token, [KEY.public()]).startswith("malformed")


# -- rotation and the keyring ---------------------------------------------------------------------


def test_rotation_two_keys_are_valid_at_once() -> None:
    old, new = paris(KEY, jti="old"), paris(OTHER, jti="new")
    both = [KEY.public(), OTHER.public()]
    assert verify(old, both, now=NOW).jti == "old"
    assert verify(new, both, now=NOW).jti == "new"
    # The old key retired: what it signed stops working, what the new one signed goes on.
    assert refusal(old, [OTHER.public()]).startswith("signed by an unknown key")
    assert verify(new, [OTHER.public()], now=NOW).jti == "new"


def test_keyring_forgets_what_a_retired_key_signed() -> None:
    ring = Keyring([KEY.public(), OTHER.public()])
    old = paris(KEY, jti="old")
    assert ring.verify(old, now=NOW).jti == "old"  # checked, and remembered
    ring.update([OTHER.public()], [])
    with pytest.raises(CredentialError, match="unknown key"):
        ring.verify(old, now=NOW)
    assert ring.keys == (OTHER.public(),)


def test_keyring_checks_expiry_and_revocation_of_remembered_credentials() -> None:
    ring = Keyring([KEY.public()])
    token = paris(jti="c-3")
    assert ring.verify(token, now=NOW).jti == "c-3"
    ring.update([KEY.public()], ["c-3"])
    with pytest.raises(CredentialError, match=r"revoked \(jti=c-3\)"):
        ring.verify(token, now=NOW)
    ring.update([KEY.public()], [])
    assert ring.verify(token, now=NOW).jti == "c-3"
    with pytest.raises(CredentialError, match="expired at"):
        ring.verify(token, now=NOW + 2 * HOUR)


def test_keyring_remembers_a_bounded_number() -> None:
    ring = Keyring([KEY.public()], remember=3)
    tokens = [paris(jti=f"c-{i}") for i in range(5)]
    for token in tokens:
        ring.verify(token, now=NOW)
    assert len(ring._checked) == 3
    assert list(ring._checked) == tokens[2:]
    with pytest.raises(CredentialError):
        ring.verify(tokens[0][:-4] + "AAAA", now=NOW)
    assert len(ring._checked) == 3  # refused ones are never remembered
