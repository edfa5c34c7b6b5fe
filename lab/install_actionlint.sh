#!/usr/bin/env bash
# actionlint (the GitHub Actions workflow linter `make lint` runs) into .engine/bin, built from
# the Go module proxy at a pinned version. Cached: nothing happens when that version is there.
#
#   bash lab/install_actionlint.sh
#
# Needs Go 1.25 or newer (actionlint's go.mod). The build and Go's caches are per user, outside the
# clone, like the engine's (lab/bootstrap_engine.sh); .engine/bin (git-ignored) links to it.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=v1.7.12  # the newest on the Go module proxy on 2026-11-22
MODULE=github.com/rhysd/actionlint/cmd/actionlint
ENGINE_HOME="${ENGINE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/mastodon-data/engine}"
BIN="$PWD/.engine/bin"
BUILT="$ENGINE_HOME/actionlint-$VERSION"
TARGET="$BIN/actionlint"
mkdir -p "$BIN"
if [[ -x $BUILT/actionlint ]]; then ln -sfn "$BUILT/actionlint" "$TARGET"; fi

if [[ -x $TARGET ]] && [[ "$("$TARGET" -version 2>/dev/null | head -n 1)" == "$VERSION" ]]; then
  echo "actionlint $VERSION: cached in $BUILT"
  exit 0
fi

GO="$(command -v go || true)"
[[ -n $GO ]] || { [[ -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go; }
if [[ -z $GO ]]; then
  echo "install_actionlint: Go is missing; install Go 1.25+ (https://go.dev/dl/), then run" \
    "bash lab/install_actionlint.sh again" >&2
  exit 1
fi

mkdir -p "$BUILT"
export GOMODCACHE="$ENGINE_HOME/go/mod" GOCACHE="$ENGINE_HOME/go/build"
export GOFLAGS="-buildvcs=false" GOTOOLCHAIN=local GOBIN="$BUILT"
started=$SECONDS
if ! "$GO" install "$MODULE@$VERSION"; then
  echo "install_actionlint: 'go install $MODULE@$VERSION' failed (above); actionlint needs" \
    "Go 1.25+ (this is $("$GO" env GOVERSION))" >&2
  exit 1
fi
ln -sfn "$BUILT/actionlint" "$TARGET"
echo "actionlint $("$TARGET" -version | head -n 1): built into $BUILT in $((SECONDS - started)) s"
