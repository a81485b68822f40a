# Two "servers" on one machine for cross-server shares (sourced by
# remote_shares_test.sh and tests/bench/remote_share_bench.sh).
#
# Each server is a network + mount namespace held by a `sleep` (rig_enter A
# runs a command in A), joined by a veth pair (A 10.231.7.1, B 10.231.7.2),
# each with its own BTRFS loop pool and registry.  A (the owner) runs the
# export view (`hoody-sharefs -o exports`), rpcbind and nfs-ganesha, all
# private to its namespaces (tmpfs over /run/rpcbind and /run/ganesha, as
# research/snapshots-and-shares.md Appendix A); B (the receiver) runs
# hoody-sharefs for container c2.  Each side's server.conf reaches the other
# with `nsenter` instead of ssh.  Everything lives in a temp dir; rig_cleanup
# (an EXIT trap) kills what it started, unmounts, detaches the loops and
# removes the dir, also after a failure.
#
# Needs: root, FUSE, btrfs, losetup, ip, nsenter, rpcbind, ganesha.nfsd with
# the VFS FSAL, nfs-ls/nfs-cat (libnfs-utils).  Without one of them the
# caller skips (77), or fails under CI=true.
set -u

RIG_A_IP=10.231.7.1
RIG_B_IP=10.231.7.2
RIG_NFS_PORT=12049
RIG_MNT_PORT=12050
RIG_PIDS=()
RIG_LOOPS=()
RIG_T=""

rig_note() { echo "rig: $*" >&2; }

# Exit 77 (skip), or 1 under CI=true, when the machine lacks what the rig needs.
rig_require() {
  local missing=()
  [ "$(id -u)" = 0 ] || missing+=("root")
  [ -c /dev/fuse ] || missing+=("/dev/fuse")
  for p in ip nsenter unshare losetup mkfs.btrfs btrfs rpcbind rpcinfo ganesha.nfsd nfs-ls nfs-cat \
           python3 mountpoint; do
    command -v "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ -e /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so ] || missing+=("nfs-ganesha-vfs")
  [ -n "${HOODY_SHARE:-}" ] && [ -x "$HOODY_SHARE" ] || missing+=("\$HOODY_SHARE")
  [ -n "${HOODY_SHAREFS:-}" ] && [ -x "$HOODY_SHAREFS" ] || missing+=("\$HOODY_SHAREFS")
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "${CI:-}" = true ]; then
      echo "FAIL: missing under CI=true: ${missing[*]}" >&2
      exit 1
    fi
    echo "SKIP: missing ${missing[*]} (scripts/install-deps.sh)" >&2
    exit 77
  fi
  # The daemons' default transport is FUSE over io_uring: the rig turns the
  # kernel's parameter on, as hoody-up and tests/support's Daemon do.
  if [ "${HOODY_TEST_TRANSPORT:-}" = uring ] &&
     ! echo 1 2>/dev/null >/sys/module/fuse/parameters/enable_uring; then
    if [ "${CI:-}" = true ]; then
      echo "FAIL: HOODY_TEST_TRANSPORT=uring: cannot turn on enable_uring" >&2
      exit 1
    fi
    rig_note "FUSE over io_uring is not available: the daemons run on /dev/fuse"
  fi
}

rig_enter() {  # rig_enter A|B CMD...
  local pid
  if [ "$1" = A ]; then pid=$RIG_PID_A; else pid=$RIG_PID_B; fi
  shift
  nsenter -t "$pid" -n -m "$@"
}

rig_cleanup() {
  local rc=$?
  set +e
  # bash reports each killed background job on stderr ("Killed"): noise here.
  exec 2>/dev/null
  for ((i = ${#RIG_PIDS[@]} - 1; i >= 0; i--)); do kill "${RIG_PIDS[i]}" 2>/dev/null; done
  sleep 0.3
  for ((i = ${#RIG_PIDS[@]} - 1; i >= 0; i--)); do kill -9 "${RIG_PIDS[i]}" 2>/dev/null; done
  # The mounts live in the servers' mount namespaces: gone with them, but
  # FUSE mounts are taken down first so that no daemon is left waiting.
  if [ -n "$RIG_T" ]; then
    for side in A B; do
      local pid=$([ $side = A ] && echo "${RIG_PID_A:-}" || echo "${RIG_PID_B:-}")
      [ -n "$pid" ] || continue
      for m in "$RIG_T/a/view" "$RIG_T/b/mnt" "$RIG_T/a/pool" "$RIG_T/b/pool"; do
        nsenter -t "$pid" -n -m umount -l "$m" 2>/dev/null
      done
    done
  fi
  [ -n "${RIG_PID_A:-}" ] && kill -9 "$RIG_PID_A" 2>/dev/null
  [ -n "${RIG_PID_B:-}" ] && kill -9 "$RIG_PID_B" 2>/dev/null
  wait 2>/dev/null
  for l in "${RIG_LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  if [ -n "$RIG_T" ] && [ "${HOODY_KEEP_RIG:-}" != 1 ]; then
    rm -rf --one-file-system "$RIG_T"
  fi
  exit $rc
}

rig_wait() {  # rig_wait SECONDS CMD...: until CMD succeeds
  local until=$((SECONDS + $1))
  shift
  while ! "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt "$until" ] || return 1
    sleep 0.05
  done
}

rig_pool() {  # rig_pool DIR SIDE SIZE_MB: a BTRFS loop pool mounted in SIDE
  local dir=$1 side=$2 mb=$3
  mkdir -p "$dir/pool"
  truncate -s "${mb}M" "$dir/pool.img"
  local loop
  loop=$(losetup -f --show "$dir/pool.img") || return 1
  RIG_LOOPS+=("$loop")
  mkfs.btrfs -q "$loop" >/dev/null || return 1
  rig_enter "$side" mount "$loop" "$dir/pool" || return 1
}

rig_daemon() {  # rig_daemon SIDE LOG CMD...: a background process in SIDE
  local side=$1 log=$2 pid
  shift 2
  if [ "$side" = A ]; then pid=$RIG_PID_A; else pid=$RIG_PID_B; fi
  # nsenter itself (not a function in a subshell): it execs CMD, so $! is
  # the daemon's pid.
  nsenter -t "$pid" -n -m "$@" >"$log" 2>&1 &
  RIG_PIDS+=($!)
}

# Brings both servers up.  $1: pool size in MiB (default 300).
rig_up() {
  local mb=${1:-300}
  RIG_T=$(mktemp -d "${HOODY_TEST_TMP:-/tmp}/hoody-remote.XXXXXX")
  trap rig_cleanup EXIT
  trap 'exit 143' TERM INT
  mkdir -p "$RIG_T/a" "$RIG_T/b"
  unshare -n -m --propagation private sleep infinity &
  RIG_PID_A=$!
  unshare -n -m --propagation private sleep infinity &
  RIG_PID_B=$!
  rig_wait 5 test -e "/proc/$RIG_PID_A/ns/net" || return 1
  sleep 0.1
  local va="hra$$" vb="hrb$$"
  ip link add "${va:0:15}" type veth peer name "${vb:0:15}" || return 1
  ip link set "${va:0:15}" netns "$RIG_PID_A" || return 1
  ip link set "${vb:0:15}" netns "$RIG_PID_B" || return 1
  rig_enter A sh -c "ip link set lo up && ip addr add 127.0.0.2/8 dev lo && ip addr add $RIG_A_IP/24 dev ${va:0:15} && ip link set ${va:0:15} up" || return 1
  rig_enter B sh -c "ip link set lo up && ip addr add 127.0.0.2/8 dev lo && ip addr add $RIG_B_IP/24 dev ${vb:0:15} && ip link set ${vb:0:15} up" || return 1

  rig_pool "$RIG_T/a" A "$mb" || return 1
  rig_pool "$RIG_T/b" B "$mb" || return 1
  POOL_A=$RIG_T/a/pool
  POOL_B=$RIG_T/b/pool
  VIEW_A=$RIG_T/a/view
  MNT_B=$RIG_T/b/mnt
  mkdir -p "$VIEW_A" "$MNT_B"
  # The pools are mounted in the servers' namespaces only: everything in
  # them is done there.
  rig_enter A mkdir -p "$POOL_A/containers/c1" || return 1
  rig_enter B mkdir -p "$POOL_B/containers/c2" || return 1
  rig_enter A btrfs subvolume create "$POOL_A/containers/c1/storage" >/dev/null || return 1
  rig_enter B btrfs subvolume create "$POOL_B/containers/c2/storage" >/dev/null || return 1
  share_a container add c1 >/dev/null || return 1
  share_b container add c2 >/dev/null || return 1
  rig_enter A sh -c 'cat >"$1"' _ "$POOL_A/server.conf" <<EOF
address = $RIG_A_IP
view = $VIEW_A
exports = $RIG_T/a/exports.conf
ganesha_pid = $RIG_T/a/ganesha.pid
nfs_port = $RIG_NFS_PORT
mount_port = $RIG_MNT_PORT
peer_command = nsenter -t $RIG_PID_B -n -m $HOODY_SHARE --pool $POOL_B
EOF
  rig_enter B sh -c 'cat >"$1"' _ "$POOL_B/server.conf" <<EOF
address = $RIG_B_IP
peer_command = nsenter -t $RIG_PID_A -n -m $HOODY_SHARE --pool $POOL_A
EOF
  : >"$RIG_T/a/exports.conf"
  cat >"$RIG_T/a/ganesha.conf" <<EOF
NFS_CORE_PARAM { NFS_Port = $RIG_NFS_PORT; MNT_Port = $RIG_MNT_PORT; Enable_NLM = false;
  Enable_RQUOTA = false; NFS_Protocols = 3; Enable_UDP = false;
  Plugins_Dir = "/usr/lib/x86_64-linux-gnu/ganesha"; }
NFSV4 { Graceless = true; RecoveryRoot = "$RIG_T/a/recov"; }
%include "$RIG_T/a/exports.conf"
EOF
  # A: the export view, rpcbind, ganesha (private /run/rpcbind, /run/ganesha).
  # allow_other: ganesha acts as the squashed uid (the source's owner), not as root.
  rig_daemon A "$RIG_T/a/view.log" "$HOODY_SHAREFS" -f -o exports,allow_other "$POOL_A" "$VIEW_A"
  rig_wait 10 rig_enter A test -d "$VIEW_A/.hoody" || { cat "$RIG_T/a/view.log" >&2; return 1; }
  # (the directories may be missing where no rpcbind or ganesha ever ran)
  rig_enter A sh -c 'mkdir -p /run/rpcbind /run/ganesha && mount -t tmpfs tmpfs /run/rpcbind && mount -t tmpfs tmpfs /run/ganesha' || return 1
  rig_daemon A "$RIG_T/a/rpcbind.log" rpcbind -f
  rig_wait 10 rig_enter A rpcinfo -p 127.0.0.1 || { rig_note "rpcbind did not come up"; return 1; }
  rig_daemon A "$RIG_T/a/ganesha.out" ganesha.nfsd -F -f "$RIG_T/a/ganesha.conf" -L "$RIG_T/a/ganesha.log" \
    -p "$RIG_T/a/ganesha.pid" -N NIV_EVENT
  rig_wait 20 rig_enter A rpcinfo -t 127.0.0.1 nfs 3 || { tail -20 "$RIG_T/a/ganesha.log" >&2; return 1; }
  rig_wait 5 test -s "$RIG_T/a/ganesha.pid" || return 1
  # B: container c2's shares.
  rig_daemon B "$RIG_T/b/sharefs.log" "$HOODY_SHAREFS" -f -o container=c2 "$POOL_B" "$MNT_B"
  rig_wait 10 rig_enter B test -d "$MNT_B/.hoody" || { cat "$RIG_T/b/sharefs.log" >&2; return 1; }
  return 0
}

share_a() { rig_enter A "$HOODY_SHARE" --pool "$POOL_A" "$@"; }
share_b() { rig_enter B "$HOODY_SHARE" --pool "$POOL_B" "$@"; }

# The export url of share ID (as A's hoody-share writes it).
rig_url() { echo "nfs://$RIG_A_IP$VIEW_A/$1?nfsport=$RIG_NFS_PORT&mountport=$RIG_MNT_PORT"; }
