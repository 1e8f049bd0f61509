// One exception type for every user-facing error: it names the op (or file, or field),
// the shapes/dtypes/devices involved and the reason. Tools catch it at the top and exit 1.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cpoison {

class Error : public std::runtime_error {
public:
  Error(std::string where, std::string reason)
      : std::runtime_error(where + ": " + reason), where_(std::move(where)), reason_(std::move(reason)) {}
  const std::string& where() const { return where_; }
  const std::string& reason() const { return reason_; }

private:
  std::string where_, reason_;
};

namespace detail {
template <class T>
void put(std::ostringstream& os, const T& v) {
  os << v;
}
// Vectors (shapes, index lists) print as [a, b, c].
template <class T>
void put(std::ostringstream& os, const std::vector<T>& v) {
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  os << "]";
}
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  put(os, v);
  append(os, rest...);
}
}  // namespace detail

// Builds a message from any streamable pieces: fail("conv2d", "input ", x.shape(), " must be 4-d").
template <class... Parts>
[[noreturn]] void fail(const std::string& where, const Parts&... parts) {
  std::ostringstream os;
  detail::append(os, parts...);
  throw Error(where, os.str());
}

}  // namespace cpoison

// Checks a user-facing precondition; the message pieces are only built when it fails.
#define CP_CHECK(cond, where, ...)                 \
  do {                                             \
    if (!(cond)) ::cpoison::fail(where, __VA_ARGS__); \
  } while (0)
