"""Secrets and patient data stay out of every stream and file a run writes.

Only the failures file (which the user asks for to fix rows) may hold patient
data; the ledger keeps the source rows for that file, private (0600). No token
or client secret appears anywhere but the token file itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.auth import (
    CLIENT_SECRET,
    login,
    run_worker,
    token_config,
    token_file,
    worker_env,
)
from tests.support.sandbox_process import Sandbox
from tests.support.sync import sample_rows, write_config, write_csv

# Process-level drills: real worker and sandbox processes (`make test-fast` leaves them out).
pytestmark = pytest.mark.slow

PATIENTS = [
    ("Şükrü Öztürkoğlu", "+905321112233", "sukru.ozturkoglu@example.com", "10000000146"),
    ("Ayşegül Çağlayan", "+905339998877", "aysegul.caglayan@example.com", "24681357902"),
    ("İsmail Ilgaz", "+905441234567", "ismail.ilgaz@example.com", "31415926530"),
]
NOTES = [
    '=HYPERLINK("http://x") Şükrüye kan tahlili',
    "+90 aradı; ilaç: Ayşegül alerji",
    "-dozaj 2x1 @İsmail kontrol",
    "@SUM(A1:A9) Ilgaz ailesi",
]


def _export(tmp: Path, name: str, notes_shift: int = 0) -> Path:
    columns, rows = sample_rows()
    columns = [*columns, "patient_name", "patient_phone", "patient_email", "identity_number"]
    out = []
    for i, row in enumerate(rows[:12]):
        name_, phone, email, ident = PATIENTS[i % len(PATIENTS)]
        note = NOTES[(i + notes_shift) % len(NOTES)] if i != 0 or not notes_shift else NOTES[1]
        row = row | {
            "patient_name": name_,
            "patient_phone": phone,
            "patient_email": email,
            "identity_number": ident,
            "notes": note,
        }
        out.append(row)
    out[2]["customer_id"] = PATIENTS[1][0]  # a name typed into the id column: invalid
    out[5]["customer_id"] = "999999"  # unknown to Flextell: failed (422)
    return write_csv(tmp / name, columns, out)


def _patient_values() -> list[str]:
    values = [v for p in PATIENTS for v in p]
    values += [n.split(" ", 1)[1] for n in NOTES]  # the note text after the formula head
    return values


def test_no_secret_or_patient_data_outside_the_failures_file(tmp_path: Path, sbx: Sandbox) -> None:
    config = token_config(tmp_path)
    first = login(config, sbx)
    secrets = {CLIENT_SECRET, first["refresh_token"], first["access_token"]}
    streams: dict[str, str] = {}

    def run(label: str, *args: str) -> Any:
        result = run_worker(*args)
        streams[label + ".stdout"] = result.stdout
        streams[label + ".stderr"] = result.stderr
        return result

    base = ("-c", str(config), "--base-url", sbx.base_url)
    night1 = _export(tmp_path, "night1.csv")
    night2 = _export(tmp_path, "night2.csv", notes_shift=1)  # row 0's note changed
    assert run("import1", "import", str(night1), *base, "--json-logs").returncode == 1
    assert run("import2", "import", str(night2), *base).returncode == 1
    run("import3", "import", str(night2), *base, "--json-logs", "--retry-failed")
    run("validate", "validate", str(night2), "-c", str(config))
    run("status", "auth", "status", *base)
    run("report", "report", "-c", str(config))
    run("report-json", "report", "-c", str(config), "--format", "json")
    failures = tmp_path / "failures.csv"
    run("failures", "report", "-c", str(config), "--failures", str(failures))
    run("verify", "verify", *base, "--report", str(tmp_path / "verify.json"))
    run("reconcile", "reconcile", *base)
    last = json.loads(token_file(config).read_text())
    secrets |= {last["refresh_token"], last["access_token"]}

    patient = _patient_values()
    for label, text in streams.items():
        for value in [*secrets, *patient]:
            assert value not in text, f"{value!r} in {label}: {text[:3000]}"
    inputs = {night1, night2, config, token_file(config)}
    for path in tmp_path.rglob("*"):
        if not path.is_file() or path in inputs or path.name.startswith("port-"):
            continue
        data = path.read_bytes().decode("utf-8", "replace")
        for value in secrets:
            assert value not in data, f"a secret in {path}"
        if path == failures or path.name.startswith("ledger.sqlite"):
            continue
        for value in patient:
            assert value not in data, f"{value!r} in {path}"
    # The failures file does carry the rows (that is its job), so the test can see them.
    assert PATIENTS[1][0] in failures.read_text(encoding="utf-8")


# Shapes of secrets pasted after env: or file: by mistake: an opaque token (a valid
# variable name), a dotted one (not a name), a base64 key (padded).
GHP = "ghp_" + "4fZq9Lw2Xe7Rt1Yu8Io3Pa6Sd5Fg0Hj2Kl9Zx"
DOTTED = "flx.9f8e7d6c5b4a39281706f5e4d3c2b1a0.sig"
BASE64 = "dGhpcyBpcyBhIHRlc3Qga2V5IG9mIDMyIGJ5dGVzISE="
PASTED = [
    ('token = "env:FLEXTELL_TOKEN"', f'token = "env:{GHP}"', "looks like a token itself"),
    ('token = "env:FLEXTELL_TOKEN"', f'token = "env:{DOTTED}"', "an environment variable name"),
    ('token = "env:FLEXTELL_TOKEN"', f'token = "file:{GHP}"', "not a file path"),
    ('token = "env:FLEXTELL_TOKEN"', f'token = "file:{DOTTED}"', "not a file path"),
    ('path = "ledger.sqlite"', f'path = "l.sqlite"\nencryption_key = "file:{BASE64}"', "a key"),
    (
        'path = "ledger.sqlite"',
        f'path = "l.sqlite"\nencryption_key = "env:{BASE64}"',
        "variable name",
    ),
    ('path = "ledger.sqlite"', f'url = "env:postgresql://u:{GHP}@db/x"', "url: 'env:' must"),
    ("[api]", f'[api]\noauth_client_secret = "file:{GHP}"', "looks like a secret itself"),
]


@pytest.mark.parametrize(("was", "now", "needle"), PASTED)
def test_a_secret_pasted_after_env_or_file_is_refused_without_echo(
    tmp_path: Path, was: str, now: str, needle: str
) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(was, now, 1))
    result = run_worker("import", str(_export(tmp_path, "in.csv")), "-c", str(config))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert needle in result.stderr
    for secret in (GHP, DOTTED, BASE64, "4fZq9Lw2", "9f8e7d6c"):
        assert secret not in result.stdout + result.stderr


def test_a_new_key_pasted_after_file_is_refused_without_echo(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text() + 'encryption_key = "env:FW_LEDGER_KEY"\n')
    env = worker_env(FW_LEDGER_KEY=BASE64)
    rekey = run_worker("ledger", "rekey", "-c", str(config), "--new-key", f"file:{GHP}", env=env)
    assert rekey.returncode == 2, rekey.stderr
    assert "--new-key: what follows 'file:' looks like a key itself" in rekey.stderr
    assert GHP not in rekey.stderr
