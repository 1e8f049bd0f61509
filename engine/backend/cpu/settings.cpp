// Process-wide backend settings (engine/backend/settings.h) and which ops each backend provides.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "engine/backend/dispatch.h"
#include "engine/backend/settings.h"

namespace cpoison {

namespace {
std::atomic<bool> g_allow_tf32{false};
std::atomic<bool> g_deterministic{true};
std::atomic<bool> g_cpu_deterministic{[] {
  const char* v = std::getenv("CPOISON_DETERMINISTIC");
  return v != nullptr && std::strcmp(v, "1") == 0;
}()};
}  // namespace

void set_allow_tf32(bool on) { g_allow_tf32 = on; }
bool allow_tf32() { return g_allow_tf32; }
void set_deterministic(bool on) { g_deterministic = on; }
bool deterministic() { return g_deterministic; }
void set_cpu_deterministic(bool on) { g_cpu_deterministic = on; }
bool cpu_deterministic() { return g_cpu_deterministic; }

// The CPU backend implements every op. A CUDA build links only when every kernel declared in
// engine/backend/*.h has a CUDA version, so there an op runs on cuda exactly when a GPU is usable.
bool supports(const std::string&, Device device) {
  if (device == Device::cpu) return true;
#ifdef CPOISON_CUDA
  return cuda_available();
#else
  return false;
#endif
}

}  // namespace cpoison
