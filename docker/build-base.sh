#!/usr/bin/env bash
# Builds a Debian bookworm base image from Debian packages (no image registry needed) and tags it
# $1 (default ctloop/debian:bookworm). It is what `docker pull debian:bookworm-slim` would give: a minbase
# root file system. The mirror is the one the host's apt sources name. The root file system is cached as
# a tarball under ~/.cache/ctloop/images, so a new Docker engine re-imports it in seconds.
set -euo pipefail
TAG=${1:-ctloop/debian:bookworm}
DOCKER=${DOCKER:-docker}
CACHE=${CTLOOP_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ctloop/images}
TARBALL=$CACHE/debian-bookworm-minbase.tar

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG is present"
  exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | grep -v security | head -n1 || true)
  if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  mirror=${mirror:-http://deb.debian.org/debian}
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # What the official slim image leaves out too: package caches, lists, docs.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
         "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  tar -C "$root" -cf "$TARBALL.partial" .
  mv "$TARBALL.partial" "$TARBALL"
fi
"$DOCKER" import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' "$TARBALL" "$TAG" >/dev/null
echo "base image $TAG imported from $TARBALL"
