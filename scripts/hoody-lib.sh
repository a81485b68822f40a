# shellcheck shell=bash
# Shared by hoody-up and hoody-down (sourced; PROG names the caller).

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }

# The paths go into fstab lines and mountinfo lookups: no blanks or escapes.
check_path() {
  [[ "$1" =~ ^[A-Za-z0-9/._+@:=-]*$ ]] || die "path '$1': use letters, digits and / . _ + @ : = -"
}
check_id() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "container id '$1': use letters, digits, '.', '_' and '-'"
  case "$1" in
    *.fstab|*.host|*.lock) die "container id '$1': the names *.fstab, *.host, *.lock are RUN's own files" ;;
  esac
}

# One hoody-up or hoody-down at a time per RUN (a unit per container may
# start several at once).
lock_run() {
  mkdir -p "$RUN"
  exec 9>"$RUN/.lock"
  flock -w 120 9 || die "another hoody-up or hoody-down holds $RUN/.lock"
}

# The mount at exactly $1 in this namespace, from mountinfo (no stat: a dead
# FUSE mount answers ENOTCONN): "none", else its fstype.
mounted_type() {
  awk -v p="$1" '$5 == p { for (i = 7; $i != "-"; i++); t = $(i + 1) } END { print t ? t : "none" }' \
    /proc/self/mountinfo
}

# The source of the mount at exactly $1 ("" when none).
mounted_source() {
  awk -v p="$1" '$5 == p { for (i = 7; $i != "-"; i++); s = $(i + 2) } END { print s }' \
    /proc/self/mountinfo
}

# The mounts an older hoody-up (one container, each path mounted on its own)
# left at ROOT/hoody and ROOT/ramdisk ($1 = ROOT): printed one a line.
legacy_mounts() {
  local root=$1 m
  [ "$(mounted_type "$root/hoody")" = none ] || return 0  # today's view: one bind of RUN/C
  for m in .snapshots databases shares storage; do
    [ "$(mounted_type "$root/hoody/$m")" = none ] || echo "$root/hoody/$m"
  done
  [ "$(mounted_source "$root/ramdisk")" != hoody-ramdisk ] || echo "$root/ramdisk"
}

# A FUSE mount at $1: "none", "live", "dead" (its daemon is gone: statfs
# answers ENOTCONN), "hung" (no answer to statfs within 5 s) or "error: WHY"
# (statfs failed otherwise: the daemon answered, so it is not dead).  Only
# ENOTCONN is taken for dead: a daemon that is slow or busy on a loaded
# machine must never be replaced while it still serves.
fuse_state() {
  [ "$(mounted_type "$1")" != none ] || { echo none; return 0; }
  # The probe runs in the background and is not waited for past 5 s: with FUSE
  # over io_uring a request is handed to the daemon at once, and the caller of a
  # stopped daemon then waits unkillably (timeout(1) would wait with it).  A late
  # probe writes its status to the file unlinked below.  It writes "STATUS
  # ERROR-MESSAGE" in one line.
  local out line rc err i
  out=$(mktemp)
  ( e=$(LC_ALL=C stat -f "$1" 2>&1 >/dev/null); r=$?; echo "$r ${e//$'\n'/ }" >&3 ) 3>"$out" </dev/null >/dev/null 2>&1 &
  for i in $(seq 50); do
    [ -s "$out" ] && break
    sleep 0.1
  done
  line=$(cat "$out")
  rm -f "$out"
  rc=${line%% *} err=${line#* }
  case $rc in
    0) echo live ;;
    "") echo hung ;;
    *)
      case "$err" in
        *"not connected"*) echo dead ;;
        *) echo "error: ${err:-exit $rc}" ;;
      esac ;;
  esac
}

# Whether process $1 runs (a zombie does not).
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [ "${st%% *}" != Z ]
}

# The processes serving the FUSE mount at $1: a hoody daemon whose last
# argument is $1 (hoody-up starts them so).
daemon_pids() {
  local p args
  for p in /proc/[0-9]*; do
    mapfile -d '' -t args <"$p/cmdline" 2>/dev/null || continue
    [ ${#args[@]} -ge 2 ] || continue
    case "${args[0]##*/}" in hoody-dbfs|hoody-snapfs|hoody-sharefs) ;; *) continue ;; esac
    [ "${args[${#args[@]}-1]}" = "$1" ] && echo "${p#/proc/}"
  done
  return 0
}

# Stop processes $@: SIGTERM, wait up to 10 s for them to exit, then SIGKILL
# and wait up to 5 s more.  Returns 1 (and says so) when one is still there.
stop_pids() {
  local p i left=("$@")
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  kill -CONT "$@" 2>/dev/null || true  # (a stopped one handles its SIGTERM)
  for i in $(seq 150); do
    left=()
    for p in "$@"; do alive "$p" && left+=("$p"); done
    [ ${#left[@]} = 0 ] && return 0
    [ "$i" = 100 ] && kill -KILL "${left[@]}" 2>/dev/null
    sleep 0.1
  done
  say "processes still running after SIGKILL: ${left[*]}"
  return 1
}
