#!/bin/sh
# keyhole-enroll.sh: enrolls this host in a Keyhole network and keeps its Nebula certificate fresh.
#
# The host's private key is made here and never leaves this machine: only the public key is sent.
# Needs a POSIX sh, curl, awk, and either nebula-cert (NEBULA_CERT overrides the path) or openssl to
# make the key pair. JSON is read with a small awk parser below: a bare host has neither jq nor
# python nor node, while awk is in every POSIX base system (mawk, gawk and busybox awk all run it).
#
#   keyhole-enroll.sh --api URL --code CODE --dir DIR [--curve 25519|P256] [--listen-port N]
#                     [--tun-dev NAME] [--cacert FILE]
#   keyhole-enroll.sh --renew --dir DIR [--api URL] [--rekey] [--cacert FILE]
#   keyhole-enroll.sh --refresh --dir DIR [--api URL] [--cacert FILE]
#
# --refresh keeps the certificate and fetches the network's blocklist and CA bundle with the host
# token (after a CA rotation a host must trust the new CA before its peers renew onto it).
#
# The code may come from KEYHOLE_ENROLL_CODE instead of --code (keeps it out of `ps`).
# Files in DIR: host.key (0600), host.token (0600), host.crt, ca.crt, config.yml, blocklist,
# keyhole.conf (what --renew needs). Every file is replaced atomically (temporary file + mv).
# A renewal sends SIGHUP to the pid in DIR/nebula.pid when that file exists.
#
# Exit codes: 0 ok, 2 usage, 3 network or HTTP error (with the server's error code and trace id),
# 4 local error (key generation, files, missing tools). The code, the host token and the private key
# are never printed.
set -eu
umask 077
LC_ALL=C
export LC_ALL

prog=keyhole-enroll
EX_USAGE=2
EX_REMOTE=3
EX_LOCAL=4

say() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() {
  _code=$1
  shift
  say "$*"
  exit "$_code"
}

usage() {
  cat >&2 <<'EOF'
usage: keyhole-enroll.sh --api URL --code CODE --dir DIR [--curve 25519|P256]
                         [--listen-port N] [--tun-dev NAME] [--cacert FILE]
       keyhole-enroll.sh --renew --dir DIR [--api URL] [--rekey] [--cacert FILE]
       keyhole-enroll.sh --refresh --dir DIR [--api URL] [--cacert FILE]

  --api URL          Keyhole API base, e.g. https://keyhole.example.com (http only for loopback)
  --code CODE        one-time enrollment code (or set KEYHOLE_ENROLL_CODE)
  --dir DIR          where the key, certificates, token and config.yml go (created 0700)
  --curve C          key curve: 25519 (default) or P256; must match the network's CA
  --listen-port N    nebula listen port (default: what the server says)
  --tun-dev NAME     nebula tun device name (default nebula1)
  --cacert FILE      CA bundle to trust for the API's TLS certificate
  --renew            renew the certificate with the saved host token (rotates the token)
  --rekey            with --renew: make a new key pair instead of reusing the current one
  --refresh          keep the certificate; fetch the blocklist and CA bundle (host token), reload nebula
EOF
}

usage_error() {
  say "$*"
  usage
  exit "$EX_USAGE"
}

# ---- arguments ----

mode=enroll
api=
code=${KEYHOLE_ENROLL_CODE:-}
dir=
curve=
listen_port=
tun_dev=
cacert=
rekey=no

need_value() {
  [ "$2" -ge 2 ] || usage_error "$1 needs a value"
}

while [ $# -gt 0 ]; do
  case $1 in
  --api) need_value "$1" $# && api=$2 && shift 2 ;;
  --code) need_value "$1" $# && code=$2 && shift 2 ;;
  --dir) need_value "$1" $# && dir=$2 && shift 2 ;;
  --curve) need_value "$1" $# && curve=$2 && shift 2 ;;
  --listen-port) need_value "$1" $# && listen_port=$2 && shift 2 ;;
  --tun-dev) need_value "$1" $# && tun_dev=$2 && shift 2 ;;
  --cacert) need_value "$1" $# && cacert=$2 && shift 2 ;;
  --renew) mode=renew && shift ;;
  --refresh) mode=refresh && shift ;;
  --rekey) rekey=yes && shift ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) usage_error "unknown argument: $1" ;;
  esac
done

[ -n "$dir" ] || usage_error "--dir is required"
case $dir in
*'"'* | *'\'* | *[![:print:]]*) usage_error "--dir must not contain quotes, backslashes or control characters" ;;
esac
case $curve in
'' | 25519 | P256) ;;
*) usage_error "--curve must be 25519 or P256, not '$curve'" ;;
esac
case $listen_port in
'') ;;
*[!0-9]*) usage_error "--listen-port must be a number from 0 to 65535" ;;
*) [ "${#listen_port}" -le 5 ] && [ "$listen_port" -le 65535 ] || usage_error "--listen-port must be a number from 0 to 65535" ;;
esac
case $tun_dev in
'') ;;
*[!A-Za-z0-9_.-]*) usage_error "--tun-dev may use letters, digits, '.', '_' and '-' only" ;;
*) [ "${#tun_dev}" -le 15 ] || usage_error "--tun-dev is at most 15 characters (a Linux interface name)" ;;
esac
if [ -n "$cacert" ] && [ ! -r "$cacert" ]; then
  usage_error "--cacert $cacert is not a readable file"
fi
if [ "$mode" = enroll ]; then
  [ "$rekey" = no ] || usage_error "--rekey goes with --renew"
  [ -n "$api" ] || usage_error "--api is required to enroll"
  [ -n "$code" ] || usage_error "--code (or KEYHOLE_ENROLL_CODE) is required to enroll"
  case $code in
  *[!A-Za-z0-9._~+/=-]*) usage_error "the enrollment code has unexpected characters: paste it exactly as it was given" ;;
  esac
  [ "${#code}" -ge 8 ] && [ "${#code}" -le 128 ] || usage_error "the enrollment code must be 8 to 128 characters long"
fi

check_api() {
  case $api in
  https://*) ;;
  http://127.0.0.1 | http://127.0.0.1[:/]* | http://localhost | http://localhost[:/]* | http://\[::1\][:/]*) ;;
  http://*) say "warning: $api is plain http; the code and host token cross the network unencrypted" ;;
  *) usage_error "--api must start with https:// (or http:// for a local test stack)" ;;
  esac
  case $(printf '%s' "$api" | tr -d '[]') in
  *[!A-Za-z0-9._~:/%+=,@-]*) usage_error "--api is not a plain URL (no spaces, quotes or query): $api" ;;
  esac
  while :; do
    case $api in
    */) api=${api%/} ;;
    *) break ;;
    esac
  done
}

if [ "$mode" = enroll ]; then
  check_api
elif [ ! -d "$dir" ]; then
  die "$EX_LOCAL" "$dir does not exist: enroll this host first"
fi

command -v curl >/dev/null 2>&1 || die "$EX_LOCAL" "curl is required: install it (apt-get install curl)"
command -v awk >/dev/null 2>&1 || die "$EX_LOCAL" "awk is required"

# ---- the folder and a private scratch space inside it (same filesystem, so mv is atomic) ----

if [ ! -d "$dir" ]; then
  mkdir -p "$dir" 2>/dev/null || die "$EX_LOCAL" "cannot create $dir"
  chmod 700 "$dir" || die "$EX_LOCAL" "cannot chmod $dir"
fi
dir=$(CDPATH='' cd -- "$dir" && pwd) || die "$EX_LOCAL" "cannot enter $dir"
[ -w "$dir" ] || die "$EX_LOCAL" "$dir is not writable"
work="$dir/.keyhole-work.$$"
rm -rf "$work"
mkdir "$work" || die "$EX_LOCAL" "cannot create $work"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# install_file NAME MODE SOURCE: replace DIR/NAME atomically with SOURCE's content.
install_file() {
  _tmp="$dir/.$1.new.$$"
  cp "$3" "$_tmp" && chmod "$2" "$_tmp" && mv -f "$_tmp" "$dir/$1" || {
    rm -f "$_tmp"
    die "$EX_LOCAL" "cannot write $dir/$1"
  }
}

# ---- JSON ----

# json_flatten < JSON > FLAT: one line per value, "PATH<TAB>TYPE<TAB>RAW". PATH is jq-like
# (.config.lighthouses[0].ip, .config.staticHostMap["10.1.0.1"][0]); TYPE is s (string, RAW still
# JSON-escaped), n, b, z (null), k (one line per object key, RAW = the escaped key), o and a (the
# container itself, RAW = its size). Refuses anything that is not one well-formed JSON value.
json_flatten() {
  awk '
function fail(why) { printf "invalid JSON: %s at offset %d\n", why, p > "/dev/stderr"; failed = 1; exit 1 }
function ws(   c) {
  while (p <= n) { c = substr(s, p, 1); if (c == " " || c == "\t" || c == "\n" || c == "\r") p++; else break }
}
function str(   start, c, e) {
  p++; start = p
  for (;;) {
    c = substr(s, p, 1)
    if (c == "") fail("unterminated string")
    if (c == "\"") { p++; return substr(s, start, p - 1 - start) }
    if (c == "\\") {
      e = substr(s, p + 1, 1)
      if (e == "u") {
        if (substr(s, p + 2, 4) !~ /^[0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f]$/) fail("bad \\u escape")
        p += 6
      } else if (index("\"\\/bfnrt", e) > 0 && e != "") p += 2
      else fail("bad escape")
    } else if (c < " ") fail("control character in string")
    else p++
  }
}
function member(path, k) { return path ((k ~ /^[A-Za-z_][A-Za-z0-9_]*$/) ? "." k : "[\"" k "\"]") }
function value(path, depth,   c, k, i, rest) {
  if (depth > 32) fail("nested too deeply")
  ws(); c = substr(s, p, 1)
  if (c == "{") {
    p++; ws(); i = 0
    if (substr(s, p, 1) == "}") { p++; print path "\to\t0"; return }
    for (;;) {
      ws(); if (substr(s, p, 1) != "\"") fail("expected a key")
      k = str(); ws()
      if (substr(s, p, 1) != ":") fail("expected :")
      p++
      print path "\tk\t" k
      value(member(path, k), depth + 1); i++
      ws(); c = substr(s, p, 1); p++
      if (c == ",") continue
      if (c == "}") break
      fail("expected , or }")
    }
    print path "\to\t" i; return
  }
  if (c == "[") {
    p++; ws(); i = 0
    if (substr(s, p, 1) == "]") { p++; print path "\ta\t0"; return }
    for (;;) {
      value(path "[" i "]", depth + 1); i++
      ws(); c = substr(s, p, 1); p++
      if (c == ",") continue
      if (c == "]") break
      fail("expected , or ]")
    }
    print path "\ta\t" i; return
  }
  if (c == "\"") { k = str(); print path "\ts\t" k; return }
  if (substr(s, p, 4) == "true") { p += 4; print path "\tb\ttrue"; return }
  if (substr(s, p, 5) == "false") { p += 5; print path "\tb\tfalse"; return }
  if (substr(s, p, 4) == "null") { p += 4; print path "\tz\tnull"; return }
  rest = substr(s, p, 64)
  if (match(rest, /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/)) {
    print path "\tn\t" substr(rest, 1, RLENGTH); p += RLENGTH; return
  }
  fail("unexpected character")
}
{ s = (NR == 1) ? $0 : s "\n" $0 }
END {
  if (failed) exit 1
  n = length(s); p = 1
  value("", 0)
  ws(); if (p <= n) fail("trailing data")
}'
}

# The awk functions that turn a JSON-escaped string back into bytes (UTF-8 for \u escapes).
JSON_DECODE_AWK='
function hexval(h,   i, v) { v = 0; for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", tolower(substr(h, i, 1))) - 1; return v }
function utf8(cp) {
  if (cp < 1) return ""
  if (cp < 128) return sprintf("%c", cp)
  if (cp < 2048) return sprintf("%c%c", 192 + int(cp / 64), 128 + cp % 64)
  if (cp < 65536) return sprintf("%c%c%c", 224 + int(cp / 4096), 128 + int(cp / 64) % 64, 128 + cp % 64)
  return sprintf("%c%c%c%c", 240 + int(cp / 262144), 128 + int(cp / 4096) % 64, 128 + int(cp / 64) % 64, 128 + cp % 64)
}
function decode(v,   out, j, e, cp, lo) {
  out = ""
  for (;;) {
    j = index(v, "\\")
    if (j == 0) return out v
    out = out substr(v, 1, j - 1); e = substr(v, j + 1, 1); v = substr(v, j + 2)
    if (e == "n") out = out "\n"; else if (e == "t") out = out "\t"; else if (e == "r") out = out "\r"
    else if (e == "b") out = out "\b"; else if (e == "f") out = out "\f"
    else if (e == "u") {
      cp = hexval(substr(v, 1, 4)); v = substr(v, 5)
      if (cp >= 55296 && cp < 56320 && substr(v, 1, 2) == "\\u") {
        lo = hexval(substr(v, 3, 4))
        if (lo >= 56320 && lo < 57344) { cp = 65536 + (cp - 55296) * 1024 + (lo - 56320); v = substr(v, 7) }
      }
      out = out utf8(cp)
    } else out = out e
  }
}
function raw() { return substr($0, length($1) + length($2) + 3) }
'

# jget FLAT PATH: the decoded scalar at PATH (no newline added); fails when absent or not a scalar.
jget() {
  JP=$2 awk -F '\t' "$JSON_DECODE_AWK"'
$1 == ENVIRON["JP"] && ($2 == "s" || $2 == "n" || $2 == "b") { printf "%s", decode(raw()); found = 1; exit }
END { exit found ? 0 : 1 }' "$1"
}
# jkeys FLAT PATH: the keys of the object at PATH, one per line.
jkeys() {
  JP=$2 awk -F '\t' "$JSON_DECODE_AWK"'$1 == ENVIRON["JP"] && $2 == "k" { print decode(raw()) }' "$1"
}
# jlist FLAT PATH: the string elements of the array at PATH, one per line.
jlist() {
  JP=$2 awk -F '\t' "$JSON_DECODE_AWK"'
BEGIN { want = ENVIRON["JP"] "[" }
$2 == "s" && substr($1, 1, length(want)) == want && substr($1, length(want)) ~ /^\[[0-9]+\]$/ { print decode(raw()) }' "$1"
}
# jlen FLAT PATH: the number of elements of the array at PATH (0 when absent).
jlen() {
  JP=$2 awk -F '\t' '$1 == ENVIRON["JP"] && $2 == "a" { print $3; found = 1; exit } END { if (!found) print 0 }' "$1"
}

# json_escape_file FILE: FILE's lines as the inside of a JSON string, each line ending in \n.
json_escape_file() {
  awk '
BEGIN { for (i = 1; i < 32; i++) ctl[sprintf("%c", i)] = sprintf("\\u%04x", i); ctl["\t"] = "\\t"; ctl["\r"] = "\\r" }
{
  line = $0; out = ""
  for (i = 1; i <= length(line); i++) {
    c = substr(line, i, 1)
    if (c == "\"") out = out "\\\""; else if (c == "\\") out = out "\\\\"; else if (c in ctl) out = out ctl[c]; else out = out c
  }
  printf "%s\\n", out
}' "$1"
}

# ---- HTTP ----

# api_call METHOD PATH BODYFILE|- AUTH(yes|no): leaves the response in $work/resp(.flat) and the
# status in $status; exits 3 with the server's error code and trace id unless the status is 2xx.
api_call() {
  _method=$1
  _path=$2
  _body=$3
  _auth=$4
  set -- -sS -X "$_method" --proto '=http,https' --connect-timeout 10 --max-time 60 \
    -H 'accept: application/json' -o "$work/resp" -D "$work/headers" -w '%{http_code}'
  if [ "$_body" != - ]; then set -- "$@" -H 'content-type: application/json' --data-binary "@$_body"; fi
  # The token goes in a header file, never on curl's command line (where `ps` would show it).
  if [ "$_auth" = yes ]; then set -- "$@" -H "@$work/auth"; fi
  if [ -n "$cacert" ]; then set -- "$@" --cacert "$cacert"; fi
  if ! status=$(curl "$@" "$api$_path" 2>"$work/curl.err"); then
    die "$EX_REMOTE" "could not reach $api: $(tr -d '\000-\037' <"$work/curl.err" | cut -c1-300)"
  fi
  _trace=$(awk 'tolower($1) == "x-request-id:" { v = $2 } END { gsub(/[^0-9A-Za-z._-]/, "", v); print v }' "$work/headers")
  if json_flatten <"$work/resp" >"$work/resp.flat" 2>/dev/null; then _json=yes; else _json=no; fi
  case $status in
  2??)
    [ "$_json" = yes ] || die "$EX_REMOTE" "$_method $_path: HTTP $status but the body is not JSON (trace id ${_trace:-none})"
    return 0
    ;;
  esac
  _ecode=unknown
  _emsg="HTTP $status"
  if [ "$_json" = yes ]; then
    _ecode=$(jget "$work/resp.flat" .error.code | tr -cd 'a-z0-9_' | cut -c1-64) || _ecode=unknown
    _emsg=$(jget "$work/resp.flat" .error.message | tr -d '\000-\037' | cut -c1-300) || _emsg="HTTP $status"
    _t=$(jget "$work/resp.flat" .error.traceId | tr -cd '0-9A-Za-z._-' | cut -c1-64) && [ -n "$_t" ] && _trace=$_t
  fi
  [ -n "$_ecode" ] || _ecode=unknown
  [ -n "$_emsg" ] || _emsg="HTTP $status"
  die "$EX_REMOTE" "$_method $_path failed: HTTP $status $_ecode: $_emsg (trace id ${_trace:-none})"
}

# ---- keys ----

# make_keypair CURVE KEYFILE PUBFILE: a Nebula key pair made on this machine.
make_keypair() {
  _nc=${NEBULA_CERT:-}
  if [ -z "$_nc" ]; then _nc=$(command -v nebula-cert 2>/dev/null) || _nc=; fi
  if [ -n "$_nc" ]; then
    [ -x "$_nc" ] || die "$EX_LOCAL" "NEBULA_CERT=$_nc is not an executable"
    if [ "$1" = 25519 ]; then
      "$_nc" keygen -out-key "$2" -out-pub "$3" >"$work/keygen.log" 2>&1 && return 0
    else
      "$_nc" keygen -curve P256 -out-key "$2" -out-pub "$3" >"$work/keygen.log" 2>&1 && return 0
    fi
    say "$_nc could not make a $1 key ($(head -n 1 "$work/keygen.log" | cut -c1-120)); using openssl"
    rm -f "$2" "$3"
  fi
  command -v openssl >/dev/null 2>&1 || die "$EX_LOCAL" "neither nebula-cert nor openssl is installed: install one of them to make the host key"
  if [ "$1" = 25519 ]; then
    openssl genpkey -algorithm X25519 -out "$work/k.pem" 2>"$work/openssl.err" &&
      openssl pkey -in "$work/k.pem" -outform DER -out "$work/k.der" 2>>"$work/openssl.err" &&
      openssl pkey -in "$work/k.pem" -pubout -outform DER -out "$work/p.der" 2>>"$work/openssl.err" ||
      die "$EX_LOCAL" "openssl could not make an X25519 key: $(head -n 1 "$work/openssl.err")"
    # PKCS#8 and SubjectPublicKeyInfo of X25519 end with the raw 32-byte key.
    [ "$(wc -c <"$work/k.der" | tr -d ' ')" = 48 ] && [ "$(wc -c <"$work/p.der" | tr -d ' ')" = 44 ] ||
      die "$EX_LOCAL" "openssl wrote an X25519 key of an unexpected size"
    pem_file "NEBULA X25519 PRIVATE KEY" "$2" tail -c 32 "$work/k.der"
    pem_file "NEBULA X25519 PUBLIC KEY" "$3" tail -c 32 "$work/p.der"
  else
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
      -out "$work/k.pem" 2>"$work/openssl.err" &&
      openssl ec -in "$work/k.pem" -no_public -outform DER -out "$work/k.der" 2>>"$work/openssl.err" &&
      openssl ec -in "$work/k.pem" -pubout -conv_form uncompressed -outform DER -out "$work/p.der" 2>>"$work/openssl.err" ||
      die "$EX_LOCAL" "openssl could not make a P-256 key: $(head -n 1 "$work/openssl.err")"
    # SEC1 ECPrivateKey: 30 31 02 01 01 04 20 <32-byte scalar> a0 0a <curve oid>; the SPKI ends
    # with the 65-byte uncompressed point 04 || X || Y.
    [ "$(wc -c <"$work/k.der" | tr -d ' ')" = 51 ] &&
      [ "$(od -An -tx1 -N7 "$work/k.der" | tr -d ' \n')" = 30310201010420 ] &&
      [ "$(wc -c <"$work/p.der" | tr -d ' ')" = 91 ] &&
      [ "$(tail -c 65 "$work/p.der" | od -An -tx1 -N1 | tr -d ' \n')" = 04 ] ||
      die "$EX_LOCAL" "openssl wrote a P-256 key in an unexpected layout"
    pem_file "NEBULA P256 PRIVATE KEY" "$2" dd if="$work/k.der" bs=1 skip=7 count=32
    pem_file "NEBULA P256 PUBLIC KEY" "$3" tail -c 65 "$work/p.der"
  fi
  rm -f "$work/k.pem" "$work/k.der" "$work/p.der"
}

# pem_file BANNER OUT COMMAND...: OUT = the bytes COMMAND prints, base64 in a PEM block.
pem_file() {
  _banner=$1
  _out=$2
  shift 2
  {
    printf -- '-----BEGIN %s-----\n' "$_banner"
    "$@" 2>/dev/null | openssl base64
    printf -- '-----END %s-----\n' "$_banner"
  } >"$_out" || die "$EX_LOCAL" "cannot write $_out"
}

# ---- config.yml: keep in step with test/support/nebula-config.ts (a test compares them) ----

# yq VALUE: a YAML double-quoted scalar, for values that need no escaping. It runs inside command
# substitutions and pipelines (subshells), so a refusal is recorded in a file that write_config checks.
yq() {
  case $1 in
  *'"'* | *'\'* | *[![:print:]]*)
    : >"$work/unsafe"
    printf '""'
    ;;
  *) printf '"%s"' "$1" ;;
  esac
}

# yaml_list INDENT < lines: " []" or one "- item" per line.
yaml_list() {
  _items=$(cat)
  if [ -z "$_items" ]; then
    printf ' []\n'
    return
  fi
  printf '\n'
  printf '%s\n' "$_items" | while IFS= read -r _item; do
    printf '%s- %s\n' "$1" "$(yq "$_item")"
  done
}

write_config() {
  _f=$work/resp.flat
  _is_lh=$(jget "$_f" .config.isLighthouse) || _is_lh=false
  _port=${listen_port:-$(jget "$_f" .config.listenPort || echo 4242)}
  case $_port in '' | *[!0-9]*) die "$EX_REMOTE" "the server sent a listen port that is not a number" ;; esac
  # static_host_map: the server's map, plus lighthouses' addresses it does not already name.
  : >"$work/shm"
  : >"$work/shm.keys"
  jkeys "$_f" .config.staticHostMap | while IFS= read -r _ip; do
    printf '%s\n' "$_ip" >>"$work/shm.keys"
    {
      printf '  %s:' "$(yq "${_ip%%/*}")"
      jlist "$_f" ".config.staticHostMap[\"$_ip\"]" | yaml_list '    '
    } >>"$work/shm"
  done
  _n=$(jlen "$_f" .config.lighthouses)
  _i=0
  : >"$work/lighthouses"
  while [ "$_i" -lt "$_n" ]; do
    _ip=$(jget "$_f" ".config.lighthouses[$_i].ip") || die "$EX_REMOTE" "lighthouse $_i has no ip"
    printf '%s\n' "${_ip%%/*}" >>"$work/lighthouses"
    if ! grep -qxF "$_ip" "$work/shm.keys" 2>/dev/null && ! grep -qxF "${_ip%%/*}" "$work/shm.keys" 2>/dev/null; then
      jlist "$_f" ".config.lighthouses[$_i].staticAddrs" >"$work/addrs"
      if [ -s "$work/addrs" ]; then
        {
          printf '  %s:' "$(yq "${_ip%%/*}")"
          yaml_list '    ' <"$work/addrs"
        } >>"$work/shm"
      fi
    fi
    _i=$((_i + 1))
  done
  [ "$_is_lh" = true ] && : >"$work/lighthouses"

  {
    printf '# nebula config written by Keyhole enrollment; regenerated on renewal.\n'
    printf 'pki:\n'
    printf '  ca: %s\n' "$(yq "$dir/ca.crt")"
    printf '  cert: %s\n' "$(yq "$dir/host.crt")"
    printf '  key: %s\n' "$(yq "$dir/host.key")"
    printf '  # Drop tunnels whose certificate became invalid or blocklisted when the config is reloaded (SIGHUP).\n'
    printf '  disconnect_invalid: true\n'
    printf '  blocklist:'
    yaml_list '    ' <"$work/blocklist"
    printf 'static_host_map:'
    if [ -s "$work/shm" ]; then
      printf '\n'
      cat "$work/shm"
    else
      printf ' {}\n'
    fi
    printf 'lighthouse:\n'
    printf '  am_lighthouse: %s\n' "$_is_lh"
    printf '  interval: 60\n'
    printf '  hosts:'
    yaml_list '    ' <"$work/lighthouses"
    printf 'listen:\n'
    printf '  host: "0.0.0.0"\n'
    printf '  port: %s\n' "$_port"
    printf 'punchy:\n  punch: true\n'
    printf 'tun:\n'
    printf '  disabled: false\n'
    printf '  dev: %s\n' "$(yq "$tun_dev")"
    printf '  drop_local_broadcast: false\n  drop_multicast: false\n  tx_queue: 500\n  mtu: 1300\n'
    printf 'logging:\n  level: info\n  format: text\n'
    printf 'firewall:\n'
    printf '  outbound:\n    - port: "any"\n      proto: "any"\n      host: "any"\n'
    printf '  inbound:\n    - port: "any"\n      proto: "icmp"\n      host: "any"\n'
    jlist "$_f" .config.network.cidrs | while IFS= read -r _cidr; do
      printf '    - port: "any"\n      proto: "any"\n      cidr: %s\n' "$(yq "$_cidr")"
    done
  } >"$work/config.yml" || die "$EX_LOCAL" "cannot write config.yml"
  if [ -f "$work/unsafe" ]; then
    die "$EX_REMOTE" "the server sent a value (address, CIDR or path) that config.yml cannot hold safely: refusing it"
  fi
}

# ---- state kept for --renew ----

state_get() {
  [ -f "$dir/keyhole.conf" ] || return 1
  sed -n "s/^$1=//p" "$dir/keyhole.conf" | head -n 1
}

write_state() {
  {
    printf 'api=%s\n' "$api"
    printf 'network_id=%s\n' "$network_id"
    printf 'host_id=%s\n' "$host_id"
    printf 'curve=%s\n' "$curve"
    printf 'tun_dev=%s\n' "$tun_dev"
    printf 'listen_port=%s\n' "$listen_port"
    printf 'cacert=%s\n' "$cacert"
  } >"$work/keyhole.conf"
  install_file keyhole.conf 644 "$work/keyhole.conf"
}

reload_nebula() {
  [ -f "$dir/nebula.pid" ] || {
    say "start nebula with: nebula -config $dir/config.yml"
    return 0
  }
  _pid=$(head -n 1 "$dir/nebula.pid" | tr -d ' \r')
  case $_pid in
  '' | *[!0-9]*)
    say "warning: $dir/nebula.pid does not hold a pid; reload nebula yourself (SIGHUP)"
    return 0
    ;;
  esac
  if kill -HUP "$_pid" 2>/dev/null; then
    say "nebula (pid $_pid) reloaded its config"
  else
    say "warning: nebula.pid names $_pid, which is not running; start nebula with: nebula -config $dir/config.yml"
  fi
}

# install_issued: write everything an IssuedCertificate in $work/resp.flat carries.
install_issued() {
  _f=$work/resp.flat
  jget "$_f" .hostToken >"$work/host.token" && [ -s "$work/host.token" ] ||
    die "$EX_REMOTE" "the server's response has no host token"
  # The old token is spent from this moment: save the new one before anything else can fail.
  install_file host.token 600 "$work/host.token"
  jget "$_f" .certificate >"$work/host.crt" && grep -q 'BEGIN NEBULA CERTIFICATE' "$work/host.crt" ||
    die "$EX_REMOTE" "the server's response has no certificate"
  jget "$_f" .caBundle >"$work/ca.crt" && grep -q 'BEGIN NEBULA CERTIFICATE' "$work/ca.crt" ||
    die "$EX_REMOTE" "the server's response has no CA bundle"
  network_id=$(jget "$_f" .config.network.id) || die "$EX_REMOTE" "the server's response names no network"
  host_id=$(jget "$_f" .hostId) || host_id=
  case $network_id$host_id in *[!A-Za-z0-9._-]*) die "$EX_REMOTE" "the server sent a malformed network or host id" ;; esac
  [ -f "$work/blocklist" ] || jlist "$_f" .config.blocklist >"$work/blocklist"
  if grep -qv '^[0-9a-f]\{64\}$' "$work/blocklist"; then
    die "$EX_REMOTE" "the server sent a blocklist entry that is not a certificate fingerprint"
  fi
  write_config
  if [ -f "$work/host.key" ]; then install_file host.key 600 "$work/host.key"; fi
  install_file host.crt 644 "$work/host.crt"
  install_file ca.crt 644 "$work/ca.crt"
  install_file blocklist 644 "$work/blocklist"
  install_file config.yml 644 "$work/config.yml"
  # What config.yml was made from, without the host token: --refresh rebuilds config.yml from it.
  awk -F '\t' '$1 != ".hostToken"' "$_f" >"$work/hints.flat"
  install_file hints.flat 600 "$work/hints.flat"
  write_state
}

# ---- enroll ----

if [ "$mode" = enroll ]; then
  curve=${curve:-25519}
  tun_dev=${tun_dev:-nebula1}
  make_keypair "$curve" "$work/host.key" "$work/host.pub"
  {
    printf '{"code":"%s","publicKey":"' "$code"
    json_escape_file "$work/host.pub"
    printf '"}'
  } >"$work/body"
  api_call POST /v1/enroll "$work/body" no
  install_issued
  say "enrolled: host ${host_id:-?} in network $network_id, certificate $(jget "$work/resp.flat" .fingerprint || echo '?') until $(jget "$work/resp.flat" .notAfter || echo '?')"
  reload_nebula
  exit 0
fi

# ---- renew ----

[ -f "$dir/host.token" ] || die "$EX_LOCAL" "$dir/host.token is missing: enroll this host first"
[ -f "$dir/host.key" ] || die "$EX_LOCAL" "$dir/host.key is missing: enroll this host first"
[ -n "$api" ] || api=$(state_get api) || api=
[ -n "$api" ] || usage_error "--api is required: $dir/keyhole.conf does not name the API"
check_api
[ -n "$curve" ] || curve=$(state_get curve) || curve=
curve=${curve:-25519}
[ -n "$tun_dev" ] || tun_dev=$(state_get tun_dev) || tun_dev=
tun_dev=${tun_dev:-nebula1}
[ -n "$listen_port" ] || listen_port=$(state_get listen_port) || listen_port=
[ -n "$cacert" ] || cacert=$(state_get cacert) || cacert=
token=$(cat "$dir/host.token")
case $token in '' | *[!A-Za-z0-9._~+/=-]*) die "$EX_LOCAL" "$dir/host.token is empty or damaged: enroll this host again" ;; esac
printf 'Authorization: Bearer %s\n' "$token" >"$work/auth"

if [ "$mode" = refresh ]; then
  [ "$rekey" = no ] || usage_error "--rekey goes with --renew"
  [ -f "$dir/hints.flat" ] || die "$EX_LOCAL" "$dir/hints.flat is missing: renew once (--renew) to create it"
  network_id=$(state_get network_id) || network_id=
  case $network_id in '' | *[!A-Za-z0-9._-]*) die "$EX_LOCAL" "$dir/keyhole.conf names no network: enroll this host again" ;; esac
  api_call GET "/v1/networks/$network_id/blocklist" - yes
  jlist "$work/resp.flat" .fingerprints >"$work/blocklist"
  if grep -qv '^[0-9a-f]\{64\}$' "$work/blocklist"; then
    die "$EX_REMOTE" "the server sent a blocklist entry that is not a certificate fingerprint"
  fi
  jget "$work/resp.flat" .caBundle >"$work/ca.crt" && grep -q 'BEGIN NEBULA CERTIFICATE' "$work/ca.crt" ||
    die "$EX_REMOTE" "the server's blocklist response has no CA bundle"
  cp "$dir/hints.flat" "$work/resp.flat"
  write_config
  install_file ca.crt 644 "$work/ca.crt"
  install_file blocklist 644 "$work/blocklist"
  install_file config.yml 644 "$work/config.yml"
  say "refreshed: $(wc -l <"$work/blocklist" | tr -d ' ') blocklisted certificate(s), $(grep -c 'BEGIN NEBULA CERTIFICATE' "$work/ca.crt") trusted CA(s)"
  reload_nebula
  exit 0
fi

if [ "$rekey" = yes ]; then
  make_keypair "$curve" "$work/host.key" "$work/host.pub"
  {
    printf '{"publicKey":"'
    json_escape_file "$work/host.pub"
    printf '"}'
  } >"$work/body"
else
  printf '{}' >"$work/body"
fi
api_call POST /v1/renew "$work/body" yes
cp "$work/resp.flat" "$work/renew.flat"
# Keep the token at once (the old one is spent), then fetch the network's current blocklist with it.
jget "$work/renew.flat" .hostToken >"$work/host.token" && [ -s "$work/host.token" ] ||
  die "$EX_REMOTE" "the server's response has no host token"
install_file host.token 600 "$work/host.token"
token=$(cat "$work/host.token")
case $token in *[!A-Za-z0-9._~+/=-]*) die "$EX_REMOTE" "the server sent a malformed host token" ;; esac
printf 'Authorization: Bearer %s\n' "$token" >"$work/auth"
network_id=$(jget "$work/renew.flat" .config.network.id) || die "$EX_REMOTE" "the server's response names no network"
case $network_id in *[!A-Za-z0-9._-]*) die "$EX_REMOTE" "the server sent a malformed network id" ;; esac
# api_call runs in a subshell here: a failed blocklist fetch must not throw away the renewed
# certificate, whose response carries the blocklist as of the renewal.
if (api_call GET "/v1/networks/$network_id/blocklist" - yes); then
  jlist "$work/resp.flat" .fingerprints >"$work/blocklist"
else
  say "warning: using the blocklist sent with the renewal instead"
fi
cp "$work/renew.flat" "$work/resp.flat"
install_issued
say "renewed: certificate $(jget "$work/resp.flat" .fingerprint || echo '?') until $(jget "$work/resp.flat" .notAfter || echo '?')"
reload_nebula
