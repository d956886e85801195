// How every shim function reports a C++ exception to Rust (src/failure.rs `ShimError`): it runs
// its body in `lipctl_guard`, which catches everything (no exception may unwind into Rust) and
// copies the message, truncated and NUL-terminated, into the caller's buffer `err[err_len]`.
#pragma once

#include <cstring>
#include <exception>

namespace lipctl {

inline void copy_message(const char* what, char* err, long err_len) {
  if (err && err_len > 0) {
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = 0;
  }
}

// `body()`'s return value, or -1 with the exception's message in `err` when it throws.
template <class F>
int guard(char* err, long err_len, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    copy_message(e.what(), err, err_len);
  } catch (...) {
    copy_message("unknown C++ exception", err, err_len);
  }
  return -1;
}

}  // namespace lipctl
