#!/bin/sh
# The bus's secrets for docker-compose.yml, made on the first run and kept in volumes (the
# one-shot `nats-secrets` service; `make run` and the chart make theirs elsewhere):
#
#   $OUT/ca/        the private CA (ca.key, ca.pem) and every user's password; this container's only
#   $OUT/conf/      what the nats-server nodes read: nats-N.conf, auth.conf (the users and
#                   their permissions, deploy/nats-auth.sh), server.pem, server.key, ca.pem
#   $OUT/users/U/   what service U reads: password, ca.pem (one volume per service, so a
#                   service sees its own password only)
#
# NATS_NODES: the nodes' names (default "nats nats-1 nats-2"), also the names in the servers'
# certificate; NATS_CLUSTER: the cluster's name (default postern); NATS_TEST_USER=1 adds the
# e2e harness's user `test`, allowed everything (tests/deploy/compose.e2e.yml only), and its
# password in conf/test.password. The users' configuration is written again at every run (a
# change of the permission table applies once the nodes restart); the CA, the certificate
# and the passwords are kept. Rotating: delete ca/<user>.password (a password) or every file
# of ca/ (the CA too), then `docker compose up -d --force-recreate` (this runs again, the
# nodes and the services start with the new files).
set -eu
OUT=${NATS_SECRETS_DIR:-/etc/postern/nats-secrets}
NODES=${NATS_NODES:-nats nats-1 nats-2}
CLUSTER=${NATS_CLUSTER:-postern}
CA=$OUT/ca
CONF=$OUT/conf
umask 077

# ---- the CA and the servers' certificate (clientAuth too: the nodes' routes verify each other)
if ! [ -s "$CA/ca.pem" ] || ! [ -s "$CA/ca.key" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Postern NATS CA" \
        -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$CA/ca.key" -out "$CA/ca.pem" 2>/dev/null
    rm -f "$CONF/server.pem"
    echo "nats-secrets: made a private CA for the bus"
fi
if ! [ -s "$CONF/server.pem" ]; then
    san="DNS:localhost,IP:127.0.0.1"
    for n in $NODES; do san="$san,DNS:$n"; done
    openssl req -newkey rsa:2048 -nodes -subj "/CN=${NODES%% *}" \
        -keyout "$CONF/server.key" -out "$CA/server.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:false\n' \
        "$san" >"$CA/server.ext"
    openssl x509 -req -in "$CA/server.csr" -CA "$CA/ca.pem" -CAkey "$CA/ca.key" \
        -CAcreateserial -days 825 -extfile "$CA/server.ext" -out "$CONF/server.pem" 2>/dev/null
    rm -f "$CA/server.csr" "$CA/server.ext"
    echo "nats-secrets: made the nodes' certificate ($san)"
fi
cp "$CA/ca.pem" "$CONF/ca.pem"

# ---- users, passwords, permissions
nats-auth passwords "$CA"
test_user=""
if [ "${NATS_TEST_USER:-}" = 1 ]; then
    test_user=test
fi
nats-auth config "$CA" $test_user >"$CONF/auth.conf.tmp"
mv "$CONF/auth.conf.tmp" "$CONF/auth.conf"
if [ -n "$test_user" ]; then
    cp "$CA/test.password" "$CONF/test.password"
else
    rm -f "$CONF/test.password"
fi
for u in $(nats-auth users); do
    # only the users whose volume is mounted (the image's own folders are read-only)
    [ -d "$OUT/users/$u" ] && [ -w "$OUT/users/$u" ] || continue
    cp "$CA/$u.password" "$OUT/users/$u/password"
    cp "$CA/ca.pem" "$OUT/users/$u/ca.pem"
done

# ---- one configuration per node: TLS for clients and routes, the cluster, JetStream
routes=""
for n in $NODES; do
    routes="$routes    nats-route://$n:6222
"
done
for n in $NODES; do
    cat >"$CONF/$n.conf.tmp" <<CONF
# Written by the nats-secrets service (deploy/docker/make-nats-secrets.sh) at every start.
server_name: "$n"
listen: "0.0.0.0:4222"
http: "0.0.0.0:8222"
tls {
  cert_file: "/etc/nats/conf/server.pem"
  key_file: "/etc/nats/conf/server.key"
  ca_file: "/etc/nats/conf/ca.pem"
  timeout: 3
}
cluster {
  name: "$CLUSTER"
  listen: "0.0.0.0:6222"
  # Clients know every node (NATS_URL); the nodes' container addresses are not in the
  # certificate, so they are not announced.
  no_advertise: true
  routes: [
$routes  ]
  tls {
    cert_file: "/etc/nats/conf/server.pem"
    key_file: "/etc/nats/conf/server.key"
    ca_file: "/etc/nats/conf/ca.pem"
    verify: true
    timeout: 3
  }
}
jetstream {
  store_dir: "/data"
}
include "auth.conf"
CONF
    mv "$CONF/$n.conf.tmp" "$CONF/$n.conf"
done
# The nodes run as another user than this one: they read, nobody else mounts this volume.
chmod 644 "$CONF"/*
echo "nats-secrets: the bus's users and the configuration of $NODES are in place"
