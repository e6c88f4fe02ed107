"""A hub set up with ``hub init`` serves HTTPS that the CLI verifies; plain HTTP only on loopback
and only when asked for; JWTs of the operator's OIDC provider are accepted beside hub tokens."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from edgefleet.client.hub import verify_with
from edgefleet.localfleet import LocalFleet, free_port, wait_for

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def test_hub_init_https_and_a_verifying_cli(tmp_path: Path) -> None:
    port = free_port()
    pki = tmp_path / "pki"
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    config = tmp_path / "config.yaml"
    env = {"EDGEFLEET_CONFIG": str(config), "EDGEFLEET_HUB": "", "EDGEFLEET_TOKEN": ""}
    init = cli(
        "hub",
        "init",
        "--dir",
        str(pki),
        "--db",
        db,
        "--listen",
        f"127.0.0.1:{port}",
        "--context",
        "lab",
        env=env,
    )
    assert init.returncode == 0, init.stderr
    token = init.stdout.strip().splitlines()[-3].strip()
    assert token.startswith("efu_"), init.stdout
    for secret in ("ca.key", "server.key"):
        assert stat.S_IMODE((pki / secret).stat().st_mode) == 0o600
    saved = yaml.safe_load(config.read_text())["contexts"]["lab"]
    assert saved == {
        "hub": f"https://localhost:{port}",
        "token": token,
        "ca": str((pki / "ca.crt").resolve()),
    }
    hub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgefleet",
            "hub",
            "serve",
            "--db",
            db,
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-dir",
            str(pki),
            "--dns-listen",
            "off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ca = verify_with(pki / "ca.crt")
        wait_for(
            lambda: httpx.get(f"https://localhost:{port}/healthz", verify=ca).status_code == 200,
            timeout=30,
            what="the hub over HTTPS",
        )
        me = cli("whoami", env=env)
        assert me.returncode == 0, me.stderr
        assert me.stdout.startswith("admin: admin (by token")
        # Without the fleet's CA the CLI does not trust the hub.
        config.write_text(
            yaml.safe_dump(
                {
                    "current-context": "x",
                    "contexts": {"x": {"hub": f"https://localhost:{port}", "token": token}},
                }
            )
        )
        untrusted = cli("whoami", env=env)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        # Plain HTTP to the HTTPS port gets nowhere.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).raise_for_status()
    finally:
        hub.terminate()
        hub.wait(timeout=15)
    # Again: the CA stays, the certificate is reissued only for a new name, no second admin.
    before = (pki / "ca.crt").read_bytes()
    server_before = (pki / "server.crt").read_bytes()
    again = cli(
        "hub", "init", "--dir", str(pki), "--db", db, "--listen", f"127.0.0.1:{port}", env=env
    )
    assert again.returncode == 0 and "has an admin token already" in again.stderr
    assert (pki / "ca.crt").read_bytes() == before
    assert (pki / "server.crt").read_bytes() == server_before
    more = cli(
        "hub",
        "init",
        "--dir",
        str(pki),
        "--db",
        db,
        "--san",
        "hub.example.internal",
        "--no-admin-token",
        env=env,
    )
    assert more.returncode == 0, more.stderr
    assert (pki / "ca.crt").read_bytes() == before
    assert (pki / "server.crt").read_bytes() != server_before


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "the hub serves HTTPS"),
        (["--insecure-http", "--listen", "0.0.0.0:7"], "plain HTTP is only served on loopback"),
        (["--tls-dir", "/nonexistent"], "no server.crt"),
    ],
)
def test_serve_refuses_plain_http_unless_asked_and_on_loopback(
    args: list[str], said: str, tmp_path: Path
) -> None:
    result = cli(
        "hub",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 'h.db'}",
        "--dns-listen",
        "off",
        *args,
        env={},
    )
    assert result.returncode == 1 and said in result.stderr, result.stderr


def test_oidc_tokens_beside_hub_tokens(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    settings = tmp_path / "oidc.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "issuer": "https://idp.example.internal",
                "audience": "edgefleet",
                "jwksFile": str(jwks),
            }
        )
    )
    fleet = LocalFleet(
        workdir=tmp_path / "fleet",
        hub_port=free_port(),
        dns_port=free_port(),
        hub_args=["--oidc-config", str(settings)],
    )

    def token(signer: rsa.RSAPrivateKey, **claims: object) -> str:
        now = int(time.time())
        body = {
            "iss": "https://idp.example.internal",
            "aud": "edgefleet",
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
            "edgefleet_role": "developer",
            "edgefleet_tenants": ["t1"],
            **claims,
        }
        return jwt.encode(body, signer, algorithm="RS256", headers={"kid": "k1"})

    with fleet.running():
        fleet.start_hub()
        with fleet.client(token(key)) as alice:
            me = alice.whoami()
        assert (me.subject, me.role, me.via, me.tenants) == ("alice", "developer", "oidc", ["t1"])
        for bad in (
            token(stranger),
            token(key, aud="other"),
            token(key, exp=int(time.time()) - 99),
        ):
            reply = httpx.get(
                f"{fleet.hub_url}/api/v1/whoami", headers={"Authorization": f"Bearer {bad}"}
            )
            assert reply.status_code == 401 and "OIDC token refused" in reply.json()["detail"]
        # Hub tokens keep working beside the provider's.
        with fleet.client() as admin:
            assert admin.whoami().via == "token"
