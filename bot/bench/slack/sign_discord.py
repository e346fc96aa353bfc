"""Pre-signs distinct Discord `/dr status` interactions (Ed25519 over timestamp + body) for
the benchmark. Usage: sign_discord.py SEED_HEX COUNT OUT_FILE. Prints the public key (hex).
Writes one request per line: "<timestamp> <signature hex> <json body>"."""

import json
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def main() -> None:
    seed, count, out = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    key = Ed25519PrivateKey.from_private_bytes(seed)
    ts = str(int(time.time()))
    users = ["2001", "2002", "9999"]
    with open(out, "w") as f:
        for i in range(count):
            body = json.dumps(
                {
                    "application_id": "1160000000000000000",
                    "channel_id": "1200000000000000000",
                    "data": {"id": "1170000000000000000", "name": "dr", "type": 1,
                             "options": [{"type": 1, "name": "status", "options": []}]},
                    "guild_id": "1150000000000000000",
                    "id": str(1180000000000000000 + i),
                    "member": {"user": {"id": users[i % 3], "username": "oncall"}, "roles": []},
                    "token": f"interaction-token-{i}",
                    "type": 2,
                    "version": 1,
                },
                separators=(",", ":"),
            )
            sig = key.sign((ts + body).encode()).hex()
            f.write(f"{ts} {sig} {body}\n")
    print(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex())


if __name__ == "__main__":
    main()
