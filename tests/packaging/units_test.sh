#!/bin/bash
# The systemd units of packaging/systemd, verified and run by a real systemd.
#
# 1. systemd-analyze verify: every unit (the daemons' paths pointed at this build)
#    loads with no warning at all; the man pages they name are in man/.
# 2. systemd as PID 1 of its own pid, mount, cgroup, UTS and IPC namespaces (this
#    machine's PID 1 need not be systemd; nothing of the host's is touched: /run is a
#    tmpfs of the namespace, /proc/sys read-only in it, the unit path a temp dir of
#    stub targets plus our units, the pool a BTRFS loop image mounted inside; the
#    only traces outside are the namespace's cgroups, removed at the end).  There:
#    - systemctl start hoody@c1.target: every daemon Type=notify, active with its
#      STATUS= text, each mount visible to the "host" (the manager's namespace), the
#      sandbox in force (NoNewPrivs, seccomp, the bounding set), and working under it:
#      a SQLite database written through hoody-dbfs, a snapshot taken (quiesce over the
#      abstract socket, BTRFS ioctls) and restored through hoody-snapfs, a share offered
#      by c1, accepted and read by c2 through hoody-sharefs (when it is built);
#    - the ramdisk sized from HOODY_RAMDISK_SIZE (default half the host's memory);
#    - a daemon that cannot start fails its start job (no READY=1);
#    - why no mount namespace: hoody-dbfs with ProtectSystem=strict added reports
#      READY=1 and is active, yet its mount is invisible outside the unit;
#    - systemctl stop: every daemon exits 0 after STOPPING=1, every mount is gone.
# Exit 77 (skip) without root, unshare, systemd, FUSE or BTRFS, unless CI=true.
set -uo pipefail

: "${HOODY_DBFS:?}" "${HOODY_SNAPFS:?}" "${HOODY_UNIT_DIR:?}" "${HOODY_SBINDIR:?}" "${HOODY_BINDIR:?}"
: "${HOODY_SOURCE_ROOT:?}"
SHAREFS=${HOODY_SHAREFS:-}

skip() {
  echo "SKIP: $*"
  if [ "${CI:-}" = true ]; then echo "CI=true: a missing capability is a failure"; exit 1; fi
  exit 77
}
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() {  # check "what" command...
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}

[ "$(id -u)" = 0 ] || skip "needs root"
SYSTEMD=/lib/systemd/systemd
for t in unshare nsenter systemd-analyze mkfs.btrfs sqlite3 "$SYSTEMD"; do
  command -v "$t" >/dev/null 2>&1 || [ -x "$t" ] || skip "$t not found"
done
[ -c /dev/fuse ] || skip "no /dev/fuse"
grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || skip "no btrfs"

T=$(mktemp -d "${HOODY_TEST_TMP:-/tmp}/hoody-units.XXXXXX")
SDPID=
NSPID=
CGROUPS=()
cleanup() {
  # SIGKILL to the namespace's PID 1 ends every process in it; then unshare exits.
  [ -n "$SDPID" ] && kill -KILL "$SDPID" 2>/dev/null
  [ -n "$NSPID" ] && wait "$NSPID" 2>/dev/null
  # The namespace's cgroups, deepest first (a cgroup empties a moment after its last
  # process is reaped).
  for c in "${CGROUPS[@]}"; do
    for _ in $(seq 50); do
      find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$c" ] || break
      sleep 0.1
    done
    [ -d "$c" ] && echo "warning: cgroup $c is left" >&2
  done
  [ -n "${SHARE_SIGNAL:-}" ] && rm -f "$SHARE_SIGNAL"
  [ "${HOODY_UNITS_KEEP:-0}" = 1 ] || rm -rf --one-file-system "$T"
}
trap cleanup EXIT

# --- The units, pointed at this build and at a pool in the temp dir. ---
POOL=$T/pool
U=$T/units
mkdir -p "$U" "$POOL" "$T/etc"
for f in "$HOODY_UNIT_DIR"/*.service "$HOODY_UNIT_DIR"/*.target; do
  sed -e "s#$HOODY_SBINDIR/hoody-dbfs#$HOODY_DBFS#g" \
      -e "s#$HOODY_SBINDIR/hoody-snapfs#$HOODY_SNAPFS#g" \
      -e "s#$HOODY_SBINDIR/hoody-sharefs#${SHAREFS:-/nonexistent/hoody-sharefs}#g" \
      -e "s#$HOODY_BINDIR/hoody-share #${HOODY_SHARE:-/nonexistent/hoody-share} #g" \
      -e "s#/var/lib/hoody#$POOL#g" -e "s#/etc/hoody/#$T/etc/#g" "$f" > "$U/$(basename "$f")"
done
units=(hoody@c1.target hoody-container@c1.service hoody-dbfs@c1.service hoody-snapfs@c1.service)
daemons=(dbfs snapfs)
if [ -f "$U/hoody-sharefs@.service" ]; then
  units+=(hoody-sharefs@c1.service)
  daemons+=(sharefs)
else
  echo "note: no hoody-sharefs unit in this build (no hoody-sharefs target): dbfs and snapfs only"
fi

# --- 1. systemd-analyze verify: no error, no warning. ---
for u in "${units[@]}"; do
  # --man=no: the pages are checked in the source tree below, not where this machine
  # may or may not have them installed.
  out=$(cd "$U" && systemd-analyze verify --man=no "$U/$u" 2>&1)
  rc=$?
  if [ $rc = 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify $u"; else bad "systemd-analyze verify $u (rc=$rc): $out"; fi
done
for f in "$U"/hoody*; do
  for page in $(sed -n 's/^Documentation=//p' "$f"); do
    case "$page" in
      man:*) p=${page#man:}; file=$HOODY_SOURCE_ROOT/man/${p%(*}.${p#*(}; file=${file%)}
             case "$p" in systemd*|sd_*|mount*) continue ;; esac
             if [ -f "$file" ]; then ok "$(basename "$f"): $page in man/"; else bad "$(basename "$f"): $page is not in man/"; fi ;;
    esac
  done
done
for d in "${daemons[@]}" container; do
  f=$U/hoody-$d@.service
  [ $d = container ] || check "hoody-$d@: Type=notify" grep -qx 'Type=notify' "$f"
  # A setting that makes a mount namespace would hide the mount (see step 2).
  ns=$(grep -E '^(ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|PrivateMounts|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectProc|ProcSubset|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|PrivateNetwork|PrivateUsers|MountFlags)=' "$f")
  if [ -z "$ns" ]; then ok "hoody-$d@: no mount or network namespace"; else bad "hoody-$d@: $ns"; fi
  # Every sandbox setting has its comment: the line above it is a comment (or a
  # setting of the same family under one comment).
  prev=
  while IFS= read -r line; do
    case "$line" in
      [A-Z]*=*)
        key=${line%%=*}
        if [[ "$prev" != \#* && "$prev" != DevicePolicy=* && "$prev" != SystemCallFilter=* ]]; then
          bad "hoody-$d@: $key= without a comment above it"
        fi ;;
    esac
    prev=$line
  done < <(sed -n '/^# --- Sandbox/,/^\[Install\]/p' "$f" | grep -v '^$')
done

# --- 2. A real systemd, as PID 1 of its own namespaces. ---
for t in sysinit basic local-fs local-fs-pre shutdown multi-user default network remote-fs umount swap; do
  printf '[Unit]\nDescription=stub %s (test)\nDefaultDependencies=no\n' "$t" > "$U/$t.target"
done
# Own cgroups below the current ones: the cgroup namespace's root.
while IFS=: read -r _ ctrl path; do
  case "$ctrl" in
    "") dir=/sys/fs/cgroup; [ -d /sys/fs/cgroup/unified ] && dir=/sys/fs/cgroup/unified ;;
    name=systemd) dir=/sys/fs/cgroup/systemd ;;
    *) dir=/sys/fs/cgroup/${ctrl#name=} ;;
  esac
  [ -d "$dir$path" ] || continue
  c="$dir${path%/}/hoody-units.$$"
  mkdir -p "$c" 2>/dev/null && CGROUPS+=("$c")
done < /proc/self/cgroup
(
  for c in "${CGROUPS[@]}"; do echo $BASHPID > "$c/cgroup.procs" 2>/dev/null; done
  exec unshare --pid --fork --mount --uts --ipc --cgroup --propagation private \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_UNIT_PATH="$U" bash -c '
      # The host may run hoody itself (the README'"'"'s hoody-up): its mounts under
      # /run/hoody would stay in this namespace'"'"'s mountinfo under the new /run.
      umount -R -l /run/hoody 2>/dev/null
      mount -t proc proc /proc && mount -t tmpfs -o mode=755 tmpfs /run || exit 1
      # PID 1 raises fs.file-max and fs.nr_open at boot: not on this machine.
      mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys || exit 1
      exec '"$SYSTEMD"' --system --unit=default.target --log-target=console --log-level=notice \
        --default-standard-output=inherit --default-standard-error=inherit'
) > "$T/systemd.log" 2>&1 &
NSPID=$!
for _ in $(seq 100); do
  SDPID=$(pgrep -P "$NSPID" -f "$SYSTEMD --system" | head -1)
  [ -n "$SDPID" ] && break
  sleep 0.1
done
[ -n "$SDPID" ] || { cat "$T/systemd.log"; skip "systemd did not start in a namespace"; }
in_ns() { nsenter -t "$SDPID" -m -p -- "$@"; }
state=
for _ in $(seq 100); do
  state=$(in_ns systemctl is-system-running 2>/dev/null)
  case "$state" in running|degraded) break ;; esac
  sleep 0.1
done
[ "$state" = running ] || { cat "$T/systemd.log"; skip "systemd in a namespace is '$state', not running"; }
echo "systemd $(in_ns systemctl --version | head -1 | cut -d' ' -f2) runs as PID 1 of a namespace (host pid $SDPID)"

# The pool: BTRFS on a loop image, mounted inside the namespace (gone with it).
in_ns sh -ec "
  truncate -s 512M '$T/pool.img'
  mkfs.btrfs -q '$T/pool.img' >/dev/null
  mount -o loop '$T/pool.img' '$POOL'
  mkdir -p '$POOL/containers/c1' '$POOL/containers/c2'
  for c in c1 c2; do
    btrfs -q subvolume create '$POOL/containers/'\$c/storage
    btrfs -q subvolume create '$POOL/containers/'\$c/databases
  done
  chmod 1777 '$POOL/containers/c1/databases'
" || { bad "pool set-up"; exit 1; }
# The pool's share change signal lives in the host's /dev/shm (the namespace
# shares it): removed at the end, named after the pool directory's dev and inode.
SHARE_SIGNAL=/dev/shm/hoody-shares-$(in_ns stat -c '%d-%i' "$POOL")
echo "HOODY_RAMDISK_SIZE=64m" > "$T/etc/c2.env"

# Start the tree of c1.
t0=$(date +%s%N)
if in_ns systemctl start hoody@c1.target; then ok "systemctl start hoody@c1.target"; else
  bad "systemctl start hoody@c1.target"; in_ns systemctl status --no-pager "${units[@]}"; fi
echo "  started in $(( ($(date +%s%N) - t0) / 1000000 )) ms"

mnt_type() { in_ns findmnt -n -o FSTYPE --mountpoint "$1" 2>/dev/null | tail -1; }
R=/run/hoody/c1
declare -A path=([dbfs]=databases [snapfs]=.snapshots [sharefs]=shares)
for d in "${daemons[@]}"; do
  u=hoody-$d@c1.service
  show=$(in_ns systemctl show -p Type,ActiveState,SubState,StatusText,MainPID,NRestarts "$u")
  eval "$(echo "$show" | sed 's/^\([A-Za-z]*\)=\(.*\)$/\1="\2"/')"
  check "$u: Type=notify active running" [ "$Type/$ActiveState/$SubState" = notify/active/running ]
  check "$u: STATUS=serving $R/${path[$d]} ('$StatusText')" [ "$StatusText" = "serving $R/${path[$d]}" ]
  check "$u: no restart" [ "$NRestarts" = 0 ]
  check "$u: the host sees fuse.hoody-$d on $R/${path[$d]}" [ "$(mnt_type "$R/${path[$d]}")" = "fuse.hoody-$d" ]
  st=$(in_ns cat "/proc/$MainPID/status")
  check "$u: NoNewPrivs" grep -qP '^NoNewPrivs:\t1$' <<<"$st"
  check "$u: seccomp filter" grep -qP '^Seccomp:\t2$' <<<"$st"
  # CAP_CHOWN 0, DAC_OVERRIDE 1, DAC_READ_SEARCH 2, FOWNER 3, FSETID 4, SETGID 6, SETUID 7, SYS_ADMIN 21
  check "$u: bounding set 00000000002000df" grep -qP '^CapBnd:\t00000000002000df$' <<<"$st"
done
check "hoody-container@c1: storage bound (btrfs)" [ "$(mnt_type $R/storage)" = btrfs ]
check "hoody-container@c1: ramdisk (tmpfs)" [ "$(mnt_type $R/ramdisk)" = tmpfs ]
for m in storage ramdisk; do
  check "hoody-container@c1: $m nosuid,nodev" \
    in_ns sh -c "findmnt -n -o OPTIONS --mountpoint $R/$m | tail -1 | grep -q 'nosuid,nodev'"
done
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
size_kb=$(in_ns df -k --output=size $R/ramdisk | tail -1 | tr -d ' ')
diff_kb=$(( size_kb * 2 - mem_kb ))
check "ramdisk is half the host's memory ($size_kb of $mem_kb kB)" [ ${diff_kb#-} -le 8 ]

# Working under the sandbox: SQLite through hoody-dbfs (as nobody: setfsuid), a
# snapshot (dbfs quiesced over its abstract socket, BTRFS ioctls), a restore.
check "SQLite through hoody-dbfs as nobody" in_ns setpriv --reuid=65534 --regid=65534 --clear-groups \
  sqlite3 $R/databases/app.db "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);"
check "the row landed in the pool, owned by nobody" \
  [ "$(in_ns stat -c %u "$POOL/containers/c1/databases/app.db")" = 65534 ]
check "mkdir .snapshots/s1 (snapshot)" in_ns mkdir $R/.snapshots/s1
check "the snapshot holds the database" in_ns test -f $R/.snapshots/s1/databases/app.db
in_ns sqlite3 $R/databases/app.db "INSERT INTO t VALUES (2);"
check "restore s1" in_ns sh -c "echo s1 > $R/.snapshots/.hoody/restore"
check "restored: one row" [ "$(in_ns sqlite3 $R/databases/app.db 'SELECT count(*) FROM t')" = 1 ]

# hoody-sharefs under the sandbox: c1 offers a directory of its storage to c2 (the
# registry's change signal crosses from the CLI to c2's daemon), c2 accepts with mv,
# reads it, and cannot write into a read-only share.
if [ -n "$SHAREFS" ]; then
  check "hoody-sharefs@c2 starts" in_ns systemctl start hoody-sharefs@c2.service
  in_ns sh -c "mkdir -p $POOL/containers/c1/storage/data && echo hello > $POOL/containers/c1/storage/data/f"
  check "hoody-share offer --from c1:data --to c2 --ro data" \
    in_ns "$HOODY_SHARE" --pool "$POOL" offer --from c1:data --to c2 --ro data
  for _ in $(seq 50); do in_ns test -d /run/hoody/c2/shares/.pending/data && break; sleep 0.1; done
  check "c2 sees the offer in .pending" in_ns test -d /run/hoody/c2/shares/.pending/data
  check "c2 accepts with mv" in_ns mv /run/hoody/c2/shares/.pending/data /run/hoody/c2/shares/data
  check "c2 reads the share" [ "$(in_ns cat /run/hoody/c2/shares/data/f 2>&1)" = hello ]
  out=$(in_ns sh -c "echo x > /run/hoody/c2/shares/data/g" 2>&1)
  check "c2 cannot write into it: $out" grep -q "Read-only file system" <<<"$out"
  check "hoody-sharefs@c2 stops" in_ns systemctl stop hoody-sharefs@c2.service
fi

# A daemon that cannot start: its start job fails, no READY=1.
in_ns rm -rf "$POOL/containers/c3"
if in_ns systemctl start hoody-dbfs@c3.service 2>/dev/null; then bad "hoody-dbfs@c3 (no source) started"; else
  ok "hoody-dbfs@c3 (no source): the start job fails"; fi
check "hoody-dbfs@c3: never active" [ "$(in_ns systemctl show -p ActiveEnterTimestampMonotonic --value hoody-dbfs@c3.service)" = 0 ]
in_ns systemctl stop hoody-dbfs@c3.service 2>/dev/null

# The ramdisk size from /etc/hoody/c2.env.
check "hoody-container@c2 with HOODY_RAMDISK_SIZE=64m" in_ns systemctl start hoody-container@c2.service
check "c2's ramdisk is 64 MiB" [ "$(in_ns df -k --output=size /run/hoody/c2/ramdisk | tail -1 | tr -d ' ')" = 65536 ]

# Why no mount namespace: c2's hoody-dbfs with the usual hardening (ProtectSystem=strict,
# ProtectHome=, the pool and /run/hoody writable) gets a namespace of its own.
mkdir -p "$U/hoody-dbfs@c2.service.d"
printf '[Service]\nProtectSystem=strict\nProtectHome=yes\nReadWritePaths=%s /run/hoody\n' "$POOL" \
  > "$U/hoody-dbfs@c2.service.d/protect-system.conf"
in_ns systemctl daemon-reload
check "hoody-dbfs@c2 with ProtectSystem=strict: starts (READY=1 from inside its namespace)" \
  in_ns systemctl start hoody-dbfs@c2.service
P=$(in_ns systemctl show -p MainPID --value hoody-dbfs@c2.service)
check "  its own namespace has the mount" in_ns grep -q " /run/hoody/c2/databases .* - fuse.hoody-dbfs " "/proc/$P/mountinfo"
check "  the host does not see it" [ -z "$(mnt_type /run/hoody/c2/databases)" ]
in_ns systemctl stop hoody-dbfs@c2.service hoody-container@c2.service

# Stop: STOPPING=1, exit 0, nothing left mounted.
check "systemctl stop hoody@c1.target" in_ns systemctl stop hoody@c1.target
for d in "${daemons[@]}"; do
  u=hoody-$d@c1.service
  for _ in $(seq 100); do
    [ "$(in_ns systemctl show -p ActiveState --value "$u")" = inactive ] && break
    sleep 0.1
  done
  r=$(for p in ActiveState Result ExecMainStatus; do in_ns systemctl show -p $p --value "$u"; done | paste -sd/)
  check "$u: stopped cleanly ($r)" [ "$r" = inactive/success/0 ]
  check "$u: $R/${path[$d]} unmounted" [ -z "$(mnt_type "$R/${path[$d]}")" ]
done
check "storage and ramdisk unmounted" [ -z "$(mnt_type $R/storage)$(mnt_type $R/ramdisk)" ]

if [ $fails != 0 ]; then
  echo "--- systemd and daemon output ---"
  tail -80 "$T/systemd.log"
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
