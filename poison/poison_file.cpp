#include "poison/poison_file.h"

#include <algorithm>
#include <cmath>

#include "engine/io/hdf5.h"
#include "engine/size.h"
#include "engine/rng.h"

namespace cpoison::poison {

NoiseKind parse_noise_kind(const std::string& name, const std::string& where) {
  if (name == "sample") return NoiseKind::sample_wise;
  if (name == "class") return NoiseKind::class_wise;
  fail(where, "kind must be 'sample' or 'class', got '", name, "'");
}

const char* noise_kind_name(NoiseKind kind) { return kind == NoiseKind::class_wise ? "class" : "sample"; }

void Poison::validate(const std::string& where) const {
  CP_CHECK(delta.defined() && delta.dim() == 4, where, "delta must be [N or classes, C, H, W], got ",
           delta.defined() ? delta.describe() : std::string("nothing"));
  CP_CHECK(delta.dtype() == DType::f32, where, "delta must be f32, got ", delta.describe());
  for (int64_t d = 0; d < 4; ++d)
    CP_CHECK(delta.size(d) > 0, where, "dataset 'delta' has shape ", delta.shape(), ": every dimension must be > 0");
  CP_CHECK(eps > 0 && eps <= 1, where, "attribute 'eps' ", eps, " outside (0, 1] (pixel units: 8/255 = 0.0314)");
  CP_CHECK(ratio > 0 && ratio <= 1, where, "attribute 'ratio' ", ratio, " outside (0, 1]");
  CP_CHECK(image_count > 0 && image_count <= kMaxAxis, where, "attribute 'image_count' must be in [1, ", kMaxAxis,
           "], got ", image_count);
  CP_CHECK(!class_wise() || (classes > 0 && classes <= kMaxAxis), where, "attribute 'classes' must be in [1, ", kMaxAxis,
           "] for class-wise noise, got ", classes);
  if (class_wise())
    CP_CHECK(delta.size(0) == classes, where, "class-wise delta has ", delta.size(0), " rows for ", classes, " classes");
  else
    CP_CHECK(delta.size(0) == image_count, where, "sample-wise delta has ", delta.size(0), " rows for ", image_count, " images");
  CP_CHECK(indices.defined() && indices.dtype() == DType::i64 && indices.dim() == 1, where, "indices must be i64 [M], got ",
           indices.describe());
  auto idx = indices.to_vector<int64_t>();
  for (size_t i = 0; i < idx.size(); ++i) {
    CP_CHECK(idx[i] >= 0 && idx[i] < image_count, where, "poisoned index ", idx[i], " outside [0, ", image_count, ")");
    CP_CHECK(i == 0 || idx[i] > idx[i - 1], where, "poisoned indices must be strictly ascending (at position ", i, ")");
  }
  // The victim clamps delta to [-1, 1], so a NaN or a 2 would not fail later: it would be used.
  io::check_values(delta, -1.0, 1.0, where, "delta");
}

void save_poison(const std::string& path, const Poison& p) {
  p.validate("save_poison " + path);
  io::H5Writer w(path);
  w.write("delta", p.delta.to(Device::cpu));
  w.write("indices", p.indices.to(Device::cpu));
  w.set_file_attr("eps", p.eps);
  w.set_file_attr("kind", std::string(noise_kind_name(p.kind)));
  w.set_file_attr("attack", p.attack);
  w.set_file_attr("algorithm", p.algorithm);
  w.set_file_attr("dual_branch", (int64_t)p.dual_branch);
  w.set_file_attr("dataset", p.dataset);
  w.set_file_attr("subset", p.subset);
  w.set_file_attr("seed", (int64_t)p.seed);
  w.set_file_attr("rounds_done", p.rounds_done);
  w.set_file_attr("rounds_total", p.rounds_total);
  w.set_file_attr("ratio", p.ratio);
  w.set_file_attr("classes", p.classes);
  w.set_file_attr("image_count", p.image_count);
  w.set_file_attr("version", std::string(CPOISON_VERSION));
  if (!p.data_fingerprint.empty()) w.set_file_attr("data_fingerprint", p.data_fingerprint);
  if (p.subset_seed >= 0) w.set_file_attr("subset_seed", p.subset_seed);
  w.commit();
}

Poison load_poison(const std::string& path) {
  io::H5Reader r(path);
  std::string where = "poison file " + path;
  CP_CHECK(r.has("delta"), where, "has no /delta dataset (is it a poison file?)");
  Poison p;
  p.delta = r.read("delta", DType::f32);
  io::Attrs a = r.file_attrs();
  p.eps = io::attr_double(a, "eps", where);
  p.kind = parse_noise_kind(io::attr_string(a, "kind", where), where);
  p.attack = io::attr_string(a, "attack", where);
  p.algorithm = io::attr_string(a, "algorithm", where);
  p.dual_branch = io::attr_int(a, "dual_branch", where) != 0;
  p.dataset = io::attr_string(a, "dataset", where);
  p.subset = io::attr_int(a, "subset", where);
  p.seed = (uint64_t)io::attr_int(a, "seed", where);
  p.rounds_done = io::attr_int(a, "rounds_done", where);
  p.rounds_total = io::attr_int(a, "rounds_total", where);
  p.ratio = io::attr_double(a, "ratio", where);
  p.classes = io::attr_int(a, "classes", where);
  p.image_count = io::attr_int(a, "image_count", where);
  // Checked before /indices defaults to every row (a count of 2^62 must not become a vector).
  CP_CHECK(p.image_count > 0 && p.image_count <= kMaxAxis, where, "attribute 'image_count' must be in [1, ", kMaxAxis,
           "], got ", p.image_count);
  if (a.count("data_fingerprint")) p.data_fingerprint = io::attr_string(a, "data_fingerprint", where);
  if (a.count("subset_seed")) p.subset_seed = io::attr_int(a, "subset_seed", where);
  p.indices = r.has("indices") ? r.read("indices", DType::i64) : Tensor::arange(p.image_count);
  p.validate(where);
  return p;
}

Tensor choose_poisoned_indices(int64_t n, double ratio, uint64_t seed) {
  CP_CHECK(n > 0, "poison ratio", "training set is empty");
  CP_CHECK(ratio > 0 && ratio <= 1, "poison ratio", "ratio ", ratio, " outside (0, 1]");
  int64_t m = std::max<int64_t>(1, (int64_t)std::llround(ratio * (double)n));
  if (m >= n) return Tensor::arange(n);
  Generator g(seed, 0x9015);
  std::vector<int64_t> perm = g.permutation(n);
  perm.resize(m);
  std::sort(perm.begin(), perm.end());
  return Tensor::from_vector(perm, {m});
}

}  // namespace cpoison::poison
