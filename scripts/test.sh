#!/usr/bin/env bash
# Runs the whole test suite on a fresh clone: installs the locked environment, then pytest. The tests
# start the real local services they need themselves (Kafka broker, S3 server, fakesnow).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec python -m pytest "$@"
