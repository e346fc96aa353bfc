#!/usr/bin/env bash
# Runs the bulk email benchmark (benches/email_send): 100,000 messages to a loopback SMTP sink,
# drbot's send_many against a minimal pipelined sender, both with BDAT (the sink offers
# CHUNKING). Options: --messages N --connections C, --data (the sink leaves CHUNKING out, so
# both use DATA).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench -p drbot-notifier --bench email_send -- "$@"
