#!/usr/bin/env bash
# Re-pins requirements.lock from pyproject.toml: a plain name==version list, no download addresses.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv pip compile pyproject.toml --extra dev --python-version 3.11 --no-header --no-annotate -q -o requirements.lock
