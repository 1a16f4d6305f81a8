# Sourced by the scripts in this folder: makes .venv match requirements.lock, quietly and idempotently.
# uv resolves and installs this dependency set in seconds where pip's resolver can take over ten minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v uv >/dev/null 2>&1; then
  echo "installing uv (the Python package installer this project uses)..." >&2
  python3 -m pip install --quiet --disable-pip-version-check uv || {
    echo "error: could not install uv; install it yourself: python3 -m pip install uv" >&2
    exit 1
  }
fi
UV="$(command -v uv)"

if [ ! -x .venv/bin/python ]; then
  "$UV" venv --quiet --python ">=3.11" .venv
fi
# Re-sync only when the lock or pyproject changed since the last sync.
stamp=.venv/.stock_platform-lock-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  "$UV" pip sync --quiet -p .venv/bin/python requirements.lock
  "$UV" pip install --quiet -p .venv/bin/python --no-deps -e .
  rm -f .venv/.stock_platform-lock-*
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
