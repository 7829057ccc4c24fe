#!/usr/bin/env bash
# Build (once) and cache every binary and image the local test cluster needs, under build/k8s/.
#
#   deploy/k8s/build.sh [all|kubernetes|etcd|coredns|helm|pause]
#
# Sources come only from the Go module proxy (Kubernetes, etcd, CoreDNS, helm) and the
# Kubernetes module's own build/pause/linux/pause.c (compiled with gcc); containerd, runc
# and the CNI plugins come from Debian's packages (see cluster.sh). A piece whose binary is
# already in build/k8s/bin with the expected version stamp is skipped, so a second run is
# a few file checks.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/deploy/k8s/versions.sh"
OUT=$ROOT/build/k8s
BIN=$OUT/bin
SRC=$OUT/src
LOG=$OUT/log
mkdir -p "$BIN" "$SRC" "$LOG" "$OUT/images"

export PATH=/usr/local/go/bin:$PATH
export GOFLAGS=-mod=mod            # let go add the go.sum lines the rewritten go.mod needs
export CGO_ENABLED=0               # static binaries, as the upstream release builds them
NICE="nice -n 10"                  # two cores are shared with other work: stay polite

say() { printf '%s build: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# stamp NAME VERSION: true when build/k8s/bin/.NAME.stamp says VERSION was built.
stamped() { [ -f "$BIN/.$1.stamp" ] && [ "$(cat "$BIN/.$1.stamp")" = "$2" ]; }
stamp()   { echo "$2" > "$BIN/.$1.stamp"; }

timed() {  # timed NAME cmd...: run, record seconds in build/k8s/log/times
  local name=$1 t0 t1; shift
  t0=$(date +%s)
  "$@"
  t1=$(date +%s)
  echo "$name $((t1 - t0))s $(date -u +%FT%TZ)" >> "$LOG/times"
  say "$name took $((t1 - t0))s"
}

# --- Kubernetes --------------------------------------------------------------------------
# `go install k8s.io/kubernetes/cmd/...@vX` is refused: the module's go.mod replaces every
# k8s.io/* staging module with ./staging/src/..., which the module zip does not contain.
# So: copy the module to build/k8s/src, point each staging replace at the published
# k8s.io/* module of the same release (v1.X.Y -> v0.X.Y), drop the vendor dir that no
# longer matches, and build the commands from there.
k8s_prepare() {
  local dir=$SRC/kubernetes-$K8S_VERSION
  if [ -f "$dir/.prepared" ]; then echo "$dir"; return; fi
  say "fetching k8s.io/kubernetes@$K8S_VERSION from the module proxy"
  local moddir
  moddir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  rm -rf "$dir.tmp"; cp -a "$moddir" "$dir.tmp"; chmod -R u+w "$dir.tmp"
  rm -rf "$dir.tmp/vendor" "$dir.tmp/go.work" "$dir.tmp/go.work.sum"
  local args=() m
  for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$dir.tmp/go.mod"); do
    args+=("-replace=$m=$m@$K8S_STAGING")
  done
  (cd "$dir.tmp" && go mod edit "${args[@]}")
  # sample-* and some others may not be published; they are not used by the commands we build,
  # so a replace to a missing version only matters if a build touches it.
  mv "$dir.tmp" "$dir"; touch "$dir/.prepared"
  echo "$dir"
}

k8s_build() {
  local want="$K8S_VERSION ${K8S_CMDS[*]}"
  if stamped kubernetes "$want"; then say "kubernetes $K8S_VERSION cached"; return; fi
  local dir; dir=$(k8s_prepare)
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local pkgs=() c ld=""
  for c in "${K8S_CMDS[@]}"; do pkgs+=("./cmd/$c"); done
  # The version the servers report: helm checks the chart's kubeVersion against it.
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld="$ld -X $p.gitTreeState=clean -X $p.gitCommit=postern-local -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  say "building ${K8S_CMDS[*]} (go build, 2 cores: the cold build takes a while)"
  (cd "$dir" && timed kubernetes $NICE go build -trimpath -ldflags "-s -w $ld" -o "$BIN/" "${pkgs[@]}") \
    > "$LOG/kubernetes.log" 2>&1 || { tail -30 "$LOG/kubernetes.log" >&2; return 1; }
  stamp kubernetes "$want"
}

# --- etcd --------------------------------------------------------------------------------
etcd_build() {
  if stamped etcd "$ETCD_VERSION"; then say "etcd $ETCD_VERSION cached"; return; fi
  say "building etcd $ETCD_VERSION"
  # go.etcd.io/etcd/server/v3 is the etcd command, but its go.mod replaces the sibling
  # modules with ../api etc., so `go install ...@v` is refused. A replace only applies in the
  # main module: a throwaway module that requires it builds it with the published siblings.
  local dir=$SRC/etcd-$ETCD_VERSION
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init postern.local/etcd-build >/dev/null 2>&1 \
     && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
     && timed etcd $NICE go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3) \
    > "$LOG/etcd.log" 2>&1 || { tail -30 "$LOG/etcd.log" >&2; return 1; }
  stamp etcd "$ETCD_VERSION"
}

# --- CoreDNS (cluster DNS for the chart's service names) ---------------------------------
coredns_build() {
  if [ -f "$OUT/images/coredns.tar" ] && stamped coredns "$COREDNS_VERSION"; then say "coredns $COREDNS_VERSION cached"; return; fi
  say "building coredns $COREDNS_VERSION (only the plugins the cluster's Corefile uses)"
  # `go install github.com/coredns/coredns@v` works but compiles every plugin (cloud DNS
  # providers, tracing agents: several times the work). CoreDNS picks its plugins by import
  # and a directive list, so a small main with the few this cluster's Corefile names
  # (deploy/k8s/coredns.yaml) is all it takes; the order is the one of CoreDNS' plugin.cfg.
  local dir=$SRC/coredns-$COREDNS_VERSION
  rm -rf "$dir"; mkdir -p "$dir"
  cat > "$dir/main.go" <<'GO'
// CoreDNS with the plugins the local test cluster uses (deploy/k8s/build.sh writes this).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{"reload", "ready", "health", "errors", "log",
		"loadbalance", "cache", "kubernetes", "forward"}
}

func main() { coremain.Run() }
GO
  (cd "$dir" && go mod init postern.local/coredns-build >/dev/null 2>&1 \
     && go get "github.com/coredns/coredns@$COREDNS_VERSION" && go mod tidy \
     && timed coredns $NICE go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" .) \
    > "$LOG/coredns.log" 2>&1 || { tail -30 "$LOG/coredns.log" >&2; return 1; }
  # the image: the static binary alone, run as an unprivileged user (the pod may bind :53
  # because containerd is set to allow unprivileged ports)
  local work=$OUT/images/coredns.d; rm -rf "$work"; mkdir -p "$work/rootfs"
  cp "$BIN/coredns" "$work/rootfs/coredns"
  python3 "$ROOT/deploy/k8s/oci_image.py" --name "$COREDNS_IMAGE" --rootfs "$work/rootfs" \
    --entrypoint /coredns --user 65532:65532 --out "$OUT/images/coredns.tar"
  rm -rf "$work"
  stamp coredns "$COREDNS_VERSION"
}

# --- helm ----------------------------------------------------------------------------------
helm_build() {
  # Reuse a helm 3 the project already has (tests/deploy installs build/tools/helm).
  local h
  for h in "${HELM:-}" "$ROOT/build/tools/helm" "$(command -v helm || true)"; do
    if [ -n "$h" ] && [ -x "$h" ] && "$h" version --short 2>/dev/null | grep -q '^v3\.'; then
      ln -sf "$h" "$BIN/helm"; say "helm: using $h"; return
    fi
  done
  if stamped helm "$HELM_VERSION"; then say "helm $HELM_VERSION cached"; return; fi
  say "building helm $HELM_VERSION"
  rm -f "$BIN/helm"
  timed helm env GOBIN="$BIN" $NICE go install -trimpath -ldflags "-s -w" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" > "$LOG/helm.log" 2>&1 \
    || { tail -30 "$LOG/helm.log" >&2; return 1; }
  stamp helm "$HELM_VERSION"
}

# --- pause image ------------------------------------------------------------------------------
# The sandbox ("pause") container of every pod: Kubernetes' own pause.c, linked statically,
# packed as a one-file OCI image tar that `ctr images import` takes.
pause_build() {
  local tar=$OUT/images/pause.tar
  if [ -f "$tar" ] && stamped pause "$PAUSE_IMAGE"; then say "pause image cached"; return; fi
  local dir; dir=$(k8s_prepare)
  local work=$OUT/images/pause.d; rm -rf "$work"; mkdir -p "$work/rootfs"
  gcc -Os -static -Wall -Werror -DVERSION="\"postern-$K8S_VERSION\"" \
    -o "$work/rootfs/pause" "$dir/build/pause/linux/pause.c"
  strip "$work/rootfs/pause"
  python3 "$ROOT/deploy/k8s/oci_image.py" --name "$PAUSE_IMAGE" --rootfs "$work/rootfs" \
    --entrypoint /pause --out "$tar"
  rm -rf "$work"
  stamp pause "$PAUSE_IMAGE"
}

what=${1:-all}
case $what in
  all) k8s_build; etcd_build; helm_build; coredns_build; pause_build ;;
  kubernetes) k8s_build ;;
  etcd) etcd_build ;;
  coredns) coredns_build ;;
  helm) helm_build ;;
  pause) pause_build ;;
  *) echo "usage: $0 [all|kubernetes|etcd|coredns|helm|pause]" >&2; exit 2 ;;
esac
