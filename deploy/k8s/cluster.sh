#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, for testing the Helm chart without a registry.
#
#   deploy/k8s/cluster.sh up [--control-plane-only]   build (cached) and start everything
#   deploy/k8s/cluster.sh down                        stop what `up` started, remove its state
#   deploy/k8s/cluster.sh status                      what runs, nodes and pods
#   deploy/k8s/cluster.sh load-image IMAGE...         `docker save` IMAGE into the cluster
#   deploy/k8s/cluster.sh env                         prints `export KUBECONFIG=...` etc.
#
# Pieces: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
# (iptables mode) and CoreDNS, all built from the Go module proxy by build.sh into
# build/k8s/bin; containerd, runc and the CNI plugins (bridge, host-local, portmap, firewall)
# from Debian's packages. Docker's own containerd keeps running untouched: ours has its own
# socket, root, state and config under $STATE and $RUN. Every process started is recorded in
# $RUN/*.pid and only those are stopped by `down`.
#
# --control-plane-only (or K8S_CONTROL_PLANE_ONLY=1): etcd + apiserver + controller-manager +
# scheduler only; enough for `helm install --dry-run=server`, `kubectl apply --dry-run=server`
# and server-side validation, without containerd, kubelet or root-only networking.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/deploy/k8s/versions.sh"
OUT=$ROOT/build/k8s
BIN=$OUT/bin
PKI=$OUT/pki                       # the CA and certificates, kept: they cost nothing to keep
# etcd data, containerd root, kubelet root, volumes; sockets and pid files. Not root (control
# plane only): both under build/k8s.
if [ "$(id -u)" = 0 ]; then
  STATE=${K8S_STATE:-/var/lib/postern-k8s}; RUN=${K8S_RUN:-/run/postern-k8s}
else
  STATE=${K8S_STATE:-$OUT/state}; RUN=${K8S_RUN:-$OUT/run}
fi
LOGS=$OUT/logs
NODE=${K8S_NODE:-postern-node}
# The node's address: the first global IPv4 address (eth0 here); the apiserver advertises it
# so that pods reach it through the "kubernetes" Service.
NODE_IP=${K8S_NODE_IP:-$(ip -4 -o addr show scope global | awk '$2 != "docker0" && $2 !~ /^(cni|veth|br-)/ {sub("/.*","",$4); print $4; exit}')}
POD_CIDR=10.244.0.0/16
NODE_POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
SVC_API_IP=10.96.0.1               # first address of SVC_CIDR: the "kubernetes" Service
DNS_IP=10.96.0.10
ETCD_PORT=23790                    # not 2379: other tests on this machine may run an etcd
ETCD_PEER_PORT=23800
API_PORT=6443
CTRD_SOCK=$RUN/containerd.sock
KCFG=$OUT/kubeconfig               # admin kubeconfig (system:masters)
export PATH=$BIN:/usr/local/go/bin:/usr/sbin:/sbin:$PATH

say() { printf '%s cluster: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

control_plane_only=${K8S_CONTROL_PLANE_ONLY:-0}

# ---------------------------------------------------------------------------------------------
# process handling: start NAME CMD... runs CMD in the background, logs to $LOGS/NAME.log and
# records its pid in $RUN/NAME.pid. stop NAME kills only that pid (and waits for it).
running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
start() {
  local name=$1; shift
  if running "$name"; then say "$name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  mkdir -p "$LOGS" "$RUN"
  # setsid: own session, so the caller's terminal signals don't reach it; nohup for the same.
  setsid nohup "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  say "started $name (pid $!)"
}
stop() {
  local name=$1 pid i
  [ -f "$RUN/$name.pid" ] || return 0
  pid=$(cat "$RUN/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { kill -9 "$pid" 2>/dev/null || true; }
    say "stopped $name (pid $pid)"
  fi
  rm -f "$RUN/$name.pid"
}
# wait_for WHAT SECONDS CMD...: retry CMD until it succeeds
wait_for() {
  local what=$1 secs=$2 i; shift 2
  for i in $(seq 1 $((secs * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what not ready after ${secs}s (logs: $LOGS)"
}

# ---------------------------------------------------------------------------------------------
# PKI: one CA signs everything; client certs carry the identity (CN = user, O = group) that
# the apiserver's Node and RBAC authorizers expect.
pki() {
  mkdir -p "$PKI"
  if [ -f "$PKI/.ok" ] && [ "$(cat "$PKI/.ok")" = "$NODE_IP" ]; then return; fi
  say "generating a CA and certificates in $PKI"
  rm -f "$PKI"/*
  local o="-nodes -newkey rsa:2048 -sha256"
  openssl req -x509 $o -days 3650 -subj "/CN=postern-k8s-ca" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  # service-account token signing key
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  cert() {  # cert NAME SUBJECT [SANS]
    local name=$1 subj=$2 sans=${3:-} ext
    ext=$(mktemp)
    {
      echo "basicConstraints=CA:FALSE"
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
      if [ -n "$sans" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"
      else echo "extendedKeyUsage=clientAuth"; fi
    } > "$ext"
    openssl req -new $o -subj "$subj" -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
      -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$ext" "$PKI/$name.csr"
  }
  cert apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$SVC_API_IP,IP:$NODE_IP"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert admin "/O=system:masters/CN=postern-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE"
  cert kubelet-server "/CN=$NODE" "DNS:$NODE,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
  cert kube-proxy "/CN=system:kube-proxy"
  for n in admin controller-manager scheduler kubelet kube-proxy; do
    kubeconfig "$n" > "$PKI/$n.kubeconfig"
  done
  cp "$PKI/admin.kubeconfig" "$KCFG"
  echo "$NODE_IP" > "$PKI/.ok"
}
kubeconfig() {  # kubeconfig NAME: a kubeconfig with NAME's client certificate, to the apiserver
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: postern
  cluster:
    certificate-authority: $PKI/ca.crt
    server: https://127.0.0.1:$API_PORT
users:
- name: $1
  user:
    client-certificate: $PKI/$1.crt
    client-key: $PKI/$1.key
contexts:
- name: postern
  context: {cluster: postern, user: $1}
current-context: postern
EOF
}

# ---------------------------------------------------------------------------------------------
control_plane() {
  mkdir -p "$STATE/etcd"
  start etcd "$BIN/etcd" --name postern --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "postern=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes=2147483648 --log-level warn
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port "$API_PORT" \
    --service-cluster-ip-range "$SVC_CIDR" --service-node-port-range 30000-32767 \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false --v=1
  wait_for kube-apiserver 90 curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
    --key "$PKI/admin.key" "https://127.0.0.1:$API_PORT/readyz"

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10257 \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials \
    --allocate-node-cidrs --cluster-cidr "$POD_CIDR" --service-cluster-ip-range "$SVC_CIDR" \
    --leader-elect=false --profiling=false --v=1
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig "$PKI/scheduler.kubeconfig" \
    --authorization-kubeconfig "$PKI/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false --profiling=false --v=1
}

# ---------------------------------------------------------------------------------------------
# containerd: a second instance, beside Docker's, with its own everything.
# Debian's packages for the node; installed when missing (a new machine has none of them).
DEB_PKGS="containerd runc containernetworking-plugins conntrack iptables"
node_packages() {
  command -v containerd >/dev/null && command -v runc >/dev/null && [ -x /usr/lib/cni/bridge ] \
    && command -v conntrack >/dev/null && return 0
  say "installing Debian packages: $DEB_PKGS"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $DEB_PKGS; } >"$LOGS/apt.log" 2>&1 \
    || die "apt-get install $DEB_PKGS failed (see $LOGS/apt.log)"
}

containerd_up() {
  mkdir -p "$LOGS"
  node_packages
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$RUN"
  cat > "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$RUN/containerd-ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  enable_unprivileged_ports = true
  # This machine's root lacks CAP_SYS_RESOURCE, so a negative oom_score_adj (-998 for every
  # pod sandbox) makes runc fail ("can't get final child's PID from pipe"): keep scores at
  # or above containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  # The pod network: one Linux bridge, addresses from this node's pod range, NAT to the
  # outside, hairpin so a pod can reach itself through its Service, portmap for hostPort,
  # firewall to accept the pods' forwarded traffic (Docker sets the FORWARD policy to DROP).
  cat > "$STATE/cni/net.d/10-postern.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "postern",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall", "backend": "iptables"}
  ]
}
EOF
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for containerd 30 ctr --address "$CTRD_SOCK" version
  import_tar "$OUT/images/pause.tar"
  [ -f "$OUT/images/coredns.tar" ] && import_tar "$OUT/images/coredns.tar"
  return 0
}
import_tar() {
  ctr --address "$CTRD_SOCK" -n k8s.io images import --no-unpack=false "$1" >/dev/null \
    || ctr --address "$CTRD_SOCK" -n k8s.io images import "$1" >/dev/null
}

node_prereqs() {
  # kube-proxy and the bridge need forwarding and bridged traffic to pass iptables.
  modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # swap: the kubelet is told not to fail on it (failSwapOn: false), nothing is turned off.
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || die "no memory cgroup"
}

kubelet_up() {
  mkdir -p "$STATE/kubelet"
  local cgv=v1; [ -f /sys/fs/cgroup/cgroup.controllers ] && cgv=v2
  cat > "$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://$CTRD_SOCK
cgroupDriver: cgroupfs
# cgroup $cgv here; Kubernetes 1.34 still runs on v1 unless told to refuse it
failCgroupV1: false
failSwapOn: false
memorySwap: {swapBehavior: NoSwap}
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: /etc/resolv.conf
podCIDR: $NODE_POD_CIDR
maxPods: 110
serializeImagePulls: false
# the work tree's disk is shared with image builds: don't evict pods over disk pressure
evictionHard: {memory.available: "200Mi", nodefs.available: "2%", imagefs.available: "2%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
staticPodPath: ""
protectKernelDefaults: false
localStorageCapacityIsolation: true
podLogsDir: $STATE/pod-logs
EOF
  start kubelet "$BIN/kubelet" --config "$STATE/kubelet/config.yaml" \
    --kubeconfig "$PKI/kubelet.kubeconfig" --root-dir "$STATE/kubelet/root" \
    --hostname-override "$NODE" --node-ip "$NODE_IP" --v=1
  wait_for "node $NODE registered" 60 curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
    --key "$PKI/admin.key" "https://127.0.0.1:$API_PORT/api/v1/nodes/$NODE"
}

kube_proxy_up() {
  mkdir -p "$STATE/kube-proxy"
  cat > "$STATE/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $PKI/kube-proxy.kubeconfig}
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: 0.0.0.0
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# don't try to resize the host's conntrack table: keep the machine's settings
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: true, masqueradeAll: false}
EOF
  start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy/config.yaml" --v=1
}

# Cluster add-ons: CoreDNS (image built from the module proxy) and storage: statically
# made hostPath PersistentVolumes (no provisioner in a bare cluster), claimed by the chart's
# PVCs that name no class.
addons() {
  local k="$BIN/kubectl --kubeconfig $KCFG"
  $k apply -f "$ROOT/deploy/k8s/coredns.yaml" >/dev/null
  local i n=${K8S_PVS:-12}
  for i in $(seq 1 "$n"); do
    mkdir -p "$STATE/pv/pv$i"; chmod 0777 "$STATE/pv/pv$i"
    cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: postern-local-pv$i, labels: {postern-k8s/local: "true"}}
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: $STATE/pv/pv$i, type: DirectoryOrCreate}
EOF
  done | $k apply -f - >/dev/null
}

load_image() {  # docker save IMAGE | ctr import into the cluster's containerd (k8s.io namespace)
  local img
  for img in "$@"; do
    say "loading $img from docker"
    docker save "$img" | ctr --address "$CTRD_SOCK" -n k8s.io images import - >/dev/null
  done
}

# ---------------------------------------------------------------------------------------------
up() {
  local t0; t0=$(date +%s)
  [ -n "$NODE_IP" ] || die "no global IPv4 address to give the node"
  "$ROOT/deploy/k8s/build.sh" all
  pki
  control_plane
  if [ "$control_plane_only" = 1 ]; then
    say "control plane up in $(( $(date +%s) - t0 ))s; KUBECONFIG=$KCFG"
    echo "up-control-plane $(( $(date +%s) - t0 ))s $(date -u +%FT%TZ)" >> "$LOGS/up-times"
    return
  fi
  [ "$(id -u)" = 0 ] || die "the node part (containerd, kubelet, iptables) needs root; try --control-plane-only"
  node_prereqs
  containerd_up
  kube_proxy_up
  kubelet_up
  addons
  wait_for "node Ready" 120 sh -c "$BIN/kubectl --kubeconfig $KCFG get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  wait_for "CoreDNS Ready" 120 "$BIN/kubectl" --kubeconfig "$KCFG" -n kube-system wait --for=condition=Available deploy/coredns --timeout=2s
  say "cluster up in $(( $(date +%s) - t0 ))s; export KUBECONFIG=$KCFG"
  echo "up $(( $(date +%s) - t0 ))s $(date -u +%FT%TZ)" >> "$LOGS/up-times"
}

down() {
  local k="$BIN/kubectl --kubeconfig $KCFG" i
  # Pods first, while the kubelet still runs, so that it tears down their containers and the
  # CNI plugins release their addresses, veths and iptables rules. The controllers and the
  # scheduler stop first so that nothing is recreated meanwhile.
  stop kube-controller-manager; stop kube-scheduler
  if running kubelet && running kube-apiserver; then
    $k delete pods -A --all --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    for i in $(seq 1 60); do
      [ -z "$(ctr --address "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  stop kube-proxy; stop kubelet; stop kube-apiserver; stop etcd
  if running containerd; then
    # anything left: kill it through our containerd only
    local c
    for c in $(ctr --address "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CTRD_SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    done
    sleep 1
    for c in $(ctr --address "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CTRD_SOCK" -n k8s.io tasks delete -f "$c" >/dev/null 2>&1 || true
    done
  fi
  stop containerd
  # shims outlive containerd by design; ours are the ones whose -address is our socket
  local p
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" 2>/dev/null || true); do kill -9 "$p" 2>/dev/null || true; done
  # mounts under our state dir (pod volumes, overlay snapshots, netns)
  grep -o " $STATE[^ ]*\| $RUN[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  # iptables rules made by kube-proxy and the CNI plugins, and the bridge
  if [ "${K8S_KEEP_IPTABLES:-0}" != 1 ] && [ -x "$BIN/kube-proxy" ] && [ "$(id -u)" = 0 ]; then
    "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    # the bridge plugin's masquerade chains (CNI-*) in the nat table: remove the jumps to
    # them from POSTROUTING, then the chains; nothing else in the table is touched (Docker's)
    iptables -t nat -S POSTROUTING 2>/dev/null | grep -- "-j CNI-" | sed 's/^-A /-D /' \
      | while read -r rule; do eval "iptables -t nat $rule" 2>/dev/null || true; done || true
    iptables -t filter -S FORWARD 2>/dev/null | grep -- "-j CNI-" | sed 's/^-A /-D /' \
      | while read -r rule; do eval "iptables -t filter $rule" 2>/dev/null || true; done || true
    # the kubelet's own chains (kube-proxy --cleanup leaves them)
    iptables -t filter -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
    iptables -t filter -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
    local t ch
    for t in mangle nat filter; do
      for ch in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        iptables -t $t -F $ch 2>/dev/null || true; iptables -t $t -X $ch 2>/dev/null || true
      done
    done
    for t in nat filter; do
      iptables -t $t -S 2>/dev/null | sed -n 's/^-N \(CNI-.*\)/\1/p' | while read -r ch; do
        iptables -t $t -F "$ch" 2>/dev/null || true
      done || true
      iptables -t $t -S 2>/dev/null | sed -n 's/^-N \(CNI-.*\)/\1/p' | while read -r ch; do
        iptables -t $t -X "$ch" 2>/dev/null || true
      done || true
    done
  fi
  ip link del cni0 2>/dev/null || true
  # the kubelet's (now empty) cgroups, cgroup v1 or v2 (cgroupfs driver: "kubepods")
  find /sys/fs/cgroup -maxdepth 2 -type d -name kubepods 2>/dev/null | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done || true
  rm -rf "$STATE" "$RUN"
  say "down"
}

status() {
  local n rc=0
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if running "$n"; then echo "$n: running (pid $(cat "$RUN/$n.pid"))"; else echo "$n: stopped"; rc=1; fi
  done
  if running kube-apiserver; then
    "$BIN/kubectl" --kubeconfig "$KCFG" get nodes -o wide 2>/dev/null || true
    "$BIN/kubectl" --kubeconfig "$KCFG" get pods -A -o wide 2>/dev/null || true
  fi
  return $rc
}

case ${1:-} in
  up) shift; [ "${1:-}" = --control-plane-only ] && control_plane_only=1; up ;;
  down) down ;;
  status) status ;;
  load-image) shift; load_image "$@" ;;
  step) shift; "$@" ;;   # for debugging: run one function, e.g. `step containerd_up`
  env) echo "export KUBECONFIG=$KCFG PATH=$BIN:\$PATH" ;;
  *) echo "usage: $0 up [--control-plane-only] | down | status | load-image IMAGE... | env" >&2; exit 2 ;;
esac
