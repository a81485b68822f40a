#include <doctest/doctest.h>

#include "lock/sqlite_policy.hpp"

using namespace hoody::dbfs::lock;

namespace {
constexpr auto R = LockType::read;
constexpr auto W = LockType::write;
constexpr auto U = LockType::unlock;
constexpr auto RB = JournalMode::rollback;
constexpr auto WL = JournalMode::wal;
const OwnerView kNone{};
}  // namespace

TEST_CASE("classify by suffix") {
  CHECK(classify("app.db") == FileKind::plain);
  CHECK(classify("app.db-journal") == FileKind::journal);
  CHECK(classify("app.db-wal") == FileKind::wal);
  CHECK(classify("app.db-shm") == FileKind::shm);
  CHECK(classify("-wal") == FileKind::plain);
  CHECK(database_name("app.db-shm") == "app.db");
  CHECK(database_name("app.db") == "app.db");
  CHECK(journal_mode_from_header(2, 2) == WL);
  CHECK(journal_mode_from_header(1, 1) == RB);
  CHECK(journal_mode_from_header(0, 0) == RB);
}

TEST_CASE("rollback db requests") {
  const auto db = FileKind::sqlite_db;
  CHECK(classify_request(db, RB, R, kPendingByte, kPendingByte, kNone) == Action::txn_start);
  OwnerView shared{.holds_any = true};
  CHECK(classify_request(db, RB, R, kPendingByte, kPendingByte, shared) == Action::connect);
  CHECK(classify_request(db, RB, R, kSharedFirst, kSharedLast, shared) == Action::connect);
  CHECK(classify_request(db, RB, W, kReservedByte, kReservedByte, shared) == Action::write_intent);
  OwnerView reserved{.holds_any = true, .holds_reserved = true};
  CHECK(classify_request(db, RB, W, kPendingByte, kPendingByte, reserved) == Action::commit);
  CHECK(classify_request(db, RB, W, kSharedFirst, kSharedLast, reserved) == Action::commit);
  // SHARED->EXCLUSIVE with and without PENDING: probes.
  CHECK(classify_request(db, RB, W, kPendingByte, kPendingByte, shared) == Action::excl_probe);
  CHECK(classify_request(db, RB, W, kSharedFirst, kSharedLast, shared) == Action::excl_probe);
  OwnerView excl{.holds_any = true, .holds_reserved = true, .holds_shared_w = true};
  CHECK(classify_request(db, RB, R, kSharedFirst, kSharedLast, excl) == Action::downgrade);
  CHECK(classify_request(db, RB, U, 0, kToEof, excl) == Action::unlock);
  // Bytes outside SQLite's: plain POSIX.
  CHECK(classify_request(db, RB, W, 0, 99, kNone) == Action::plain);
  CHECK(classify_request(db, RB, W, 0, kToEof, kNone) == Action::plain);
  CHECK(classify_request(FileKind::plain, RB, R, kPendingByte, kPendingByte, kNone) ==
        Action::plain);
}

TEST_CASE("WAL db SHARED is a connect, never a transaction start") {
  const auto db = FileKind::sqlite_db;
  CHECK(classify_request(db, WL, R, kPendingByte, kPendingByte, kNone) == Action::connect);
  CHECK(classify_request(db, WL, R, kSharedFirst, kSharedLast, kNone) == Action::connect);
  OwnerView shared{.holds_any = true};
  CHECK(classify_request(db, WL, W, kPendingByte, kPendingByte, shared) == Action::try_only);
  CHECK(classify_request(db, WL, W, kSharedFirst, kSharedLast, shared) == Action::try_only);
}

TEST_CASE("shm requests") {
  const auto shm = FileKind::shm;
  for (std::uint64_t b = kWalReadLock0; b <= kWalReadLockLast; ++b) {
    CHECK(classify_request(shm, WL, R, b, b, kNone) == Action::txn_start);
    CHECK(classify_request(shm, WL, R, b, b, OwnerView{.holds_read_mark = true}) ==
          Action::try_only);
    CHECK(classify_request(shm, WL, W, b, b, kNone) == Action::try_only);
  }
  CHECK(classify_request(shm, WL, W, 124, 127, kNone) == Action::try_only);  // restart n=4
  CHECK(classify_request(shm, WL, W, kWalWriteLock, kWalWriteLock, kNone) == Action::wal_write);
  CHECK(classify_request(shm, WL, R, kWalWriteLock, kWalWriteLock, kNone) == Action::try_only);
  CHECK(classify_request(shm, WL, W, kWalCkptLock, kWalCkptLock, kNone) == Action::try_only);
  CHECK(classify_request(shm, WL, W, kWalCkptLock, kWalRecoverLock, kNone) == Action::try_only);
  CHECK(classify_request(shm, WL, R, kWalRecoverLock, kWalRecoverLock, kNone) == Action::try_only);
  CHECK(classify_request(shm, WL, W, kWalDms, kWalDms, kNone) == Action::try_only);
  CHECK(classify_request(shm, WL, R, kWalDms, kWalDms, kNone) == Action::dms_attach);
  CHECK(classify_request(shm, WL, W, 0, 119, kNone) == Action::plain);
  CHECK(classify_request(shm, WL, W, 129, 129, kNone) == Action::plain);
}
