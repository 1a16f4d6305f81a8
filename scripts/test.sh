#!/usr/bin/env bash
# Runs the whole test suite on a fresh clone: installs the locked environment, then pytest. The tests
# start the real local services they need themselves (Kafka broker, S3 server, fakesnow, PostgreSQL).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
# The UI test drives Debian's headless Chromium: install it when missing and we may (root with apt);
# otherwise that test fails saying what to install.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the UI test..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the UI test will fail (apt-get install chromium)" >&2
fi
# The Dagster-on-Postgres tests run a throwaway server from Debian's PostgreSQL binaries (kept off PATH,
# under /usr/lib/postgresql/<version>/bin): install them likewise; otherwise those tests fail saying so.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
  && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing postgresql for the Dagster-on-Postgres tests..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "warning: could not install postgresql; the Postgres tests will fail (apt-get install postgresql)" >&2
fi
exec python -m pytest "$@"
