#include "lock/sqlite_policy.hpp"

namespace hoody::dbfs::lock {

const char* to_string(FileKind k) {
  switch (k) {
    case FileKind::plain: return "plain";
    case FileKind::sqlite_db: return "db";
    case FileKind::journal: return "journal";
    case FileKind::wal: return "wal";
    case FileKind::shm: return "shm";
  }
  return "?";
}

const char* to_string(JournalMode m) { return m == JournalMode::wal ? "wal" : "rollback"; }

const char* to_string(Action a) {
  switch (a) {
    case Action::plain: return "plain";
    case Action::unlock: return "unlock";
    case Action::try_only: return "try";
    case Action::txn_start: return "txn_start";
    case Action::connect: return "connect";
    case Action::write_intent: return "write_intent";
    case Action::commit: return "commit";
    case Action::excl_probe: return "excl_probe";
    case Action::downgrade: return "downgrade";
    case Action::wal_write: return "wal_write";
    case Action::dms_attach: return "dms_attach";
  }
  return "?";
}

namespace {
constexpr std::string_view kSuffixes[] = {"-journal", "-wal", "-shm"};
constexpr FileKind kSuffixKinds[] = {FileKind::journal, FileKind::wal, FileKind::shm};
}  // namespace

FileKind classify(std::string_view name) {
  for (std::size_t i = 0; i < std::size(kSuffixes); ++i) {
    const auto s = kSuffixes[i];
    if (name.size() > s.size() && name.substr(name.size() - s.size()) == s) return kSuffixKinds[i];
  }
  return FileKind::plain;
}

std::string_view database_name(std::string_view name) {
  for (const auto s : kSuffixes)
    if (name.size() > s.size() && name.substr(name.size() - s.size()) == s)
      return name.substr(0, name.size() - s.size());
  return name;
}

JournalMode journal_mode_from_header(std::uint8_t byte18, std::uint8_t byte19) {
  return (byte18 == 2 || byte19 == 2) ? JournalMode::wal : JournalMode::rollback;
}

bool is_sqlite_lock_range(FileKind kind, std::uint64_t start, std::uint64_t end) {
  switch (kind) {
    case FileKind::sqlite_db: return start >= kPendingByte && end <= kSharedLast;
    case FileKind::shm: return start >= kWalWriteLock && end <= kWalDms;
    default: return false;
  }
}

namespace {

bool is(std::uint64_t start, std::uint64_t end, std::uint64_t s, std::uint64_t e) {
  return start == s && end == e;
}

Action classify_db(JournalMode mode, LockType type, std::uint64_t start, std::uint64_t end,
                   const OwnerView& o) {
  const bool pending = is(start, end, kPendingByte, kPendingByte);
  const bool shared = is(start, end, kSharedFirst, kSharedLast);
  const bool reserved = is(start, end, kReservedByte, kReservedByte);
  if (mode == JournalMode::wal) {
    // The WAL-mode db SHARED is held for the life of the connection: never a
    // transaction start.  Its EXCLUSIVE is only ever a probe.
    if (type == LockType::read && (pending || shared)) return Action::connect;
    return Action::try_only;
  }
  if (type == LockType::read) {
    if (pending) return o.holds_any ? Action::connect : Action::txn_start;
    if (shared) return o.holds_shared_w ? Action::downgrade : Action::connect;
    return Action::try_only;
  }
  if (reserved) return Action::write_intent;
  if (pending || shared) return o.holds_reserved ? Action::commit : Action::excl_probe;
  return Action::try_only;
}

Action classify_shm(LockType type, std::uint64_t start, std::uint64_t end, const OwnerView& o) {
  const bool one = start == end;
  if (type == LockType::read) {
    if (one && start >= kWalReadLock0 && start <= kWalReadLockLast)
      return o.holds_read_mark ? Action::try_only : Action::txn_start;
    if (one && start == kWalDms) return Action::dms_attach;
    return Action::try_only;  // RDLCK 120 (read-only shm probe), 121, 122
  }
  if (one && start == kWalWriteLock) return Action::wal_write;
  return Action::try_only;  // read-mark exclusives, CKPT, RECOVER, DMS election
}

}  // namespace

Action classify_request(FileKind kind, JournalMode mode, LockType type, std::uint64_t start,
                        std::uint64_t end, const OwnerView& owner) {
  if (type == LockType::unlock) return Action::unlock;
  if (!is_sqlite_lock_range(kind, start, end)) return Action::plain;
  if (kind == FileKind::sqlite_db) return classify_db(mode, type, start, end, owner);
  return classify_shm(type, start, end, owner);
}

}  // namespace hoody::dbfs::lock
