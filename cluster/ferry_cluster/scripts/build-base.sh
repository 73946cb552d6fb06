#!/usr/bin/env bash
# A plain Debian trixie root (debootstrap minbase) as a tarball: the local base
# image the project's Containerfiles build FROM when no registry is reachable.
# Cached outside the repo, keyed by suite and this script's revision.
set -euo pipefail

CACHE="${FERRY_CACHE:-/var/cache/ferry}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=trixie
KEY="$(printf '%s\n' "$SUITE" minbase rev1 | sha256sum | cut -c1-12)"
OUT="$CACHE/base-$SUITE-$KEY.tar"

if [[ -f "$OUT" ]]; then
  echo "$OUT"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing" >&2; exit 1; }
TMP="$(mktemp -d "$CACHE/base-$SUITE.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
debootstrap --variant=minbase "$SUITE" "$TMP/root" "$MIRROR" >"$CACHE/debootstrap-base-$KEY.log" 2>&1 ||
  { tail -20 "$CACHE/debootstrap-base-$KEY.log" >&2; exit 1; }
rm -rf "$TMP/root/var/lib/apt/lists/"* "$TMP/root/var/cache/apt/archives/"*.deb
tar --numeric-owner -C "$TMP/root" -cf "$OUT.partial" .
mv "$OUT.partial" "$OUT"
echo "$OUT"
