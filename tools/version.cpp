#include <cstdio>

#include "engine/backend/cpu/conv.h"
#include "engine/backend/dispatch.h"
#include "tools/command.h"

namespace {
void setup(CLI::App& app) {
  app.callback([] {
#ifdef CPOISON_CUDA
    const char* cuda = "compiled";
#else
    const char* cuda = "not compiled";
#endif
    std::printf("cpoison %s (CUDA backend %s; GPU %s; CPU convolutions: %s)\n", CPOISON_VERSION, cuda,
                cpoison::cuda_available() ? "available" : "not available",
                cpoison::cpu::onednn::available() ? cpoison::cpu::onednn::version().c_str() : "reference kernels");
  });
}
}  // namespace
CPOISON_COMMAND(version, "Print the version and the available backends", setup);
