# Shared helpers for the build scripts (sourced, not run).
# shellcheck shell=bash
set -euo pipefail

IMAGE_BUILD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT_DIR=$(cd "$IMAGE_BUILD_DIR/.." && pwd)
CACHE_DIR=${BLURCAM_IMAGE_CACHE:-$IMAGE_BUILD_DIR/.cache}
SUITE=trixie
PYTHON_TAG=3.13   # trixie's python3; the aarch64 wheels are fetched for this version

log() { printf '[image-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'image-build: error: %s\n' "$*" >&2; exit 1; }

# Package names from a list file: comments and blank lines dropped.
package_list() { sed 's/#.*//' "$@" | tr -s ' \t\n' '\n' | sed '/^$/d'; }

# A short hash of files' contents, used as a cache key (a changed recipe never reuses a stale cache).
hash_files() { cat "$@" | sha256sum | cut -c1-16; }

# The Debian archive this machine's apt already uses (first URIs: line), unless MIRROR is set.
debian_mirror() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  local m
  m=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [ -n "$m" ] || m=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -1)
  [ -n "$m" ] || die "no Debian mirror found in apt's sources; set MIRROR=<archive URL>"
  echo "${m%% *}"
}

# Running arm64 programs in the rootfs needs qemu-user through binfmt_misc (mmdebstrap needs it too).
ensure_binfmt_aarch64() {
  [ "$(uname -m)" = aarch64 ] && return 0
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    command -v update-binfmts >/dev/null || die "update-binfmts missing: apt-get install binfmt-support qemu-user-static"
    update-binfmts --enable qemu-aarch64 || die "cannot register qemu-aarch64 with binfmt_misc"
  fi
  grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 is registered but disabled"
}

require_root() { [ "$(id -u)" -eq 0 ] || die "$1 needs root (chroot, loop-free image assembly with real file owners)"; }

# Run a command inside a rootfs with /proc, /sys, /dev bound, unmounting whatever happens.
# A fresh UTS namespace keeps provisioning's sethostname() from renaming the build machine.
in_rootfs() {
  local root=$1; shift
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"; mount --make-rslave "$root/sys"
  mount --rbind /dev "$root/dev"; mount --make-rslave "$root/dev"
  local rc=0
  unshare --uts chroot "$root" "$@" || rc=$?
  umount -R "$root/dev" "$root/sys" "$root/proc" 2>/dev/null || umount -lR "$root/dev" "$root/sys" "$root/proc"
  return $rc
}

# Delete a scratch directory this build made: only below the given prefix (e.g. the cache's
# "work." dirs), never with a mount inside it, never crossing into another filesystem.
remove_scratch() {
  local dir=$1 prefix=$2
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  dir=$(realpath -e "$dir")
  prefix=$(realpath -m "$(dirname "$prefix")")/$(basename "$prefix")
  case "$dir" in "$prefix"?*) ;; *) echo "image-build: refusing to delete $dir (not under $prefix)" >&2; return 1 ;; esac
  if awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    echo "image-build: refusing to delete $dir: something is still mounted in it" >&2; return 1
  fi
  rm -rf --one-file-system -- "$dir"
}

# Validate a fleet file with the project's own validator; errors name each bad field.
check_fleet_file() {
  local py=${PYTHON:-$PROJECT_DIR/.venv/bin/python}
  [ -x "$py" ] || py=python3
  PYTHONPATH=$PROJECT_DIR "$py" -c 'import sys; from appliance.fleet import main; sys.exit(main(["check", sys.argv[1]]))' "$1" >&2 \
    || die "the fleet file $1 is invalid (errors above); nothing was built"
}
