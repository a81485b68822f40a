#!/bin/bash
# The Debian package: scripts/build-deb builds it from this tree; then it must
# carry the daemons, the CLIs, every man page and every systemd unit, depend on
# what the binaries link (libsystemd0 for sd_notify, libfuse3) and on fuse3, point
# its units at the installed binaries, and pass lintian without an error.
# Slow the first time (a full release build); ccache makes later runs faster.
set -uo pipefail
: "${HOODY_SOURCE_ROOT:?}"
SHAREFS=${HOODY_SHAREFS:-}
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
if [ "$(id -u)" != 0 ]; then
  echo "SKIP: build-deb installs its build tools with apt-get: needs root"
  [ "${CI:-}" = true ] && exit 1
  exit 77
fi

cd "$HOODY_SOURCE_ROOT"
t0=$(date +%s)
if ! out=$(./scripts/build-deb 2>&1); then echo "$out"; echo "FAIL scripts/build-deb"; exit 1; fi
deb=$(ls build-deb/hoody_*.deb | grep -v dbgsym | head -1)
ok "scripts/build-deb: $deb in $(( $(date +%s) - t0 )) s"

list=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's#^\./#/#')
want=(/usr/sbin/hoody-dbfs /usr/sbin/hoody-snapfs /usr/bin/hoody-snap /usr/bin/hoody-share
      /usr/share/man/man7/hoody.7.gz /usr/share/man/man8/hoody-dbfs.8.gz
      /usr/share/man/man8/hoody-snapfs.8.gz /usr/share/man/man1/hoody-snap.1.gz
      /usr/share/man/man1/hoody-share.1.gz)
units=(hoody@.target hoody-container@.service hoody-dbfs@.service hoody-snapfs@.service)
if [ -n "$SHAREFS" ]; then
  want+=(/usr/sbin/hoody-sharefs)
  units+=(hoody-sharefs@.service hoody-nfs-view.service)
else
  echo "note: no hoody-sharefs target in this build: the package has no hoody-sharefs yet"
fi
if [ -f man/hoody-sharefs.8 ]; then want+=(/usr/share/man/man8/hoody-sharefs.8.gz); else
  echo "note: man/hoody-sharefs.8 is not in this tree yet"; fi
for f in "${want[@]}"; do
  if grep -qx "$f" <<<"$list"; then ok "carries $f"; else bad "does not carry $f"; fi
done
for u in "${units[@]}"; do
  p=$(grep -E "^(/usr)?/lib/systemd/system/$u\$" <<<"$list")
  if [ -n "$p" ]; then ok "carries $p"; else bad "does not carry the unit $u"; fi
done

deps=$(dpkg-deb -f "$deb" Depends)
# Cross-server shares: the owner's side exports through nfs-ganesha (and
# rpcbind), the receiver reads with libnfs, the link between servers for copy
# and sync is ssh (issue 9).
for d in libsystemd0 libfuse3-3 fuse3 btrfs-progs libnfs13 nfs-ganesha nfs-ganesha-vfs rpcbind \
         openssh-client; do
  if grep -qw "$d" <<<"$deps"; then ok "Depends: $d"; else bad "Depends lacks $d ($deps)"; fi
done

# The units name binaries the package installs.
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
dpkg-deb -x "$deb" "$x"
for f in "$x"/{usr/,}lib/systemd/system/hoody*; do
  [ -f "$f" ] || continue
  while read -r bin; do
    if [ -x "$x$bin" ] || [ -x "$bin" ]; then ok "$(basename "$f"): $bin"; else bad "$(basename "$f"): $bin is neither in the package nor on this system"; fi
  done < <(sed -n 's/^Exec[A-Za-z]*=[-+!@:]*\([^ ]*\).*/\1/p' "$f" | sort -u)
done

if command -v lintian >/dev/null; then
  l=$(lintian --tag-display-limit 0 "$deb" 2>&1)
  echo "$l" | sed 's/^/  lintian: /'
  if grep -q '^E:' <<<"$l"; then bad "lintian reports errors"; else ok "lintian: no error ($(grep -c '^W:' <<<"$l") warnings)"; fi
else
  bad "lintian is not installed (scripts/build-deb installs it)"
fi
[ $fails = 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all checks passed"
