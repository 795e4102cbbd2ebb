"""`auth login` and `auth status` against a sandbox process, and the sandbox's OAuth endpoints."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from tests.conftest import SandboxFactory
from tests.support.auth import (
    CLIENT_SECRET,
    open_in_browser,
    run_worker,
    start_login,
    token_config,
    token_file,
    write_token_file,
)
from worker.api.auth import pkce_challenge

VERIFIER = "v" * 43 + "-._~0123456789"


def test_login_through_the_loopback_listener_stores_a_private_token_file(
    tmp_path: Path, sbx: Any
) -> None:
    config = token_config(tmp_path)
    proc, url, printed = start_login(config, sbx)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["client_id"] == ["demo-client"]
    assert urlsplit(query["redirect_uri"][0]).hostname == "127.0.0.1"
    assert CLIENT_SECRET not in url + printed
    status, page = open_in_browser(url)
    out, err = proc.communicate(timeout=60)
    assert (status, proc.returncode) == (200, 0), (out, err)
    assert "Login complete" in page
    path = token_file(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = json.loads(path.read_text())
    assert data["client_id"] == "demo-client" and data["refresh_token"] and data["access_token"]
    for secret in (data["refresh_token"], data["access_token"], CLIENT_SECRET):
        assert secret not in out + err
    assert f"tokens stored in {path}" in out

    status_run = run_worker("auth", "status", "-c", str(config), "--base-url", sbx.base_url)
    assert status_run.returncode == 0, status_run.stdout + status_run.stderr
    lines = status_run.stdout.splitlines()
    assert len(lines) == 2 and all(": accepted; access token expires " in line for line in lines)
    assert lines[0].startswith(f"tenant 1 (Kadikoy Clinic): file {path} (OAuth")
    stored = json.loads(path.read_text())
    for secret in (stored["refresh_token"], stored["access_token"], CLIENT_SECRET):
        assert secret not in status_run.stdout + status_run.stderr


def test_login_by_pasting_the_redirect_address(tmp_path: Path, sbx: Any) -> None:
    config = token_config(tmp_path, oauth_redirect_uri='"http://127.0.0.1:9/callback"')
    proc, url, _ = start_login(config, sbx, "--paste", stdin=subprocess.PIPE)
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["http://127.0.0.1:9/callback"]
    status, location = open_in_browser(url, follow=False)
    assert status == 302 and location.startswith("http://127.0.0.1:9/callback?code=")
    out, err = proc.communicate(location + "\n", timeout=60)
    assert proc.returncode == 0, out + err
    assert json.loads(token_file(config).read_text())["refresh_token"]
    run = run_worker("auth", "status", "-c", str(config), "--base-url", sbx.base_url)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_pasted_address_from_another_login_is_refused(tmp_path: Path, sbx: Any) -> None:
    config = token_config(tmp_path)
    proc, url, _ = start_login(config, sbx, "--paste", stdin=subprocess.PIPE)
    _, location = open_in_browser(url, follow=False)
    forged = location.split("&state=")[0] + "&state=someone-else"
    _, err = proc.communicate(forged + "\n", timeout=60)
    assert proc.returncode == 2
    assert err.startswith("error: the address does not belong to this login"), err
    assert not token_file(config).exists()


def test_a_code_used_twice_is_refused_with_exit_3(tmp_path: Path, sbx: Any) -> None:
    config = token_config(tmp_path)
    first = start_login(config, sbx, "--paste", stdin=subprocess.PIPE)
    _, location = open_in_browser(first[1], follow=False)
    first[0].communicate(location + "\n", timeout=60)
    assert first[0].returncode == 0
    code = parse_qs(urlsplit(location).query)["code"][0]
    second, _url, _ = start_login(config, sbx, "--paste", stdin=subprocess.PIPE)
    _, err = second.communicate(code + "\n", timeout=60)  # a bare code is accepted too
    assert second.returncode == 3
    assert "refused the authorization code (invalid_grant" in err and code not in err


def test_login_needs_a_file_token_source_and_the_client_settings(tmp_path: Path) -> None:
    config = token_config(tmp_path)
    text = config.read_text()
    env_cfg = tmp_path / "env.toml"
    env_cfg.write_text(text.replace('"file:secrets/flextell-token.json"', '"env:FLEXTELL_TOKEN"'))
    run = run_worker("auth", "login", "-c", str(env_cfg), "--paste")
    assert run.returncode == 2 and "auth login stores tokens in a file" in run.stderr
    bare = tmp_path / "bare.toml"
    bare.write_text(text.replace('oauth_client_id = "demo-client"\n', ""))
    run = run_worker("auth", "login", "-c", str(bare), "--paste")
    assert run.returncode == 2 and "api.oauth_client_id is not set" in run.stderr
    pasted = tmp_path / "pasted.toml"
    pasted.write_text(text.replace('"env:FLEXTELL_CLIENT_SECRET"', '"hunter2-secret"'))
    run = run_worker("auth", "login", "-c", str(pasted), "--paste")
    assert run.returncode == 2 and "api.oauth_client_secret: secret must be" in run.stderr
    assert "hunter2" not in run.stderr
    secret = tmp_path / "client.secret"
    secret.write_bytes(b"\xffdemo-\xfesecret")
    secret.chmod(0o600)
    binary = tmp_path / "binary.toml"
    binary.write_text(text.replace('"env:FLEXTELL_CLIENT_SECRET"', f'"file:{secret}"'))
    run = run_worker("auth", "login", "-c", str(binary), "--paste")
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    assert f"cannot read {secret}: not UTF-8 text" in run.stderr


def test_status_of_a_dead_refresh_token_says_to_log_in_again(tmp_path: Path, sbx: Any) -> None:
    config = token_config(tmp_path)
    path = write_token_file(config, "stale-refresh-token-1")
    run = run_worker("auth", "status", "-c", str(config), "--base-url", sbx.base_url)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "NOT accepted: refresh token rejected" in run.stdout
    assert "run `flextell-worker auth login" in run.stdout
    assert (
        "stale-refresh-token-1" not in run.stdout + run.stderr and CLIENT_SECRET not in run.stdout
    )
    path.chmod(0o644)
    run = run_worker("auth", "status", "-c", str(config), "--base-url", sbx.base_url)
    # A file others can read is the config's to fix: exit 2, as `import` says of it.
    assert run.returncode == 2 and "permissions 0644 are too open" in run.stdout


# --- the sandbox's side: Passport-style authorize and authorization_code grant -------------


async def _authorize(http: aiohttp.ClientSession, root: str, **extra: str) -> str:
    params = {
        "client_id": "demo-client",
        "redirect_uri": "http://127.0.0.1:5555/cb",
        "response_type": "code",
        "state": "st",
    } | extra
    async with http.get(f"{root}/oauth/authorize", params=params, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        query = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert query["state"] == ["st"]
        return query["code"][0]


async def _exchange(http: aiohttp.ClientSession, root: str, code: str, **extra: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "client_id": "demo-client",
        "client_secret": CLIENT_SECRET,
        "redirect_uri": "http://127.0.0.1:5555/cb",
        "code": code,
    } | extra
    async with http.post(f"{root}/oauth/token", data=form) as resp:
        return resp.status, await resp.json()


async def test_sandbox_pkce_and_one_time_codes(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory() as sb:
        challenge = pkce_challenge(VERIFIER)
        pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
        code = await _authorize(http, sb.url, **pkce)
        status, body = await _exchange(http, sb.url, code)
        assert (status, body["error"], body["hint"]) == (
            400,
            "invalid_request",
            "Check the `code_verifier` parameter",
        )
        status, body = await _exchange(http, sb.url, code, code_verifier="w" * 43)
        assert (status, body["error"], body["hint"]) == (
            400,
            "invalid_grant",
            "Failed to verify `code_verifier`.",
        )
        assert body["message"] == body["error_description"]
        status, body = await _exchange(http, sb.url, code, code_verifier=VERIFIER)
        assert status == 200 and body["token_type"] == "Bearer" and body["refresh_token"]
        status, again = await _exchange(http, sb.url, code, code_verifier=VERIFIER)
        assert (status, again["hint"]) == (400, "Authorization code has been revoked")
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        async with http.get(f"{sb.api_url}/v1/account/tenants", headers=headers) as resp:
            assert resp.status == 200
        # The refresh token it issued rotates like any other.
        form = {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": "demo-client",
            "client_secret": CLIENT_SECRET,
        }
        async with http.post(f"{sb.url}/oauth/token", data=form) as resp:
            assert resp.status == 200


async def test_sandbox_authorize_refuses_bad_clients_and_redirects(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
) -> None:
    async with sandbox_factory() as sb:
        cases = [
            ({"client_id": "nobody"}, 401, "invalid_client"),
            ({"redirect_uri": "https://evil.example/cb"}, 401, "invalid_client"),
            ({"response_type": "token"}, 400, "unsupported_response_type"),
            (
                {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
                400,
                "invalid_request",
            ),
        ]
        for extra, status, error in cases:
            params = {
                "client_id": "demo-client",
                "redirect_uri": "http://127.0.0.1:5555/cb",
                "response_type": "code",
            } | extra
            async with http.get(
                f"{sb.url}/oauth/authorize", params=params, allow_redirects=False
            ) as resp:
                assert (resp.status, (await resp.json())["error"]) == (status, error), extra
        code = await _authorize(http, sb.url)
        status, body = await _exchange(http, sb.url, code, redirect_uri="http://127.0.0.1:1/x")
        assert (status, body["hint"]) == (400, "Invalid redirect URI")
        status, body = await _exchange(http, sb.url, code, client_secret="wrong")
        assert (status, body["error"]) == (401, "invalid_client")
        status, body = await _exchange(http, sb.url, "never-issued")
        assert (status, body["error"]) == (400, "invalid_grant")
        status, body = await _exchange(http, sb.url, code)  # no PKCE asked, none needed
        assert status == 200
