#!/bin/sh
# Installs the two Nebula releases the tests judge certificates with:
#   - Debian 12's own `nebula` package (1.6.1: v1 certificates, Curve25519) into /usr/bin
#   - nebula 1.11.0 from Debian's unstable suite, unpacked (not installed) into .cache/nebula-1.11
# and the other Debian packages the tests run: iproute2 and iputils-ping (nebula in network
# namespaces), golang-cfssl (`cfssl serve`, the benchmark's online-CA comparison).
# Needs root for apt. Safe to re-run: it does nothing when both are already there.
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
cache="$root/.cache"
dest="$cache/nebula-1.11"

say() { printf 'install-nebula: %s\n' "$*" >&2; }

if ! command -v nebula-cert >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1 ||
  ! command -v ping >/dev/null 2>&1 || ! command -v cfssl >/dev/null 2>&1; then
  say "installing Debian's nebula (1.6.1), iproute2, iputils-ping, golang-cfssl"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nebula iproute2 iputils-ping golang-cfssl >/dev/null
fi

if [ -x "$dest/usr/bin/nebula-cert" ] && "$dest/usr/bin/nebula-cert" -version 2>/dev/null | grep -q '1\.11\.'; then
  say "nebula 1.11 already in $dest"
  exit 0
fi

say "fetching nebula 1.11 from Debian unstable into $dest"
work="$cache/apt-sid"
mkdir -p "$work/lists/partial" "$work/archives/partial" "$dest"
printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main\n' >"$work/sources.list"
apt_opts="-o Dir::Etc::sourcelist=$work/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::Lists=$work/lists -o Dir::Cache::archives=$work/archives -o APT::Get::List-Cleanup=0"
# shellcheck disable=SC2086
apt-get $apt_opts update -qq
(cd "$work" && rm -f nebula_*.deb && apt-get $apt_opts download -qq nebula)
deb=$(ls "$work"/nebula_*.deb | head -n 1)
dpkg -x "$deb" "$dest"
version=$("$dest/usr/bin/nebula-cert" -version)
case "$version" in
  *1.11.*) say "ok: $version in $dest/usr/bin" ;;
  *) say "expected nebula 1.11 from Debian unstable, got: $version"; exit 1 ;;
esac
