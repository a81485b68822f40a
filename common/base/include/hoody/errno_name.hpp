// errno values as the names people and programs read: "EBUSY", not 16 or
// "Device or resource busy".  The control channels (dbfs, snapfs) and the
// audit trail put these on the wire; errno_from_name reads them back.
#pragma once

#include <string>

namespace hoody {

// "EBUSY" for EBUSY (or -EBUSY); "ok" for 0; "E<number>" for a value without a name.
std::string errno_name(int err);

// The inverse of errno_name ("E<number>" too); EIO for a name it does not know.
int errno_from_name(const std::string& name);

}  // namespace hoody
