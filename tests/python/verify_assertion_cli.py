# Driver of examples/assertion/verify_assertion.py for
# tests/assertion-verifier.test.mjs: runs verify() on jobs read as JSON from
# stdin and prints the outcomes as JSON, so the Python verifier is checked
# with the very assertions the JavaScript one is.
"""Reads one job, or an array of jobs, on stdin:

    {"jwks_url", "issuer", "audience", "method", "url", "headers", "body_b64",
     optional "leeway", "max_age", "replay_cache_size", "verifier"}

and prints {"ok": true, "claims": {...}} or {"ok": false, "reason": "..."}
for each (an array for an array). Jobs of one run with the same settings
and the same "verifier" label share one verifier, hence one replay cache,
so a replay can be tested.
"""

import base64
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples", "assertion"))

from verify_assertion import AssertionVerifier, InvalidAssertion  # noqa: E402

_verifiers: dict = {}


def run(job: dict) -> dict:
    settings = (
        job["jwks_url"],
        job["issuer"],
        job["audience"],
        job.get("leeway", 5),
        job.get("max_age", 300),
        job.get("replay_cache_size", 100_000),
        job.get("verifier", ""),
    )
    verifier = _verifiers.get(settings)
    if verifier is None:
        verifier = _verifiers[settings] = AssertionVerifier(
            settings[0], settings[1], settings[2], leeway=settings[3], max_age=settings[4], replay_cache_size=settings[5]
        )
    body = base64.b64decode(job.get("body_b64") or "")
    try:
        claims = verifier.verify(job["method"], job["url"], job.get("headers") or {}, body)
    except InvalidAssertion as refused:
        return {"ok": False, "reason": refused.reason}
    return {"ok": True, "claims": claims}


def main() -> None:
    jobs = json.load(sys.stdin)
    outcome = [run(job) for job in jobs] if isinstance(jobs, list) else run(jobs)
    sys.stdout.write(json.dumps(outcome) + "\n")


if __name__ == "__main__":
    main()
