// Which ops the CPU backend and (when compiled) the CUDA backend provide.
#include "engine/backend/dispatch.h"

namespace cpoison {
#ifndef CPOISON_CUDA
bool supports(const std::string&, Device device) { return device == Device::cpu; }
#endif
}  // namespace cpoison
