#!/usr/bin/env bash
# Build machine side: collects what install-update.sh puts into the image (RAUC configuration
# templates, the device scripts and units, the fleet's keyring) into PAYLOAD/update.
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
