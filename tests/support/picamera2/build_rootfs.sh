#!/bin/sh
# Build the picamera2 test rootfs: Debian trixie + libcamera from trixie-backports (>= 0.5: the
# virtual camera of trixie's own 0.4 never fills buffer metadata) + picamera2 and our runtime deps
# from PyPI in /opt/venv. The project source is NOT baked in: tests bind-mount it at run time.
#
# usage: build_rootfs.sh TARGET_DIR      (run as root; TARGET_DIR must not exist)
# The tests cache the result keyed by a hash of this file and requirements.txt, so any change
# here rebuilds it. MIRROR: the Debian archive this machine already uses (its apt sources).
set -eu
TARGET=$1
HERE=$(cd "$(dirname "$0")" && pwd)
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)}
# pip inside the rootfs trusts what this machine trusts (its network may re-sign TLS).
HOST_CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -n "$MIRROR" ] || { echo "build_rootfs: no Debian mirror found in /etc/apt/sources.list.d/*.sources; set MIRROR" >&2; exit 2; }

# picamera2 goes in without its dependencies: of those, importing it needs only numpy, pillow,
# piexif, prctl (Debian), simplejpeg, videodev2 (requirements.txt) and PiDNG, which virtual_shim.py
# stubs (DNG files are never written here; building it would need gcc and python3-dev). The rest
# (av, jsonschema, tqdm, libarchive, OpenEXR) serve encoders and the IMX500 only.
mmdebstrap --variant=apt --quiet \
  --include=python3,python3-venv,python3-pip,python3-numpy,python3-pil,python3-piexif,python3-prctl,python3-libcamera/trixie-backports,libcamera-ipa/trixie-backports \
  --customize-hook='cp /etc/resolv.conf "$1/etc/resolv.conf"' \
  --customize-hook="cp '$HERE/requirements.txt' \"\$1/tmp/requirements.txt\"" \
  --customize-hook="cp '$HOST_CA' \"\$1/tmp/host-ca.crt\"" \
  --customize-hook='chroot "$1" env -i PATH=/usr/bin:/bin HOME=/root PIP_CERT=/tmp/host-ca.crt PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 sh -c "python3 -m venv --system-site-packages /opt/venv && /opt/venv/bin/pip install --quiet --no-cache-dir --no-deps picamera2==0.3.38 && /opt/venv/bin/pip install --quiet --no-cache-dir -r /tmp/requirements.txt"' \
  --customize-hook='rm -f "$1/tmp/requirements.txt" "$1/tmp/host-ca.crt"; mkdir -p "$1/opt/blurcam" "$1/opt/frames" "$1/usr/share/libcamera/pipeline/virtual"' \
  --customize-hook='touch "$1/usr/share/libcamera/pipeline/virtual/virtual.yaml"' \
  trixie "$TARGET" "deb $MIRROR trixie main" "deb $MIRROR trixie-backports main"
