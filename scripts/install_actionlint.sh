#!/usr/bin/env bash
# actionlint (the GitHub Actions workflow linter `make lint` runs) into .engine/bin, built from
# the Go module proxy at a pinned version. Cached: nothing happens when that version is there.
#
#   bash scripts/install_actionlint.sh
#
# Needs Go 1.25 or newer (actionlint's go.mod); modules and build cache stay in .engine/ like the
# engine's (scripts/bootstrap_engine.sh), which is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=v1.7.12  # the newest on the Go module proxy on 2026-11-22
MODULE=github.com/rhysd/actionlint/cmd/actionlint
ENGINE="$PWD/.engine"
BIN="$ENGINE/bin"
TARGET="$BIN/actionlint"

if [[ -x $TARGET ]] && [[ "$("$TARGET" -version 2>/dev/null | head -n 1)" == "$VERSION" ]]; then
  echo "actionlint $VERSION: cached in .engine/bin"
  exit 0
fi

GO="$(command -v go || true)"
[[ -n $GO ]] || { [[ -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go; }
if [[ -z $GO ]]; then
  echo "install_actionlint: Go is missing; install Go 1.25+ (https://go.dev/dl/), then run" \
    "bash scripts/install_actionlint.sh again" >&2
  exit 1
fi

mkdir -p "$BIN"
export GOPATH="$ENGINE/gopath" GOMODCACHE="$ENGINE/gopath/pkg/mod" GOCACHE="$ENGINE/gocache"
export GOFLAGS="-buildvcs=false" GOTOOLCHAIN=local GOBIN="$BIN"
started=$SECONDS
if ! "$GO" install "$MODULE@$VERSION"; then
  echo "install_actionlint: 'go install $MODULE@$VERSION' failed (above); actionlint needs" \
    "Go 1.25+ (this is $("$GO" env GOVERSION))" >&2
  exit 1
fi
echo "actionlint $("$TARGET" -version | head -n 1): built into .engine/bin in $((SECONDS - started)) s"
