#!/bin/sh
# Prints the command of a Docker Compose v2 (the `docker compose` most users have): the
# Docker CLI plugin when it is installed, else build/tools/docker-compose, built the first
# time from the Go module proxy (several minutes, once). Debian 12 packages only Compose
# v1 (docker-compose 1.29); the tests run the compose file under both.
# Exit status 1, with the reason on stderr, when neither can be had (no Go, no proxy).
set -eu
cd "$(dirname "$0")/.."
VERSION=v2.40.3
MODULE=github.com/docker/compose/v2
TOOLS=$(pwd)/build/tools
OUT=$TOOLS/docker-compose

if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
    exit 0
fi
if [ -x "$OUT" ] && "$OUT" version 2>/dev/null | grep -q "$VERSION"; then
    echo "$OUT"
    exit 0
fi
GO=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$GO" ] || { echo "compose-v2.sh: no Go to build Compose $VERSION with" >&2; exit 1; }
# `go install` refuses a module whose go.mod has exclude directives: build it as a
# dependency of a module of our own instead.
SRC=$TOOLS/compose-v2-src
mkdir -p "$SRC"
echo "compose-v2.sh: building Docker Compose $VERSION into $OUT (once; a few minutes)" >&2
(
    cd "$SRC"
    [ -f go.mod ] || "$GO" mod init postern.local/compose-v2 >/dev/null 2>&1
    "$GO" get "$MODULE/cmd@$VERSION" >build.log 2>&1
    "$GO" build -ldflags "-X $MODULE/internal.Version=$VERSION" -o "$OUT.tmp" "$MODULE/cmd" \
        >>build.log 2>&1
) || { echo "compose-v2.sh: building Compose failed: $(tail -n 3 "$SRC/build.log" | tr '\n' ' ')" >&2; exit 1; }
mv "$OUT.tmp" "$OUT"
echo "$OUT"
