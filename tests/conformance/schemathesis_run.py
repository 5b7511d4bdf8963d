"""Runs schemathesis against a running Myelin over the spec's API definitions.

Checks `not_a_server_error` and `response_schema_conformance` for every
operation of the client-server and server-server definitions. Path
parameters are half the time real (a room with an alias, an event, a
member), half the time generated, so handlers are reached past their
lookups as well as fed nonsense.

Failures accepted on purpose are listed, each with its reason, in
schemathesis-baseline.json beside this script; anything else fails the run.

Usage: schemathesis_run.py CLIENT_URL FEDERATION_URL SHARED_SECRET SPEC_DIR OUT_DIR [MAX_EXAMPLES]

Prints one summary line per definition and exits non-zero on a failure.
"""

import hashlib
import hmac
import json
import subprocess
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "schemathesis-baseline.json"
CHECKS = "not_a_server_error,response_schema_conformance"
# Operations that would end the session every other operation runs in.
SESSION_ENDING = r"^/_matrix/client/v3/(logout(/all)?|account/deactivate)$"


def call(base_url: str, method: str, path: str, body=None, token: str | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def register(base_url: str, secret: str, username: str) -> tuple[str, str]:
    """Synapse-compatible shared-secret registration; returns (user_id, token)."""
    nonce = call(base_url, "GET", "/_synapse/admin/v1/register")["nonce"]
    password = "schemathesis password"
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(), b"notadmin"]))
    reply = call(base_url, "POST", "/_synapse/admin/v1/register", {
        "nonce": nonce, "username": username, "password": password, "admin": False, "mac": mac.hexdigest(),
    })
    return reply["user_id"], reply["access_token"]


def fixtures(base_url: str, secret: str) -> tuple[str, dict[str, list[str]]]:
    """Two users sharing a room with an alias and a message; returns the
    first user's token and the real values of each path parameter."""
    alice, token = register(base_url, secret, "schemathesis")
    bob, bob_token = register(base_url, secret, "schemathesis-peer")
    room = call(base_url, "POST", "/_matrix/client/v3/createRoom",
                {"preset": "public_chat", "room_alias_name": "schemathesis", "name": "fixture"}, token)["room_id"]
    quoted = urllib.parse.quote(room)
    call(base_url, "POST", f"/_matrix/client/v3/join/{quoted}", {}, bob_token)
    event = call(base_url, "PUT", f"/_matrix/client/v3/rooms/{quoted}/send/m.room.message/fixture",
                 {"msgtype": "m.text", "body": "fixture"}, token)["event_id"]
    server_name = alice.split(":", 1)[1]
    device = call(base_url, "GET", "/_matrix/client/v3/account/whoami", None, token)["device_id"]
    values = {
        "roomId": [room],
        "roomIdOrAlias": [room, f"#schemathesis:{server_name}"],
        "roomAlias": [f"#schemathesis:{server_name}"],
        "eventId": [event],
        "userId": [alice, bob],
        "deviceId": [device],
        "serverName": [server_name],
    }
    return token, values


def write_config(path: Path, values: dict[str, list[str]]) -> None:
    lines = []
    for name, entries in values.items():
        lines.append(f"[dictionaries.{name}]")
        lines.append(f"values = {json.dumps(entries)}")
    lines.append("[parameters]")
    for name in values:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}')
    path.write_text("\n".join(lines) + "\n")


def run(spec: Path, url: str, config: Path, out: Path, max_examples: str, extra: list[str]) -> tuple[int, str]:
    out.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run", str(spec),
        "--url", url, "--checks", CHECKS, "--max-examples", max_examples, "--seed", "1", "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--baseline", str(BASELINE),
        "--report", "junit", "--report-dir", str(out), "--generation-database", "none", "--no-color", *extra,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=out)
    (out / "output.txt").write_text(result.stdout + result.stderr)
    return result.returncode, result.stdout + result.stderr


def summarize(name: str, out: Path) -> str:
    """One line from the JUnit report: operations, failures, errors."""
    operations = failures = errors = 0
    for report in out.glob("junit*.xml"):
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            operations += 1
            failures += len(case.findall("failure"))
            errors += len(case.findall("error"))
    return f"schemathesis {name}: {operations} operations, {failures} failing, {errors} errors"


def main() -> int:
    client_url, federation_url, secret, spec_dir, out_dir = sys.argv[1:6]
    max_examples = sys.argv[6] if len(sys.argv) > 6 else "5"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    token, values = fixtures(client_url, secret)
    config = out / "schemathesis.toml"
    write_config(config, values)

    failed = False
    client_code, client_output = run(
        Path(spec_dir) / "client-server.json", client_url, config, out / "client-server", max_examples,
        ["--header", f"Authorization: Bearer {token}", "--exclude-path-regex", SESSION_ENDING],
    )
    # Federation requests are unsigned here: every authenticated endpoint
    # must refuse them cleanly, and the public ones must answer to the schema.
    federation_code, federation_output = run(
        Path(spec_dir) / "server-server.json", federation_url, config, out / "server-server", max_examples,
        ["--tls-verify", "false"],
    )
    summary = []
    for name, code, output in [("client-server", client_code, client_output),
                               ("server-server", federation_code, federation_output)]:
        summary.append(summarize(name, out / name))
        print(summary[-1])
        if code != 0:
            failed = True
            print(output)
    # Read by sytest-compat/conformance.sh for CONFORMANCE.md.
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
