#!/bin/bash
# Issue 9 items 4-5: shares across servers, on one machine.  Server A (owner
# c1) and server B (receiver c2) are two network + mount namespaces with
# their own BTRFS pools (remote_rig.sh); A exports through nfs-ganesha, B's
# hoody-sharefs reaches the export with libnfs.  Each case prints ok/not ok;
# the exit status is 1 if any failed (77: skipped, never under CI=true).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/remote_rig.sh"
rig_require

FAILED=0
ok() { echo "ok - $*"; }
not_ok() { echo "not ok - $*"; FAILED=1; }
check() {  # check NAME 'shell code' (evaluated here: the rig's functions work)
  if eval "$2"; then ok "$1"; else not_ok "$1"; fi
}

rig_up || { echo "not ok - the two servers came up"; exit 1; }
ok "two servers: namespaces, pools, export view, rpcbind, ganesha, hoody-sharefs"
S=$POOL_A/containers/c1/storage
EXPORTS=$RIG_T/a/exports.conf
inA() { rig_enter A "$@"; }
inB() { rig_enter B "$@"; }
# A python snippet in B: prints what it found, exit status 0 when it passed.
pyB() { inB python3 - "$@"; }
last_export_id() { grep -o 'Export_Id = [0-9]*' "$EXPORTS" | awk '{print $3}' | sort -n | tail -1; }

inA sh -c "mkdir -p $S/docs $S/ro/sub && echo hello >$S/docs/hello.txt && echo keep >$S/ro/keep.txt && echo deep >$S/ro/sub/x"

# ---- a rw share: offered, accepted (CLI), read and written --------------------
share_a offer --from c1:docs --to c2@$RIG_B_IP --rw docs >/dev/null
ID_DOCS=$(last_export_id)
check "offer --to c2@SERVER: B's registry has the offer with A's export url" \
  'share_b list --container c2 --json | grep -q "\"url\": \"nfs://$RIG_A_IP"'
check "the offer shows in B's .pending" 'inB test -d "$MNT_B/.pending/docs"'
check "one export, B's address only, RW, all squashed" \
  'grep -q "Clients = $RIG_B_IP; Access_Type = RW" $EXPORTS && grep -q "Squash = All_Squash" $EXPORTS && [ $(grep -c "^EXPORT" $EXPORTS) = 1 ]'
check "the export refuses another client (A itself)" '! inA nfs-ls "$(rig_url $ID_DOCS)" >/dev/null 2>&1'
share_b accept --container c2 docs >/dev/null
check "accept on B reaches A's registry (receipt c2@B accepted)" 'share_a list | grep -q "c2@$RIG_B_IP:accepted"'
rig_wait 3 inB test -f "$MNT_B/docs/hello.txt"
check "read through the remote share" '[ "$(inB cat $MNT_B/docs/hello.txt)" = hello ]'
pyB "$MNT_B/docs" <<'PY'
import os, sys
d = sys.argv[1]
with open(d + "/new.txt", "w") as f: f.write("x" * 100000)
with open(d + "/new.txt", "a") as f: f.write("tail")
os.mkdir(d + "/dir")
os.rename(d + "/new.txt", d + "/dir/moved.txt")
os.truncate(d + "/dir/moved.txt", 50000)
with open(d + "/gone.txt", "w") as f: f.write("bye")
os.unlink(d + "/gone.txt")
os.symlink("../hello.txt", d + "/dir/link")
os.chmod(d + "/hello.txt", 0o640)
with open(d + "/dir/moved.txt", "r+b") as f:
    f.seek(10); f.write(b"ZZ")
with open(d + "/r1", "w") as f: f.write("one")
with open(d + "/r2", "w") as f: f.write("two")
os.stat(d + "/r2")
os.rename(d + "/r1", d + "/r2")  # over an existing file
over = open(d + "/r2").read() == "one" and not os.path.exists(d + "/r1")
os.unlink(d + "/r2")
st = os.stat(d + "/dir/moved.txt")
names = sorted(os.listdir(d))
ok = over and st.st_size == 50000 and names == ["dir", "hello.txt"] and os.readlink(d + "/dir/link") == "../hello.txt"
print("# rw ops:", st.st_size, names)
sys.exit(0 if ok else 1)
PY
check "write, append, mkdir, rename (also over a file), truncate, unlink, symlink, chmod, readdir on B" "[ $? = 0 ]"
check "B's changes are in A's storage" \
  'inA sh -c "[ \$(stat -c %s $S/docs/dir/moved.txt) = 50000 ] && [ \$(head -c 12 $S/docs/dir/moved.txt) = xxxxxxxxxxZZ ] && [ ! -e $S/docs/gone.txt ] && [ \$(stat -c %a $S/docs/hello.txt) = 640 ] && [ \$(readlink $S/docs/dir/link) = ../hello.txt ]"'
# Locks on a remote share are B's own (NFSv3 through libnfs has no lock
# protocol), as on an NFS mount with "nolock": B's processes exclude each
# other (fcntl and flock), and a close drops a process's fcntl locks.
pyB "$MNT_B/docs/hello.txt" <<'PY'
import fcntl, os, sys
p = sys.argv[1]
def other(kind):
    pid = os.fork()
    if pid == 0:
        f = open(p, "r+")
        try:
            if kind == "flock": fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else: fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            os._exit(0)
        except OSError: os._exit(1)
    return os.waitpid(pid, 0)[1] >> 8
f = open(p, "r+")
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
held = other("lockf")
open(p).close()  # any close by this process drops its fcntl locks
freed = other("lockf")
g = open(p)
fcntl.flock(g, fcntl.LOCK_EX | fcntl.LOCK_NB)
fheld = other("flock")
g.close()
ffreed = other("flock")
print("# remote locks: held %d freed %d flock held %d freed %d" % (held, freed, fheld, ffreed))
sys.exit(0 if (held, freed, fheld, ffreed) == (1, 0, 1, 0) else 1)
PY
check "locks on B's remote share: fcntl and flock exclude B's processes; a close drops fcntl locks" "[ $? = 0 ]"
inA sh -c "echo from-owner >$S/docs/owner.txt"
sleep 0.7  # the remote share's attribute/entry timeout is 0.5 s
check "A's change is seen on B" '[ "$(inB cat $MNT_B/docs/owner.txt)" = from-owner ]'

# ---- a ro share: EROFS for every mutating call ----------------------------------
share_a offer --from c1:ro --to c2@$RIG_B_IP --ro rodocs >/dev/null
check "ro export is RO" 'grep -q "Clients = $RIG_B_IP; Access_Type = RO" $EXPORTS'
rig_wait 3 inB test -d "$MNT_B/.pending/rodocs"
inB mv "$MNT_B/.pending/rodocs" "$MNT_B/rodocs"   # accept through the mount
check "accepted with mv .pending/NAME NAME" 'inB test -f "$MNT_B/rodocs/keep.txt"'
a_says() { share_a list --all | grep -w "$1" | grep -q "c2@$RIG_B_IP:$2"; }
check "... and A's registry learns it (the daemon tells the owner's server)" 'rig_wait 5 a_says rodocs accepted'
pyB "$MNT_B/rodocs" <<'PY'
import errno, os, sys
d = sys.argv[1]
calls = {
  "open-write": lambda: open(d + "/keep.txt", "w"),
  "open-append": lambda: open(d + "/keep.txt", "a"),
  "create": lambda: open(d + "/new", "x"),
  "truncate": lambda: os.truncate(d + "/keep.txt", 0),
  "mkdir": lambda: os.mkdir(d + "/nd"),
  "rmdir": lambda: os.rmdir(d + "/sub"),
  "unlink": lambda: os.unlink(d + "/keep.txt"),
  "rename": lambda: os.rename(d + "/keep.txt", d + "/k2"),
  "symlink": lambda: os.symlink("x", d + "/l"),
  "link": lambda: os.link(d + "/keep.txt", d + "/h"),
  "chmod": lambda: os.chmod(d + "/keep.txt", 0o600),
  "chown": lambda: os.chown(d + "/keep.txt", 1, 1),
  "utime": lambda: os.utime(d + "/keep.txt", (1, 1)),
  "setxattr": lambda: os.setxattr(d + "/keep.txt", "user.x", b"1"),
  "mknod": lambda: os.mkfifo(d + "/fifo"),
}
bad = []
for name, f in calls.items():
    try:
        f()
        bad.append(name + ":succeeded")
    except OSError as e:
        if e.errno != errno.EROFS:
            bad.append(name + ":" + errno.errorcode.get(e.errno, str(e.errno)))
print("# ro refusals that are not EROFS:", bad)
ok = not bad and open(d + "/keep.txt").read() == "keep\n"
sys.exit(0 if ok else 1)
PY
check "ro remote share: EROFS for write, append, create, truncate, mkdir, rmdir, unlink, rename, symlink, link, chmod, chown, utime, setxattr, mknod" "[ $? = 0 ]"
ID_RO=$(last_export_id)
check "rw: the export takes a write from B directly (the control of the next case)" \
  'inB nfs-cp /etc/hostname "nfs://$RIG_A_IP$VIEW_A/$ID_DOCS/direct?nfsport=$RIG_NFS_PORT&mountport=$RIG_MNT_PORT" >/dev/null 2>&1'
check "ro: the export itself refuses a write (libnfs from B, past hoody-sharefs)" \
  '! inB nfs-cp /etc/hostname "nfs://$RIG_A_IP$VIEW_A/$ID_RO/direct?nfsport=$RIG_NFS_PORT&mountport=$RIG_MNT_PORT" >/dev/null 2>&1'
check "ro: A's storage unchanged" 'inA sh -c "[ \$(cat $S/ro/keep.txt) = keep ] && [ \$(ls $S/ro | wc -l) = 2 ]"'

inB rmdir "$MNT_B/rodocs"   # leave through the mount
check "left with rmdir NAME: A's receipt is left and the export removed" \
  'rig_wait 5 a_says rodocs left && rig_wait 5 eval "! grep -q \"Export_Id = $ID_RO;\" $EXPORTS"'

# ---- squashed ids: B's root acts as the owner of the shared directory ------------------
inA sh -c "mkdir -p $S/sq && chown 1234:2345 $S/sq"
share_a offer --from c1:sq --to c2@$RIG_B_IP --rw sq >/dev/null
check "the export squashes every caller to the source's owner" \
  'grep -A12 "Export_Id = $(last_export_id);" $EXPORTS | grep -q "Anonymous_Uid = 1234;"'
share_b accept --container c2 sq >/dev/null
rig_wait 3 inB test -d "$MNT_B/sq"
inB sh -c "echo mine >$MNT_B/sq/by-root-on-b"
check "a file B's root creates belongs to 1234:2345 on A, not to root" \
  '[ "$(inA stat -c %u:%g $S/sq/by-root-on-b)" = 1234:2345 ]'
share_a revoke sq >/dev/null

# ---- sequential reads are read ahead; a write makes what was read ahead stale ------
# O_DIRECT reads reach the daemon at the offsets asked (no page cache between):
# a sequential run starts the read-ahead past the offset written next, through
# another descriptor; the read of that offset must give the new bytes.
inA sh -c "head -c 3158357 /dev/urandom >$S/docs/seq.bin"
rig_wait 5 inB test -f "$MNT_B/docs/seq.bin"
check "sequential reads (read ahead) give the file as A has it, to its odd-sized end" \
  '[ "$(inB sha256sum <$MNT_B/docs/seq.bin)" = "$(inA sha256sum <$S/docs/seq.bin)" ]'
after_write() {
  pyB "$MNT_B/docs/seq.bin" <<'PY'
import mmap, os, sys
p, K = sys.argv[1], 128 * 1024
buf = mmap.mmap(-1, K)
fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
for i in range(4):  # 0..512K: sequential, the read-ahead runs past 640K
    assert os.preadv(fd, [buf], i * K) == K
wfd = os.open(p, os.O_WRONLY)
os.pwrite(wfd, b"N" * 4096, 5 * K)
os.close(wfd)
got = []
for i in (4, 5):
    assert os.preadv(fd, [buf], i * K) == K
    got.append(bytes(buf[:4096]))
os.close(fd)
print("# 640K read back after the write:", got[1][:8])
sys.exit(0 if got[1] == b"N" * 4096 else 1)
PY
}
check "a write after a sequential read started is read back, never data read ahead before it" after_write

# ---- mode rw -> ro across servers -------------------------------------------------
share_a mode --ro docs >/dev/null
check "mode --ro on A: the export is RO" 'grep -A12 "Export_Id = $ID_DOCS;" $EXPORTS | grep -q "Access_Type = RO; }"'
check "mode --ro on A: B's writes give EROFS" \
  'inB sh -c "echo x >>$MNT_B/docs/hello.txt" 2>&1 | grep -q "Read-only file system"'
share_a mode --rw docs >/dev/null
rig_wait 2 inB sh -c "echo x >>$MNT_B/docs/hello.txt"
check "mode --rw on A: B writes again" '[ "$(inB tail -1 $MNT_B/docs/hello.txt)" = x ]'

# ---- revoked while a file is open: ESTALE/EACCES within 1 s ----------------------------
inB python3 - "$MNT_B/docs/hello.txt" "$RIG_T/b/ready" "$RIG_T/b/revoke-result" <<'PY' &
import errno, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
os.pread(fd, 100, 0)
open(sys.argv[2], "w").close()
deadline = time.time() + 20
while time.time() < deadline:
    try:
        os.pread(fd, 100, 0)
    except OSError as e:
        t = time.time()
        open(sys.argv[3], "w").write("%s %.6f\n" % (errno.errorcode.get(e.errno, e.errno), t))
        sys.exit(0)
    time.sleep(0.01)
open(sys.argv[3], "w").write("none 0\n")
PY
READER=$!
rig_wait 10 test -e "$RIG_T/b/ready"
T0=$(date +%s.%N)
share_a revoke docs >/dev/null
T1=$(date +%s.%N)
wait $READER
read -r ERR TFAIL <"$RIG_T/b/revoke-result"
LAT=$(python3 -c "print('%.3f' % ($TFAIL - $T0))")
echo "# revoke: hoody-share revoke took $(python3 -c "print('%.3f' % ($T1 - $T0))") s; the open file failed with $ERR $LAT s after it began"
check "revoked while open: the open file fails with ESTALE or EACCES within 1 s" \
  'case $ERR in ESTALE|EACCES) python3 -c "import sys; sys.exit(0 if $LAT < 1.0 else 1)";; *) false;; esac'
check "revoked: the share is gone from B's mount" '! inB test -e $MNT_B/docs'
check "revoked: B's registry says revoked" 'share_b list --all | grep docs | grep -q revoked'
check "revoked: the export is removed from ganesha's config" '! grep -q "Export_Id = $ID_DOCS;" $EXPORTS'
check "revoked: the export is gone (libnfs from B cannot mount it)" '! inB nfs-ls "$(rig_url $ID_DOCS)" >/dev/null 2>&1'

# ---- reject across servers removes the export ---------------------------------------
share_a offer --from c1:docs --to c2@$RIG_B_IP --ro declined >/dev/null
ID_DECL=$(last_export_id)
share_b reject --container c2 declined >/dev/null
check "reject on B: A's receipt is rejected and the export removed" \
  'share_a list --all | grep -q "c2@$RIG_B_IP:rejected" && ! grep -q "Export_Id = $ID_DECL;" $EXPORTS'

# ---- container remove, on either side, reaches the other -------------------------------
inA mkdir -p "$POOL_A/containers/c3/storage"
share_a container add c3 >/dev/null
share_a offer --from c3:. --to c2@$RIG_B_IP --rw bye >/dev/null
share_b accept --container c2 bye >/dev/null
share_a container remove c3 >/dev/null
check "container remove on A: its share is revoked on B and unexported" \
  'share_b list --all | grep -w bye | grep -q revoked && [ $(grep -c "^EXPORT" $EXPORTS) = 0 ]'
share_b container add c4 >/dev/null
share_a offer --from c1:docs --to c4@$RIG_B_IP --ro forc4 >/dev/null
check "an offer to c4@B is exported" '[ $(grep -c "^EXPORT" $EXPORTS) = 1 ]'
share_b container remove c4 >/dev/null
check "container remove on B: A's receipt is rejected and the export removed" \
  'share_a list --all | grep -w forc4 | grep -q "c4@$RIG_B_IP:rejected" && [ $(grep -c "^EXPORT" $EXPORTS) = 0 ]'

# ---- a revoke the receiver's server does not hear of: the export is gone all the same ----
share_a offer --from c1:docs --to c2@$RIG_B_IP --rw docs2 >/dev/null
share_b accept --container c2 docs2 >/dev/null
rig_wait 3 inB test -f "$MNT_B/docs2/hello.txt"
check "docs2 served on B" '[ "$(inB head -1 $MNT_B/docs2/hello.txt)" = hello ]'
inA sed -i "s|^peer_command.*|peer_command = false|" "$POOL_A/server.conf"
check "revoke with B unreachable: refused for the peer, the export removed" \
  '! share_a revoke docs2 2>/dev/null && [ $(grep -c "^EXPORT" $EXPORTS) = 0 ]'
T0=$(date +%s.%N)
b_open_fails() { ! inB cat "$MNT_B/docs2/owner.txt" >/dev/null 2>&1; }
rig_wait 1 b_open_fails && IN_TIME=1 || IN_TIME=0
ERRMSG=$(inB cat "$MNT_B/docs2/owner.txt" 2>&1 >/dev/null)
echo "# B, not told of the revoke, opens a file of it: $ERRMSG ($(python3 -c "import time; print('%.3f' % (time.time() - $T0))") s)"
check "... B's next open fails within 1 s (the export is gone)" '[ $IN_TIME = 1 ] && [ -n "$ERRMSG" ]'

# ---- an unreachable peer: the offer is withdrawn --------------------------------------
check "offer to a server that does not answer is refused" '! share_a offer --from c1:docs --to c2@$RIG_B_IP --ro lost 2>/dev/null'
check "... and withdrawn: revoked, nothing exported" \
  'share_a list --all | grep -w lost | grep -q revoked && [ $(grep -c "^EXPORT" $EXPORTS) = 0 ]'

if [ $FAILED != 0 ]; then
  echo "--- B's hoody-sharefs log"; tail -30 "$RIG_T/b/sharefs.log"
  echo "--- A's export view log"; tail -15 "$RIG_T/a/view.log"
  echo "--- ganesha log"; grep -v -i 'dbus\|krb5\|principal' "$RIG_T/a/ganesha.log" | tail -15
fi
exit $FAILED
