#!/usr/bin/env bash
# Runs the bulk email benchmark (benches/email_send): 100,000 messages to a loopback SMTP sink,
# drbot's send_campaign and send_many against a minimal pipelined sender, all with BDAT (the
# sink offers CHUNKING), in rounds (each sender's best round counts). Options: --messages N
# --connections C --rounds R (3), --data (the sink leaves CHUNKING out, so all use DATA).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench -p drbot-notifier --bench email_send -- "$@"
