#include <cstdio>

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
    std::printf("cpoison %s (CUDA backend %s; GPU %s)\n", CPOISON_VERSION, cuda,
                cpoison::cuda_available() ? "available" : "not available");
  });
}
}  // namespace
CPOISON_COMMAND(version, "Print the version and the available backends", setup);
