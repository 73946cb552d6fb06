#!/usr/bin/env bash
# Host packages the local cluster needs, on Debian (bookworm or newer), as root.
# Go must be on PATH already (the control plane is built with it).
set -euo pipefail

# docker-registry and apache2-utils (htpasswd): the local cluster's checkpoint registry;
# gcc and libc6-dev: the benchmark's workload (memhog), a static C program.
need=(debootstrap iproute2 util-linux procps docker-registry apache2-utils gcc libc6-dev)
missing=()
for pkg in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "Go is required to build kube-apiserver, etcd and helm" >&2; exit 1; }
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if ((go_minor < 24)); then
  echo "Go 1.24 or newer is required (found $(go env GOVERSION))" >&2
  exit 1
fi
