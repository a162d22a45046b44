#!/usr/bin/env bash
# The production image: Raspberry Pi OS Lite (arm64, trixie) built by pi-gen, plus our stage.
# Needs the Raspberry Pi archive (pi-gen's stage0 bootstraps from it) and a pi-gen checkout of
# the branch that builds arm64 trixie images: PIGEN_DIR (default: ../pi-gen beside the project).
# usage: build-production.sh FLEET_FILE OUT_DIR
source "$(dirname "$0")/../scripts/common.sh"
require_root "pi-gen"
fleet_file=$(realpath "${1:?usage: $0 FLEET_FILE OUT_DIR}")
out=$(realpath -m "${2:?usage: $0 FLEET_FILE OUT_DIR}")
PIGEN_DIR=$(realpath -m "${PIGEN_DIR:-$PROJECT_DIR/../pi-gen}")
[ -x "$PIGEN_DIR/build.sh" ] || die "no pi-gen at $PIGEN_DIR: clone pi-gen (arm64 branch) there or set PIGEN_DIR"

# Our stage, completed with this build's package list and payload.
stage=$CACHE_DIR/pi-gen/stage-blurcam
rm -rf "$stage"; mkdir -p "$(dirname "$stage")"
cp -a "$IMAGE_BUILD_DIR/pi-gen/stage-blurcam" "$stage"
package_list "$IMAGE_BUILD_DIR/packages/common.txt" "$IMAGE_BUILD_DIR/packages/extra.txt" "$IMAGE_BUILD_DIR/packages/production.txt" \
  > "$stage/00-install/00-packages-nr"
bash "$IMAGE_BUILD_DIR/scripts/make-payload.sh" "$fleet_file" "$stage/00-install/payload"

# Stage 2 is Raspberry Pi OS Lite; only our stage exports an image. The first user is the
# fleet's "admin" account; install-appliance.sh locks its (random, discarded) password.
touch "$PIGEN_DIR/stage2/SKIP_IMAGES"
cat > "$CACHE_DIR/pi-gen/config" <<CONFIG
IMG_NAME=blurcam
RELEASE=trixie
ARCH=arm64
DEPLOY_DIR=$out
DEPLOY_COMPRESSION=xz
TARGET_HOSTNAME=blurcam
FIRST_USER_NAME=admin
FIRST_USER_PASS=$(head -c 24 /dev/urandom | base64)
DISABLE_FIRST_BOOT_USER_RENAME=1
ENABLE_SSH=1
PUBKEY_ONLY_SSH=1
STAGE_LIST="stage0 stage1 stage2 $stage"
CONFIG
log "pi-gen: building Raspberry Pi OS Lite + stage-blurcam into $out (takes about an hour)"
(cd "$PIGEN_DIR" && ./build.sh -c "$CACHE_DIR/pi-gen/config")
