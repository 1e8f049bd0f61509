// Projection, prediction and classification heads (see heads.h).
#include "models/heads.h"

namespace cpoison::models {
namespace {
void check_dim(const char* head, const char* field, int64_t value) {
  CP_CHECK(value >= 1, head, field, " must be at least 1, got ", value);
}
}  // namespace

std::shared_ptr<nn::Sequential> make_projection_head(int64_t in_dim, int64_t out_dim, int64_t hidden_dim) {
  if (hidden_dim == 0) hidden_dim = in_dim;
  check_dim("projection head", "in_dim", in_dim);
  check_dim("projection head", "hidden_dim", hidden_dim);
  check_dim("projection head", "out_dim", out_dim);
  return nn::mlp({in_dim, hidden_dim, out_dim}, /*batch_norm=*/false);
}

std::shared_ptr<nn::Sequential> make_byol_mlp(int64_t in_dim, int64_t hidden_dim, int64_t out_dim) {
  check_dim("BYOL MLP", "in_dim", in_dim);
  check_dim("BYOL MLP", "hidden_dim", hidden_dim);
  check_dim("BYOL MLP", "out_dim", out_dim);
  return nn::mlp({in_dim, hidden_dim, out_dim}, /*batch_norm=*/true);
}

std::shared_ptr<nn::Linear> make_linear_classifier(int64_t in_dim, int64_t classes) {
  check_dim("linear classifier", "in_dim", in_dim);
  check_dim("linear classifier", "classes", classes);
  return std::make_shared<nn::Linear>(in_dim, classes);
}

}  // namespace cpoison::models
