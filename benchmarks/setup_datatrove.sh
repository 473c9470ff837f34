#!/usr/bin/env bash
# The peer of benchmarks/data_vs_datatrove.py, in a virtual environment of its own: datatrove is a
# benchmark-only dependency (never imported by crawl2chat) and pins an older trafilatura. Both
# sides are then given the same trafilatura and lxml releases, so the comparison measures the
# pipelines, not two extractor versions. spaCy: datatrove's English word and sentence splitting.
# Usage: setup_datatrove.sh OUR_PYTHON  (the interpreter of crawl2chat's environment)
set -euo pipefail
ours_python="$1"
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-datatrove"
[ -x "$venv/bin/python" ] && exit 0
python3 -m venv "$venv"
# aiohttp: datatrove resolves its model cache path through fsspec's HTTP filesystem.
"$venv/bin/pip" install -q "datatrove[processing,io]==0.10.1" spacy aiohttp requests
version() { "$ours_python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
"$venv/bin/pip" install -q "trafilatura==$(version trafilatura)" "lxml==$(version lxml)" lxml_html_clean 2>&1 \
    | grep -v "requires trafilatura" || true
