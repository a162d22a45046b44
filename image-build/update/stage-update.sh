#!/usr/bin/env bash
# Build machine side: collects what install-update.sh puts into the image (RAUC configuration
# templates, the device scripts and units, the fleet's keyring, the hawkBit client's wheel) into
# PAYLOAD/update.
# Prints nothing on success; the signing key choice (and its warning) goes to stderr.
# usage: stage-update.sh FLEET_FILE PAYLOAD_DIR CACHE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fleet_file=${1:?usage: $0 FLEET_FILE PAYLOAD_DIR CACHE_DIR}
payload=${2:?usage: $0 FLEET_FILE PAYLOAD_DIR CACHE_DIR}
cache=${3:?usage: $0 FLEET_FILE PAYLOAD_DIR CACHE_DIR}
read -r _key _cert keyring < <("$here/signing-key.sh" "$fleet_file" "$cache")
rm -rf "$payload/update"
mkdir -p "$payload/update"
cp -r "$here/device" "$here/rauc" "$here/install-update.sh" "$payload/update/"
cp "$keyring" "$payload/update/keyring.pem"
# rauc-hawkbit is pure Python; its declared gbulb would pull PyGObject from source, while the
# device uses Debian's python3-gi. So: this one wheel, installed without dependencies.
wheels=$cache/wheels-rauc-hawkbit-0.2.0
if [ ! -f "$wheels/.complete" ]; then
  mkdir -p "$wheels"
  "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d "$wheels" rauc-hawkbit==0.2.0 >&2
  touch "$wheels/.complete"
fi
mkdir -p "$payload/update/wheels"
cp "$wheels"/*.whl "$payload/update/wheels/"
