#!/usr/bin/env bash
# CI's Docker setup, best effort: install Debian's docker.io and debootstrap when missing, start dockerd when none
# answers (its data root, images and build cache included, under ~/.cache/ctloop/docker, so a later run on this
# machine reuses them), then build the base, Kafka and runtime images. Exits non-zero, saying why, at the first
# step that fails; `.ci/run` then runs the tests anyway and the Docker tests skip with their reason.
set -uo pipefail
cd "$(dirname "$0")/.."
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ctloop
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker

step() {  # name, command...: runs it, timing it; on failure says why and stops
  local name=$1 started=$SECONDS; shift
  if "$@"; then
    echo "docker setup: $name done in $((SECONDS - started))s"
  else
    echo "docker setup: $name failed (exit $?); the tests that need Docker will skip" >&2
    exit 1
  fi
}

install_packages() {
  command -v dockerd >/dev/null && command -v debootstrap >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { echo "docker.io/debootstrap missing and not root to install them" >&2; return 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
}

start_engine() {
  "$DOCKER" info >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || { echo "no Docker engine answers and not root to start dockerd" >&2; return 1; }
  mkdir -p "$CACHE/docker"
  nohup dockerd --storage-driver=overlay2 --data-root "$CACHE/docker" >"$CACHE/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    "$DOCKER" info >/dev/null 2>&1 && return 0
    sleep 1
  done
  tail -n 5 "$CACHE/dockerd.log" >&2
  return 1
}

step "install docker.io and debootstrap" timeout 300 bash -c "$(declare -f install_packages); install_packages"
step "start dockerd" start_engine
# The base only when debian:bookworm-slim cannot be pulled; build.sh decides and says so.
step "build the Kafka image" timeout 300 docker/build.sh kafka
step "build the runtime image" timeout 900 docker/build.sh runtime
