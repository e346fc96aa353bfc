"""Pre-signs distinct Slack slash-command requests (`/dr status`, each its own trigger_id and
signature, as drbot refuses replays) for the benchmark, before any clock starts.

Usage: sign_requests.py SECRET COUNT OUT_FILE
Writes one request per line: "<timestamp> <signature> <form body>".
"""

import hashlib
import hmac
import sys
import time
import urllib.parse


def main() -> None:
    secret, count, out = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
    ts = str(int(time.time()))
    users = ["UALICE", "UBOB", "UCAROL"]
    with open(out, "w") as f:
        for i in range(count):
            body = urllib.parse.urlencode(
                {
                    "token": "gIkuvaNzQIHg97ATvDxqgjtO",
                    "team_id": "T0001",
                    "team_domain": "example",
                    "channel_id": "C2147483705",
                    "channel_name": "incident",
                    "user_id": users[i % 3],
                    "user_name": "oncall",
                    "command": "/dr",
                    "text": "status",
                    "response_url": "https://hooks.slack.com/commands/1234/5678",
                    "trigger_id": f"13345224609.738474920.{i:010d}",
                    "api_app_id": "A0MDYCDME",
                }
            )
            sig = "v0=" + hmac.new(secret, f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
            f.write(f"{ts} {sig} {body}\n")


if __name__ == "__main__":
    main()
