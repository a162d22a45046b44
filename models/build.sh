#!/bin/sh
# `make models`: re-create models/*.tflite in the build's own venv (not the app's).
# Extra arguments go to build.py (e.g. --study to re-run the int8 stage study).
set -eu
cd "$(dirname "$0")/.."
VENV=models/.build-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r models/build-requirements.txt
exec "$VENV/bin/python" models/build.py "$@"
