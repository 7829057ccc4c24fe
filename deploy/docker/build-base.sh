#!/bin/sh
# Builds, without any container registry, the images that Postern's containers start from:
#
#   postern-base:bookworm   Debian 12 (minbase, by debootstrap), apt set up like debian:bookworm-slim
#   postern-postgres:15     PostgreSQL 15 from Debian's packages, started like the postgres:15 image
#   postern-nats:2.9        nats-server from Debian's packages, started like the nats:2.9 image
#   postern-haproxy:2.6     HAProxy from Debian's packages, configured as docker-compose.yml's
#                           load balancer in front of the mail front ends (deploy/docker/haproxy)
#   postern-webmail:latest  Roundcube and Apache from Debian's packages (deploy/docker/webmail;
#                           docker-compose.yml's profile `webmail`)
#
#   sh deploy/docker/build-base.sh [all|base|postgres|nats|haproxy|webmail]     (default all)
#
# The base image, once there, is left alone (REBUILD=1 builds it again); the PostgreSQL,
# NATS, HAProxy and webmail images are built again each time from Docker's cache. With a
# registry, the base, PostgreSQL and NATS images are not needed: point POSTERN_BASE_IMAGE,
# POSTGRES_IMAGE and NATS_IMAGE at debian:bookworm-slim, postgres:15 and nats:2.9-alpine
# instead (see README, "Deploying"); the HAProxy and webmail images, which hold this
# project's configuration, are then built by the first `docker compose up` from
# POSTERN_BASE_IMAGE.
#
# Environment:
#   DEBIAN_MIRROR            Debian archive for debootstrap and the image's apt
#                            (default: this machine's, from /etc/apt/sources.list{,.d})
#   DEBIAN_SECURITY_MIRROR   the security archive (default: this machine's, else none)
#   DEBIAN_KEYRING           keyring to check the archive with
#                            (default /usr/share/keyrings/debian-archive-keyring.gpg)
#   REBUILD=1                build even if the image exists
# Needs root (or sudo) for debootstrap, and installs debootstrap with apt when it is missing.
set -eu

prog=build-base.sh
cd "$(dirname "$0")/../.."
HERE=deploy/docker

SUITE=bookworm
BASE_IMAGE=postern-base:bookworm
POSTGRES_IMAGE=postern-postgres:15
NATS_IMAGE=postern-nats:2.9
HAPROXY_IMAGE=postern-haproxy:2.6
WEBMAIL_IMAGE=postern-webmail:latest

die() {
    echo "$prog: $*" >&2
    exit 1
}

say() {
    echo "$prog: $*"
}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

have_image() {
    [ "${REBUILD:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1
}

# Prints "URI" of the first source that serves SUITE (or SUITE-security with $1=security),
# reading one-line .list files and deb822 .sources files alike.
host_mirror() {
    want=$SUITE
    [ "${1:-}" = security ] && want=$SUITE-security
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI SUITE COMPONENT...
        uri=$(sed -e 's/\[[^]]*\]//' "$f" |
            awk -v s="$want" '$1 == "deb" && $3 == s { print $2; exit }')
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v s="$want" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " s " ") && uri != "") {
                    print uri; found = 1; exit
                }
                types = ""; suites = ""; uri = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "uris:"    { uri = $2 }
            tolower($1) == "suites:"  { $1 = ""; suites = $0 }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { if (!found) flush() }
        ' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
}

build_base() {
    if have_image "$BASE_IMAGE"; then
        say "$BASE_IMAGE exists (REBUILD=1 to build it again)"
        return
    fi
    MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    SECURITY=${DEBIAN_SECURITY_MIRROR-$(host_mirror security)}
    KEYRING=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
    [ -f "$KEYRING" ] ||
        die "no Debian archive keyring at $KEYRING (apt-get install debian-archive-keyring, or set DEBIAN_KEYRING)"
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi

    ROOTFS=$(mktemp -d "${TMPDIR:-/var/tmp}/postern-rootfs.XXXXXX")
    chmod 755 "$ROOTFS" # it becomes the image's /
    # shellcheck disable=SC2064
    trap "$SUDO rm -rf '$ROOTFS'" EXIT INT TERM
    say "debootstrap $SUITE (minbase) from $MIRROR"
    $SUDO debootstrap --variant=minbase --keyring="$KEYRING" "$SUITE" "$ROOTFS" "$MIRROR" \
        >"$ROOTFS.log" 2>&1 || {
        tail -n 30 "$ROOTFS.log" >&2
        die "debootstrap failed (log: $ROOTFS.log)"
    }
    rm -f "$ROOTFS.log"

    say "configuring apt like debian:bookworm-slim"
    # The archives the image's apt uses: the same as this machine's.
    $SUDO rm -f "$ROOTFS/etc/apt/sources.list"
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$MIRROR" "$SUITE" "$SUITE"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        if [ -n "$SECURITY" ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$SECURITY" "$SUITE"
            printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        fi
    } | $SUDO tee "$ROOTFS/etc/apt/sources.list.d/debian.sources" >/dev/null
    # As in Debian's official images: no caches, no translations, no documentation.
    $SUDO sh -c "cat >'$ROOTFS/etc/apt/apt.conf.d/docker-clean'" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    $SUDO sh -c "cat >'$ROOTFS/etc/apt/apt.conf.d/docker-no-languages'" <<'EOF'
Acquire::Languages "none";
EOF
    $SUDO sh -c "cat >'$ROOTFS/etc/apt/apt.conf.d/docker-autoremove-suggests'" <<'EOF'
Apt::AutoRemove::SuggestsImportant "false";
EOF
    $SUDO sh -c "cat >'$ROOTFS/etc/dpkg/dpkg.cfg.d/docker'" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    # Packages never start daemons while an image is built.
    $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' >'$ROOTFS/usr/sbin/policy-rc.d' && chmod 755 '$ROOTFS/usr/sbin/policy-rc.d'"

    # Security and point-release updates, inside the tree, with this machine's resolver.
    say "applying $SUITE-updates and $SUITE-security"
    $SUDO cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    $SUDO chroot "$ROOTFS" sh -c 'export DEBIAN_FRONTEND=noninteractive &&
        apt-get update -qq && apt-get -y -qq upgrade && apt-get clean' >"$ROOTFS.log" 2>&1 || {
        tail -n 30 "$ROOTFS.log" >&2
        die "apt-get upgrade in the new tree failed (log: $ROOTFS.log)"
    }
    rm -f "$ROOTFS.log"

    # What the path-excludes would have kept out, had they been there from the start.
    $SUDO sh -c "cd '$ROOTFS' &&
        find usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete &&
        find usr/share/doc -mindepth 1 -type d -empty -delete &&
        rm -rf usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/lintian/* &&
        rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old &&
        find var/log -type f -delete &&
        rm -f etc/resolv.conf etc/hostname && : >etc/machine-id"

    say "importing $BASE_IMAGE"
    $SUDO tar --numeric-owner -C "$ROOTFS" -c . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase $SUITE $MIRROR" \
            - "$BASE_IMAGE" >/dev/null
    $SUDO rm -rf "$ROOTFS"
    trap - EXIT INT TERM
    say "built $BASE_IMAGE"
}

build_from_base() { # build_from_base IMAGE DIR
    # Built every time: Docker's cache makes an unchanged image a matter of seconds, and an
    # image whose Dockerfile changed (a mount point's owner, say) is not left stale.
    say "building $1 (cached layers reused)"
    log=$(mktemp "${TMPDIR:-/tmp}/postern-build.XXXXXX")
    docker build --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$1" "$2" >"$log" 2>&1 || {
        tail -n 30 "$log" >&2
        die "building $1 failed (log: $log)"
    }
    rm -f "$log"
    say "built $1"
}

what=${1:-all}
case $what in
    all)
        build_base
        build_from_base "$POSTGRES_IMAGE" "$HERE/postgres"
        build_from_base "$NATS_IMAGE" "$HERE/nats"
        build_from_base "$HAPROXY_IMAGE" "$HERE/haproxy"
        build_from_base "$WEBMAIL_IMAGE" "$HERE/webmail"
        ;;
    base) build_base ;;
    postgres) build_from_base "$POSTGRES_IMAGE" "$HERE/postgres" ;;
    nats) build_from_base "$NATS_IMAGE" "$HERE/nats" ;;
    haproxy) build_from_base "$HAPROXY_IMAGE" "$HERE/haproxy" ;;
    webmail) build_from_base "$WEBMAIL_IMAGE" "$HERE/webmail" ;;
    *)
        echo "usage: $prog [all|base|postgres|nats|haproxy|webmail]" >&2
        exit 2
        ;;
esac
