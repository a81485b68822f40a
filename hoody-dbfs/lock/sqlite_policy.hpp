// SQLite's lock bytes and the classification of a lock request into what it
// means in SQLite's protocol (research/sqlite-locking.md §1.2, §1.3, §2.3, §2.4).
// Pure functions, no state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lock/range_table.hpp"

namespace hoody::dbfs::lock {

// Rollback lock bytes of the database file (src/os.h).
inline constexpr std::uint64_t kPendingByte = 0x40000000;
inline constexpr std::uint64_t kReservedByte = kPendingByte + 1;
inline constexpr std::uint64_t kSharedFirst = kPendingByte + 2;
inline constexpr std::uint64_t kSharedSize = 510;
inline constexpr std::uint64_t kSharedLast = kSharedFirst + kSharedSize - 1;
// WAL-index (-shm) lock bytes (os_unix.c UNIX_SHM_BASE, wal.c).
inline constexpr std::uint64_t kWalWriteLock = 120;
inline constexpr std::uint64_t kWalCkptLock = 121;
inline constexpr std::uint64_t kWalRecoverLock = 122;
inline constexpr std::uint64_t kWalReadLock0 = 123;  // WAL_READ_LOCK(i) = 123 + i, i = 0..4
inline constexpr std::uint64_t kWalReadLockLast = 127;
inline constexpr std::uint64_t kWalDms = 128;

enum class FileKind : std::uint8_t { plain, sqlite_db, journal, wal, shm };
enum class JournalMode : std::uint8_t { rollback, wal };

const char* to_string(FileKind k);
const char* to_string(JournalMode m);

// The kind a name suggests from its suffix: "-journal", "-wal", "-shm", else
// plain.  Whether a plain-looking file is an SQLite database is decided by the
// caller from the header magic "SQLite format 3\0" (sqlite_db).
FileKind classify(std::string_view name);
// The database name a file belongs to: the name without its suffix.
std::string_view database_name(std::string_view name);
// Journal mode from header bytes 18/19 (write/read version): 2 = WAL, else rollback.
JournalMode journal_mode_from_header(std::uint8_t byte18, std::uint8_t byte19);

// What the requesting owner already holds (on the file of the request).
struct OwnerView {
  bool holds_any = false;        // any lock on this file
  bool holds_reserved = false;   // rollback db: WRLCK on RESERVED_BYTE
  bool holds_shared_w = false;   // rollback db: WRLCK on the SHARED range
  bool holds_read_mark = false;  // shm: any lock on 123..127
};

// What a lock request means.  `plain` ranges keep exact POSIX semantics.
enum class Action : std::uint8_t {
  plain,         // not an SQLite lock byte: conflict -> EAGAIN (F_SETLK) or wait (F_SETLKW)
  unlock,        // F_UNLCK: always granted at once
  try_only,      // SQLite try-lock with its own fallback (§2.4): never queued
  txn_start,     // rollback RDLCK PENDING from nothing; shm RDLCK read-mark from none
  connect,       // db SHARED in WAL mode, rollback SHARED range: bounded wait, no token
  write_intent,  // rollback WRLCK RESERVED
  commit,        // rollback WRLCK PENDING/SHARED by the RESERVED holder
  excl_probe,    // rollback WRLCK PENDING/SHARED without RESERVED (hot journal, ...)
  downgrade,     // rollback RDLCK SHARED while holding it as WRLCK
  wal_write,     // shm WRLCK WAL_WRITE_LOCK (120)
  dms_attach,    // shm RDLCK DMS (128)
};
const char* to_string(Action a);

// True when [start, end] lies inside the SQLite lock bytes of that kind of file.
bool is_sqlite_lock_range(FileKind kind, std::uint64_t start, std::uint64_t end);

Action classify_request(FileKind kind, JournalMode mode, LockType type, std::uint64_t start,
                        std::uint64_t end, const OwnerView& owner);

}  // namespace hoody::dbfs::lock
