#!/usr/bin/env bash
# CI's Docker setup, best effort: install Debian's docker.io and debootstrap when missing, start dockerd when none
# answers (its data root, images and build cache included, under ~/.cache/ctloop/docker, so a later run on this
# machine reuses them), then build the base, Kafka and runtime images. Each step says why when it fails; a failed
# install or engine start ends the setup, a failed build only skips that image. `.ci/run` runs the tests either
# way, and a test whose image or engine is missing skips with the reason (or, for Kafka, uses the Java broker).
# Time limits keep the setup under CI's 15 minutes; an interrupted build keeps its finished layers for the next run.
set -uo pipefail
cd "$(dirname "$0")/.."
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ctloop
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker

failed=0
step() {  # fatal|optional name command...: runs it, timing it; on failure says why
  local kind=$1 name=$2 started=$SECONDS code=0; shift 2
  "$@" || code=$?
  if [ "$code" = 0 ]; then
    echo "docker setup: $name done in $((SECONDS - started))s"
    return 0
  fi
  echo "docker setup: $name failed (exit $code$([ "$code" = 124 ] && echo ', time limit')) after $((SECONDS - started))s" >&2
  failed=1
  [ "$kind" = optional ] || exit 1
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

step fatal "install docker.io and debootstrap" timeout 300 bash -c "$(declare -f install_packages); install_packages"
step fatal "start dockerd" start_engine
# The base is built first, by the first build that needs it, only when debian:bookworm-slim cannot be pulled.
step optional "build the Kafka image" timeout 360 docker/build.sh kafka
# What is left of the budget (CI's added time must stay under 15 minutes) goes to the runtime image.
left=$(( ${CTLOOP_CI_DOCKER_BUDGET_S:-840} - SECONDS ))
[ "$left" -ge 60 ] || left=60
step optional "build the runtime image (limit ${left}s)" timeout "$left" docker/build.sh runtime
exit "$failed"
