#!/bin/sh
# Makes test/fixtures/nebula/<case>/ with the REAL nebula-cert tools, so that Keyhole's codec and CLI are
# judged against certificates Keyhole did not make. Each case folder holds:
#   ca.crt ca.key ca.print.json host.pub host.key host.crt host.print.json host.verify.txt meta.txt
# (`print.json` is `nebula-cert print -json`; `host.verify.txt` is `ok` when `nebula-cert verify` accepts
# the host cert, else what it said). Every key made here is a throwaway test key.
#
# Needs nebula-cert 1.11 (.cache/nebula-1.11, see scripts/install-nebula.sh) and Debian's 1.6.1
# (/usr/bin/nebula-cert), and util-linux `script` for the encrypted case (nebula-cert only reads a
# passphrase from a terminal). Re-running replaces the case folders it makes; nothing else is touched.
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
out="$root/test/fixtures/nebula"
nc111=${KEYHOLE_NEBULA_CERT_111:-$root/.cache/nebula-1.11/usr/bin/nebula-cert}
nc16=${KEYHOLE_NEBULA_CERT_16:-/usr/bin/nebula-cert}
passphrase=correct-horse

say() { printf 'make-fixtures: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

"$nc111" -version 2>/dev/null | grep -q '1\.11\.' || die "nebula-cert 1.11 not found at $nc111; run: sh scripts/install-nebula.sh"
"$nc16" -version 2>/dev/null | grep -q '1\.6\.' || die "nebula-cert 1.6.1 not found at $nc16; run: sh scripts/install-nebula.sh"
command -v script >/dev/null 2>&1 || die "util-linux 'script' is needed to type the passphrase into nebula-cert"

# Runs a command in $dir, logs it to meta.txt under a label, fails loudly.
# usage: step <label> <command...>
step() {
  label=$1
  shift
  printf '%s:' "$label" >>"$dir/meta.txt"
  for a in "$@"; do
    case "$a" in
      "$nc111") printf ' nebula-cert-1.11' ;;
      "$nc16") printf ' nebula-cert-1.6.1' ;;
      *' '*) printf " '%s'" "$a" ;;
      *) printf ' %s' "$a" ;;
    esac
  done >>"$dir/meta.txt"
  printf '\n' >>"$dir/meta.txt"
  (cd "$dir" && "$@") || die "$label failed in $dir"
}

# Prints both certs as JSON and records whether the tool that made them accepts the host cert.
# usage: finish <nebula-cert> (1.6.1 has no -json: 1.11 prints every case, it reads v1 too)
finish() {
  tool=$1
  (cd "$dir" && "$nc111" print -json -path ca.crt >ca.print.json)
  (cd "$dir" && "$nc111" print -json -path host.crt >host.print.json)
  if verdict=$(cd "$dir" && "$tool" verify -ca ca.crt -crt host.crt 2>&1); then
    printf 'ok\n' >"$dir/host.verify.txt"
  else
    printf '%s\n' "$verdict" >"$dir/host.verify.txt"
    die "$tool verify refused its own host cert in $dir: $verdict"
  fi
}

start_case() {
  dir="$out/$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  printf 'generator: %s\n' "$("$2" -version)" >"$dir/meta.txt"
  say "$1"
}

# case <name> <version> <curve> <ca flags...> -- <sign flags...>
nebula_case() {
  name=$1 version=$2 curve=$3
  shift 3
  start_case "$name" "$nc111"
  ca_flags=""
  while [ "$1" != "--" ]; do ca_flags="$ca_flags $1"; shift; done
  shift
  # shellcheck disable=SC2086
  step ca "$nc111" ca -name "Fixture CA $name" -version "$version" -curve "$curve" -duration 87600h $ca_flags
  step keygen "$nc111" keygen -curve "$curve" -out-key host.key -out-pub host.pub
  step sign "$nc111" sign -name "host-$name" -version "$version" -in-pub host.pub -out-crt host.crt -duration 43800h "$@"
  finish "$nc111"
}

nebula_case v1-25519 1 25519 -groups servers,laptops,ops -networks 10.42.0.0/16 -- \
  -networks 10.42.1.7/16 -groups servers,ops -unsafe-networks 10.42.128.0/24
nebula_case v1-p256 1 P256 -networks 10.43.0.0/16 -- \
  -networks 10.43.0.9/16 -groups servers
nebula_case v2-25519 2 25519 -groups servers,db -networks 10.44.0.0/16,fd00:44::/64 -unsafe-networks 192.0.2.0/24,2001:db8:44::/48 -- \
  -networks 10.44.3.4/16,fd00:44::34/64 -groups db -unsafe-networks 192.0.2.0/24,2001:db8:44:1::/64
nebula_case v2-p256 2 P256 -- \
  -networks 10.45.0.5/24 -groups a,b,c

# Debian 12's nebula-cert 1.6.1: v1, Curve25519, the pre-1.7 flag names (-ips, -subnets, -ip).
start_case v1-25519-nebula-1.6 "$nc16"
step ca "$nc16" ca -name "Fixture CA v1-25519-nebula-1.6" -duration 87600h -groups servers -ips 10.46.0.0/16
step keygen "$nc16" keygen -out-key host.key -out-pub host.pub
step sign "$nc16" sign -name host-v1-25519-nebula-1.6 -ip 10.46.0.2/16 -groups servers -subnets 10.46.200.0/24 \
  -in-pub host.pub -out-crt host.crt -duration 43800h
finish "$nc16"

# A CA key encrypted with a passphrase typed on nebula-cert's terminal (small Argon2id parameters so
# tests stay fast), and a host cert signed with it (the passphrase given through NEBULA_CA_PASSPHRASE).
start_case encrypted-ca-25519 "$nc111"
printf 'passphrase: %s\n' "$passphrase" >>"$dir/meta.txt"
printf 'ca: nebula-cert-1.11 ca -name "Fixture CA encrypted-ca-25519" -version 2 -curve 25519 -duration 87600h -networks 10.47.0.0/16 -encrypt -argon-memory 1024 -argon-iterations 2 -argon-parallelism 1 (passphrase typed on a terminal)\n' >>"$dir/meta.txt"
(cd "$dir" && printf '%s\n' "$passphrase" | script -qec \
  "'$nc111' ca -name 'Fixture CA encrypted-ca-25519' -version 2 -curve 25519 -duration 87600h -networks 10.47.0.0/16 -encrypt -argon-memory 1024 -argon-iterations 2 -argon-parallelism 1" \
  /dev/null >/dev/null) || die "encrypted ca failed"
grep -q 'ENCRYPTED PRIVATE KEY' "$dir/ca.key" || die "ca.key in $dir is not encrypted"
step keygen "$nc111" keygen -curve 25519 -out-key host.key -out-pub host.pub
export NEBULA_CA_PASSPHRASE="$passphrase"
step sign "$nc111" sign -name host-encrypted-ca-25519 -networks 10.47.0.3/16 -in-pub host.pub -out-crt host.crt -duration 43800h
unset NEBULA_CA_PASSPHRASE
finish "$nc111"

cat >"$out/README.md" <<'EOF'
# Nebula certificate fixtures

Made by `sh scripts/make-fixtures.sh` with the real `nebula-cert` tools: Nebula 1.11.0 (Debian unstable's
package) and 1.6.1 (Debian 12's). Each folder's `meta.txt` names the generator version and the exact
commands. **Every key in these folders is a throwaway test key, published on purpose; never trust any
of these CAs anywhere.**

| folder | format | curve | notes |
|---|---|---|---|
| v1-25519 | v1 (protobuf) | CURVE25519 | CA constrained to groups and 10.42.0.0/16; host with groups and an unsafe network |
| v1-p256 | v1 | P256 | CA constrained to 10.43.0.0/16 |
| v2-25519 | v2 (ASN.1) | CURVE25519 | IPv4 + IPv6 networks; CA constraints on groups, networks and unsafe networks in both families |
| v2-p256 | v2 | P256 | no CA constraints, three groups |
| v1-25519-nebula-1.6 | v1 | CURVE25519 | made by nebula-cert 1.6.1 (what older fleets run), old flag names |
| encrypted-ca-25519 | v2 | CURVE25519 | CA key encrypted with passphrase `correct-horse` (Argon2id: 1024 KiB, 2 iterations, parallelism 1); host signed with it |

Per folder: `ca.crt`, `ca.key`, `host.pub` and `host.key` (from `nebula-cert keygen`), `host.crt`,
`ca.print.json` and `host.print.json` (`nebula-cert print -json` from 1.11), `host.verify.txt` (`ok` when
the generating `nebula-cert verify` accepted the host cert).

Certificates are valid for ten (CA) and five (host) years from the day they were made. Re-run the
script to replace them.
EOF
say "done: $out"
