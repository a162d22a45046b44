#!/usr/bin/env bash
# Install the Debian packages the tests need (qemu, chromium, v4l-utils, ...), once.
# Each area lists its own in tools/apt-packages/*.txt (one package per line, # comments).
# Without root, prints what is missing; the tests that need those tools then skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/apt-packages"
want=$(cat ./*.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \n' '\n' | sed '/^$/d' | sort -u)
[ -n "$want" ] || exit 0
missing=()
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: not root; missing Debian packages: ${missing[*]} (tests needing them will skip)" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
