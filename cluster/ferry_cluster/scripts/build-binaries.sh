#!/usr/bin/env bash
# Builds the control-plane binaries the local cluster needs from the Go module
# proxy (no registry, no prebuilt downloads): kube-apiserver, kube-scheduler,
# kube-controller-manager, kubelet, kube-proxy and kubectl from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, helm from helm.sh/helm/v3.
# Results are cached outside the repo, keyed by version: a second run builds nothing.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
CACHE="${FERRY_CACHE:-/var/cache/ferry}"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-mod=mod GOTOOLCHAIN=local
export CGO_ENABLED=0

log() { printf '[build-binaries] %s\n' "$*" >&2; }

build_k8s() {
  local out="$CACHE/kubernetes-$K8S_VERSION"
  local b missing=0
  for b in "${K8S_BINARIES[@]}"; do [[ -x "$out/$b" ]] || missing=1; done
  ((missing)) || return 0
  local staging="v0.${K8S_VERSION#v1.}"
  local work; work="$(mktemp -d)"
  log "kubernetes $K8S_VERSION (staging modules $staging) in $work"
  (
    cd "$work"
    go mod init ferry.local/k8sbuild >/dev/null 2>&1
    go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >mod.json
    gomod="$(python3 -c 'import json,sys;print(json.load(open("mod.json"))["GoMod"])')"
    # Upstream replaces each k8s.io/* staging module with a path under ./staging;
    # point every one at its published version instead.
    grep -E '=> \./staging/' "$gomod" | awk '{print $1}' | sort -u >staging.txt
    {
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo "replace ("
      while read -r m; do echo "  $m => $m $staging"; done <staging.txt
      echo ")"
    } >>go.mod
    cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    go mod tidy >/dev/null 2>&1 || go mod tidy
    local ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $p.gitTreeState=clean"
    done
    mkdir -p "$out.tmp"
    for b in "${K8S_BINARIES[@]}"; do
      go build -trimpath -ldflags "$ld" -o "$out.tmp/$b" "k8s.io/kubernetes/cmd/$b"
    done
  )
  rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
}

build_etcd() {
  local out="$CACHE/etcd-$ETCD_VERSION"
  [[ -x "$out/etcd" ]] && return 0
  local work; work="$(mktemp -d)"
  log "etcd $ETCD_VERSION in $work"
  (
    cd "$work"
    go mod init ferry.local/etcdbuild >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
}

build_helm() {
  local out="$CACHE/helm-$HELM_VERSION"
  [[ -x "$out/helm" ]] && return 0
  local work; work="$(mktemp -d)"
  log "helm $HELM_VERSION in $work"
  (
    cd "$work"
    go mod init ferry.local/helmbuild >/dev/null 2>&1
    go get "helm.sh/helm/v3@$HELM_VERSION" >/dev/null 2>&1
    printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' >tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
      -o "$out.tmp/helm" helm.sh/helm/v3/cmd/helm
  )
  rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$work"
}

mkdir -p "$CACHE/bin"
build_k8s
build_etcd
build_helm
for b in "${K8S_BINARIES[@]}"; do
  ln -sf "$CACHE/kubernetes-$K8S_VERSION/$b" "$CACHE/bin/$b"
done
ln -sf "$CACHE/etcd-$ETCD_VERSION/etcd" "$CACHE/bin/etcd"
ln -sf "$CACHE/helm-$HELM_VERSION/helm" "$CACHE/bin/helm"
log "binaries in $CACHE/bin"
