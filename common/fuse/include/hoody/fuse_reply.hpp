// The one reply site of an op that answers with an error or an entry: every
// FUSE layer (the passthrough core, the daemons' own ops) uses these instead of
// calling fuse_reply_err/fuse_reply_entry in each branch.
#pragma once

#include <fuse_lowlevel.h>

#include <concepts>
#include <string>

#include "hoody/result.hpp"

namespace hoody {

// Status ok answers 0 (success for ops that return nothing), else its errno.
inline void reply(fuse_req_t req, Status s) { fuse_reply_err(req, s.err()); }

// An entry-returning op: the entry, or its errno.  (A template, so that a bare
// fail(...) picks the Status overload above.)
template <typename Entry>
  requires std::same_as<Entry, fuse_entry_param>
void reply(fuse_req_t req, const Result<Entry>& e) {
  if (e)
    fuse_reply_entry(req, &*e);
  else
    fuse_reply_err(req, e.err());
}

// getxattr/listxattr: the value's size when the caller asks for it (size 0),
// ERANGE when it does not fit, else the bytes.
inline void reply_xattr(fuse_req_t req, const Result<std::string>& v, size_t size) {
  if (!v)
    fuse_reply_err(req, v.err());
  else if (size == 0)
    fuse_reply_xattr(req, v->size());
  else if (v->size() > size)
    fuse_reply_err(req, ERANGE);
  else
    fuse_reply_buf(req, v->data(), v->size());
}

}  // namespace hoody
