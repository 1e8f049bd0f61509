// The experiment engine: presets, plans, cached cells, the demo's quick mode.
#include <doctest/doctest.h>

#include "tools/experiment/runner.h"

using namespace cpoison;
using namespace cpoison::tools::experiment;

TEST_CASE("experiment: translate of zero is the identity") {
  Generator g(0, 1);
  Tensor x = Tensor::ones({1, 1, 3, 3});
  CHECK(random_translate(x, 0, g).to_vector<float>() == x.to_vector<float>());
}
