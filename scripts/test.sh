#!/usr/bin/env bash
# Install fastencodec with its test dependencies into .venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q torch==2.13.0            # CPU build first, so nothing pulls a CUDA torch
python -m pip install -q -e ".[test]"
python -m pip install -q --no-deps encodec==0.1.1  # Meta's reference; its torchaudio pin is not needed
ruff check fastencodec tests benchmarks
python -m pytest -q -p no:cacheprovider "$@"
