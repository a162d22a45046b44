#!/usr/bin/env bash
# Collects everything install-appliance.sh puts into the image, on the build machine (no chroot):
# the project wheel built from this working tree, aarch64 wheels for requirements-device.txt
# (cached), the models with their checksums, systemd/, files/, the validated fleet file.
# SHARED by both builds. usage: make-payload.sh FLEET_FILE OUT_DIR
source "$(dirname "$0")/common.sh"
fleet_file=${1:?usage: $0 FLEET_FILE OUT_DIR}
out=${2:?usage: $0 FLEET_FILE OUT_DIR}
PY=${PYTHON:-$PROJECT_DIR/.venv/bin/python}
[ -x "$PY" ] || PY=python3
check_fleet_file "$fleet_file"

rm -rf "$out"; mkdir -p "$out/wheels" "$out/models"

# Target: trixie's CPython on aarch64 (glibc 2.41), binary wheels only: nothing compiles on the device.
wheelhouse="$CACHE_DIR/wheels-$(hash_files "$IMAGE_BUILD_DIR/requirements-device.txt" <(echo "$PYTHON_TAG"))"
if [ ! -f "$wheelhouse/.complete" ]; then
  log "payload: downloading aarch64 wheels for Python $PYTHON_TAG"
  rm -rf "$wheelhouse"; mkdir -p "$wheelhouse"
  platforms=(); for v in 17 27 28 31 34 35 38 39 41; do platforms+=(--platform "manylinux_2_${v}_aarch64"); done
  "$PY" -m pip download -q --only-binary=:all: "${platforms[@]}" --platform manylinux2014_aarch64 \
    --python-version "$PYTHON_TAG" --implementation cp -d "$wheelhouse" -r "$IMAGE_BUILD_DIR/requirements-device.txt"
  touch "$wheelhouse/.complete"
fi
cp "$wheelhouse"/*.whl "$out/wheels/"

log "payload: blurcam wheel from the working tree"
"$PY" -m pip wheel -q --no-deps -w "$out/wheels" "$PROJECT_DIR" >&2

models=("$PROJECT_DIR"/models/*.tflite)
[ -e "${models[0]}" ] || die "no models/*.tflite: build them first (make models)"
cp "${models[@]}" "$out/models/"
(cd "$out/models" && sha256sum -- *.tflite > SHA256SUMS)

cp -r "$PROJECT_DIR/systemd" "$out/systemd"
cp -a "$IMAGE_BUILD_DIR/files" "$out/files"
cp "$fleet_file" "$out/fleet.toml"
cp "$IMAGE_BUILD_DIR/requirements-device.txt" "$IMAGE_BUILD_DIR/README.md" "$out/"
cp "$IMAGE_BUILD_DIR/scripts/install-appliance.sh" "$IMAGE_BUILD_DIR/scripts/configure-boot.sh" \
   "$IMAGE_BUILD_DIR/scripts/read-only-root.sh" "$out/"
log "payload: ready in $out ($(du -sh "$out" | cut -f1))"
