#!/usr/bin/env bash
# Runs the bulk email benchmark (benches/email_send): 100,000 messages to a loopback SMTP sink,
# drbot's send_many against a minimal pipelined sender. Options: --messages N --connections C.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench -p drbot-notifier --bench email_send -- "$@"
