#!/usr/bin/env bash
# Runs the whole test suite on a fresh clone: installs the locked environment, then pytest. The tests
# start the real local services they need themselves (Kafka broker, S3 server, fakesnow).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
# The UI test drives Debian's headless Chromium: install it when missing and we may (root with apt);
# otherwise that test fails saying what to install.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the UI test..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the UI test will fail (apt-get install chromium)" >&2
fi
exec python -m pytest "$@"
