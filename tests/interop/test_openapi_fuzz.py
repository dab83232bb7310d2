"""The OpenAPI document is exact: schemathesis, driven by it, finds no server error, no response
that contradicts the schema, no request the schema allows that the server refuses as malformed
("positive data acceptance") and none the schema forbids that the server takes ("negative data
rejection") (docs/security-reliability.md, "Bad input"). What each check may answer is set in
schemathesis.toml."""

import os
import subprocess
import sys

from convene_server import API_KEY, API_SECRET


def test_schemathesis_finds_the_document_exact_in_both_directions(convene):
    schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    result = subprocess.run(
        [
            schemathesis, "--config-file", os.path.join(os.path.dirname(__file__), "schemathesis.toml"),
            "run", convene.base + "/v1/openapi.json",
            "--auth", f"{API_KEY}:{API_SECRET}",
            # About a minute here (coverage, fuzzing and stateful phases over 31 operations).
            "--max-examples", "15",
            "--seed", "20261122",
            "--checks", "all",
            "--no-color",
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
