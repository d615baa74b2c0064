#!/usr/bin/env bash
# Builds ctloop's images with BuildKit: `docker/build.sh runtime|control|kafka|base ...` (make image runs
# runtime and control). The base is $CTLOOP_BASE_IMAGE, else debian:bookworm-slim when it is present or can be
# pulled, else a Debian base built here from Debian packages (docker/build-base.sh). The host's apt sources
# and CA bundle go in as BuildKit secrets, so no host configuration lands in a layer.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's client has BuildKit built in; a newer client without the buildx plugin refuses it.
if [ -z "${DOCKER:-}" ]; then
  DOCKER=docker
  [ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
fi
export DOCKER DOCKER_BUILDKIT=1
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
RUNTIME_IMAGE=${CTLOOP_IMAGE:-ghcr.io/ctloop/ctloop:$VERSION}
CONTROL_IMAGE=${CTLOOP_CONTROL_IMAGE:-ghcr.io/ctloop/ctloop-control:$VERSION}
KAFKA_IMAGE=${CTLOOP_KAFKA_IMAGE:-ctloop/kafka:8.1.0}
LOCAL_BASE=ctloop/debian:bookworm

base_image() {
  if [ -n "${CTLOOP_BASE_IMAGE:-}" ]; then echo "$CTLOOP_BASE_IMAGE"; return; fi
  if "$DOCKER" image inspect debian:bookworm-slim >/dev/null 2>&1 \
     || timeout 30 "$DOCKER" pull -q debian:bookworm-slim >/dev/null 2>&1; then
    echo debian:bookworm-slim; return
  fi
  echo "debian:bookworm-slim cannot be pulled; using $LOCAL_BASE built from Debian packages" >&2
  docker/build-base.sh "$LOCAL_BASE" >&2
  echo "$LOCAL_BASE"
}

secrets() {
  local sources ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
  sources=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
  [ -n "$sources" ] && printf -- '--secret id=apt_sources,src=%s ' "$sources"
  [ -s "$ca" ] && printf -- '--secret id=ca,src=%s ' "$ca"
  true
}

build_app() {  # target tag
  local base
  base=$(base_image)
  # shellcheck disable=SC2046
  "$DOCKER" build --target "$1" --tag "$2" --build-arg "BASE=$base" --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" $(secrets) .
}

build_kafka() {
  local base context version
  base=$(base_image)
  version=$(python3 -c 'import re,sys; print(re.search(r"KAFKA_VERSION = \"(.*)\"", open("ctloop/kafka_local.py").read())[1])')
  libs=$(python3 -c 'import sys; sys.path.insert(0, "."); from ctloop.kafka_local import broker_libs; print(broker_libs())')
  context=${XDG_CACHE_HOME:-$HOME/.cache}/ctloop/images/kafka-context
  rm -rf "$context" && mkdir -p "$context"
  cp docker/kafka/* "$context/"
  cp -a "$libs" "$context/libs"
  # shellcheck disable=SC2046
  "$DOCKER" build --tag "$KAFKA_IMAGE" --build-arg "BASE=$base" --build-arg "KAFKA_VERSION=$version" $(secrets) "$context"
}

[ $# -gt 0 ] || set -- runtime control
for what in "$@"; do
  case "$what" in
    base) docker/build-base.sh "$LOCAL_BASE" ;;
    runtime) build_app runtime "$RUNTIME_IMAGE" ;;
    control) build_app control "$CONTROL_IMAGE" ;;
    kafka) build_kafka ;;
    *) echo "unknown image $what (runtime, control, kafka, base)" >&2; exit 2 ;;
  esac
done
