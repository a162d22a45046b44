#!/usr/bin/env bash
# The update signing key, certificate and device keyring for an image build: the ones the fleet
# file's [update] table names (paths relative to the fleet file), checked; or, when it names none,
# a development key made once and kept in the build cache (so the image's keyring and later
# bundles match), announced with a loud warning. Prints "KEY CERT KEYRING".
# usage: signing-key.sh FLEET_FILE CACHE_DIR
set -euo pipefail
fleet_file=${1:?usage: $0 FLEET_FILE CACHE_DIR}
cache=${2:?usage: $0 FLEET_FILE CACHE_DIR}
py=${PYTHON:-python3}
die() { echo "signing-key: error: $*" >&2; exit 1; }

read -r key cert keyring < <("$py" - "$fleet_file" <<'PY'
import sys, tomllib
from pathlib import Path
path = Path(sys.argv[1])
update = tomllib.loads(path.read_text()).get("update", {})
def where(name):
    value = update.get(name)
    return str((path.parent / value).resolve()) if value else "-"
print(where("signing_key"), where("signing_cert"), where("keyring") if update.get("keyring") else where("signing_cert"))
PY
)

if [ "$key" = - ]; then
  dir=$cache/dev-signing-key
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
  echo "$dir/key.pem $dir/cert.pem $dir/cert.pem"
  exit 0
fi

for f in "$key" "$cert" "$keyring"; do [ -r "$f" ] || die "$f (named in $fleet_file [update]) cannot be read"; done
openssl pkey -in "$key" -noout 2>/dev/null || die "$key is not a PEM private key (or it has a passphrase)"
openssl x509 -in "$cert" -noout 2>/dev/null || die "$cert is not a PEM certificate"
[ "$(openssl pkey -in "$key" -pubout)" = "$(openssl x509 -in "$cert" -noout -pubkey)" ] \
  || die "$key is not the key of $cert"
openssl verify -CAfile "$keyring" "$cert" >/dev/null 2>&1 \
  || die "$cert does not chain to the keyring $keyring: devices would refuse every bundle"
echo "$key $cert $keyring"
