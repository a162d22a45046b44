#!/usr/bin/env bash
# One command for the SD image a BlurCam fleet is flashed with.
#
#   image-build/build.sh --config fleet.toml [--variant production|offline] [--out DIR]
#
# production (default): Raspberry Pi OS Lite arm64 through pi-gen with our stage
#   (image-build/pi-gen/stage-blurcam); needs the Raspberry Pi archive and a pi-gen checkout
#   (PIGEN_DIR, default ../pi-gen). Output: DIR/blurcam-<date>.img (+ .zip/.xz per pi-gen config).
# offline: Debian trixie arm64 from Debian's archive alone (mmdebstrap + qemu-user + genimage),
#   with the same appliance steps; what `make image-test` builds and checks.
# The fleet file is validated first; an invalid one stops the build with errors naming each field.
source "$(dirname "$0")/scripts/common.sh"

usage() { sed -n '3,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
config="" variant=production out="$IMAGE_BUILD_DIR/out"
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --variant) variant=${2:?--variant needs production or offline}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$config" ] || { echo "build.sh: --config FLEET_FILE is required" >&2; usage; }
[ -f "$config" ] || die "fleet file $config not found"
check_fleet_file "$config"   # before anything slow

case "$variant" in
  offline) exec bash "$IMAGE_BUILD_DIR/scripts/build-offline.sh" "$config" "$out" ;;
  production) exec bash "$IMAGE_BUILD_DIR/pi-gen/build-production.sh" "$config" "$out" ;;
  *) die "--variant must be production or offline, not $variant" ;;
esac
