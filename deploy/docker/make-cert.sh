#!/bin/sh
# Makes a self-signed certificate in /etc/postern/tls (cert.pem, key.pem) unless one is there:
# the one-shot `certs` service of docker-compose.yml. CERT_NAMES: the names it is for,
# comma-separated (default: SMTP_HOSTNAME, else localhost); CERT_DAYS (default 825).
set -eu
DIR=${TLS_DIR:-/etc/postern/tls}
if [ -s "$DIR/cert.pem" ] && [ -s "$DIR/key.pem" ]; then
    echo "certs: $DIR has cert.pem and key.pem; keeping them"
    exit 0
fi
names=${CERT_NAMES:-${SMTP_HOSTNAME:-localhost}}
cn=${names%%,*}
san=$(printf '%s' "$names" | tr ',' '\n' | sed '/^ *$/d; s/^ *//; s/ *$//' |
    awk '{ printf "%s%s:%s", (NR > 1 ? "," : ""), ($0 ~ /^[0-9.]+$|:/ ? "IP" : "DNS"), $0 }')
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days "${CERT_DAYS:-825}" -subj "/CN=$cn" \
    -addext "subjectAltName=$san" -keyout "$DIR/key.pem.tmp" -out "$DIR/cert.pem.tmp" 2>/dev/null
chmod 644 "$DIR/cert.pem.tmp"
mv "$DIR/key.pem.tmp" "$DIR/key.pem"
mv "$DIR/cert.pem.tmp" "$DIR/cert.pem"
echo "certs: made a self-signed certificate for $names in $DIR (replace cert.pem and key.pem with your own)"
