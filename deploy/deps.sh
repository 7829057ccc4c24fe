#!/bin/sh
# Installs the Debian 12 packages that building, running and testing Postern need.
# Installs only what is missing; uses sudo when not run as root.
set -eu

BUILD_PKGS="build-essential pkg-config libuv1-dev libnats-dev libprotobuf-c-dev
protobuf-c-compiler libpq-dev libssl-dev libcmocka-dev"
RUN_PKGS="postgresql nats-server openssl"
TEST_PKGS="python3 python3-pytest python3-psycopg2 python3-protobuf protobuf-compiler
swaks libnet-ssleay-perl msmtp fetchmail curl"

missing=""
for p in $BUILD_PKGS $RUN_PKGS $TEST_PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "Installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The postgresql package would start a cluster of its own; Postern runs a private one.
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
