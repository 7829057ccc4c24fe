#!/bin/sh
# Installs the Debian 12 packages that building, running and testing Postern need.
# Installs only what is missing; uses sudo when not run as root.
#   sh deploy/deps.sh          build, run and test
#   sh deploy/deps.sh bench    the same, plus what `make bench` compares against (Dovecot)
set -eu

BUILD_PKGS="build-essential pkg-config libuv1-dev libnats-dev libprotobuf-c-dev
protobuf-c-compiler libpq-dev libssl-dev libcmocka-dev libmicrohttpd-dev libgmime-3.0-dev
libc-ares-dev libjansson-dev"
RUN_PKGS="postgresql nats-server openssl iproute2"
# dovecot-imapd: tests/e2e/test_mime_diff.py compares lib/mail with a private Dovecot IMAP.
# python3-aiosmtpd: the remote SMTP servers relayd delivers to in tests; dnsmasq-base: the
# DNS server (MX records) under the tests' control. clang: the libFuzzer harnesses
# (tests/fuzz, `make fuzz`, `make fuzz-smoke`), which gcc cannot build; libclang-rt-14-dev
# holds libFuzzer and clang's sanitizer runtimes (clang 14, Debian 12's, does not pull it in).
# chromium, chromium-driver, python3-selenium: a headless browser that logs in to the
# webmail (Roundcube) in the compose stack (tests/deploy/e2e_webmail.sh).
# valgrind: the instruction counts of tests/perf/callgrind.sh (`make test-perf`).
TEST_PKGS="python3 python3-pytest python3-psycopg2 python3-protobuf python3-yaml protobuf-compiler
swaks libnet-ssleay-perl msmtp fetchmail curl dovecot-core dovecot-imapd
python3-aiosmtpd dnsmasq-base clang libclang-rt-14-dev
chromium chromium-driver python3-selenium valgrind"
# Only for `make bench`: Dovecot's pop3d and imap run beside pop3d and imapd, as a private
# instance; Postfix relays beside relayd, its smtp-sink is the host both deliver to
# (bench/relay_bench.sh, a private instance too).
BENCH_PKGS="dovecot-core dovecot-pop3d dovecot-imapd postfix"

want="$BUILD_PKGS $RUN_PKGS $TEST_PKGS"
[ "${1:-}" = "bench" ] && want="$want $BENCH_PKGS"

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "Installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Postfix: "No configuration" (its postinst then writes no main.cf and starts nothing on
# port 25); the bench configures a private instance of its own.
case " $missing " in
*" postfix "*)
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    ;;
esac
$SUDO apt-get update -qq
# The postgresql package would start a cluster of its own; Postern runs a private one.
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The bench runs its own Dovecot on loopback ports; a system-wide one that the package has
# just started (on machines with systemd) would take the standard ports: stop it again.
case " $missing " in
*" dovecot-core "*)
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
    fi
    ;;
esac
# Likewise a system-wide Postfix (port 25): stopped and kept from starting at boot.
case " $missing " in
*" postfix "*)
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now postfix.service >/dev/null 2>&1 || true
    fi
    if $SUDO postfix status >/dev/null 2>&1; then
        $SUDO postfix stop >/dev/null 2>&1 || true
    fi
    ;;
esac
