#!/usr/bin/env bash
# The signing key and certificate for a fleet file that names none: a development key, made once
# and kept in the build cache so the image's keyring and later bundles match. Prints
# "KEY_PATH CERT_PATH". Never ship devices signed with it: anyone with this build cache can sign
# updates they will accept.
# usage: dev-key.sh CACHE_DIR
set -euo pipefail
dir=${1:?usage: $0 CACHE_DIR}/dev-signing-key
if [ ! -f "$dir/cert.pem" ]; then
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days 36500 \
    -subj "/O=BlurCam development/CN=BlurCam development update key (not for production)" \
    -keyout "$dir/key.pem.partial" -out "$dir/cert.pem.partial" 2>/dev/null
  chmod 0600 "$dir/key.pem.partial"
  mv "$dir/key.pem.partial" "$dir/key.pem"
  mv "$dir/cert.pem.partial" "$dir/cert.pem"
fi
cat >&2 <<WARN

  ##########################################################################################
  #  WARNING: the fleet file names no update signing key ([update] signing_key/cert).       #
  #  This image and its update bundle use a DEVELOPMENT key from the build cache:           #
  #    $dir
  #  Devices flashed with this image accept updates signed by anyone who has that file.    #
  #  For a real fleet, make your own key and name it in the fleet file (README: updates).   #
  ##########################################################################################

WARN
echo "$dir/key.pem $dir/cert.pem"
