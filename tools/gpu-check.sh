#!/usr/bin/env bash
# The CUDA checks for a machine with a GPU and no network: the test suite with its CUDA cases, the ResNet-18
# training-step benchmark (f32, then with TF32 allowed), the same step in PyTorch eager when
# PyTorch is installed, USVT on cuSOLVER vs LAPACK, and a short Markdown table at the end.
#
#   tools/gpu-check.sh                      # uses .gpu-carry/build if present, else builds build-gpu
#   BUILD=build-cuda tools/gpu-check.sh     # a prebuilt build dir
#
# Environment: BUILD (prebuilt build dir), CARRY (folder made by tools/gpu-pack.sh, default
# .gpu-carry: its pack.tar.xz is unpacked there, build/ is used and lib/ goes on LD_LIBRARY_PATH), BATCH (default 512), REPEATS (default 20),
# OUT (if set, a folder that receives the logs and results.md).
# Exit status: non-zero when a CUDA test fails or the build/benchmark does not run.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=${CARRY:-.gpu-carry}
BATCH=${BATCH:-512}
REPEATS=${REPEATS:-20}
LOGS=${OUT:-$(mktemp -d)}
mkdir -p "$LOGS"
status=0

# tools/gpu-pack.sh leaves an xz archive (the carry limit); unpack it beside itself once.
if [ -f "$CARRY/pack.tar.xz" ] && [ ! -d "$CARRY/lib" ]; then
  tar -C "$CARRY" -xJf "$CARRY/pack.tar.xz" || { echo "cannot unpack $CARRY/pack.tar.xz"; exit 1; }
fi
if [ -d "$CARRY/lib" ]; then
  export LD_LIBRARY_PATH="$ROOT/$CARRY/lib:${LD_LIBRARY_PATH:-}"
fi
if [ -z "${BUILD:-}" ] && [ -x "$CARRY/build/cpoison" ]; then
  BUILD=$CARRY/build
fi
if [ -z "${BUILD:-}" ]; then
  BUILD=build-gpu
  if [ ! -f "$BUILD/build.ninja" ]; then
    PATH=/usr/local/cuda/bin:$PATH meson setup "$BUILD" -Dcuda=enabled -Dgpu_archs=90 >"$LOGS/configure.log" 2>&1 ||
      { echo "configure failed:"; tail -n 30 "$LOGS/configure.log"; exit 1; }
  fi
  PATH=/usr/local/cuda/bin:$PATH ninja -C "$BUILD" >"$LOGS/build.log" 2>&1 || { echo "build failed:"; tail -n 30 "$LOGS/build.log"; exit 1; }
fi
echo "build: $BUILD"

gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
echo "GPU: ${gpu:-unknown (nvidia-smi failed)}"
version=$("$BUILD/cpoison" version 2>&1) || status=1
echo "$version"
if ! grep -q "GPU available" <<<"$version"; then
  echo "cpoison sees no usable GPU: the CUDA tests below will all be skipped"
  status=1
fi

# ---- the whole suite: the CUDA cases (each compares a CUDA op with the CPU reference) live in
# several files (engine, data, augment, defence), and the CPU cases take seconds
"$BUILD/cpoison-tests" >"$LOGS/tests.log" 2>&1
tests_rc=$?
grep -E "^\[doctest\] test cases|ERROR|FAILED|failed" "$LOGS/tests.log" | head -n 40
tests_line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOGS/tests.log" | tail -n 1)
echo "tests: ${tests_line:-no summary line} (rc $tests_rc)"
[ "$tests_rc" -eq 0 ] || status=1

# ---- cpoison training step
bench() {  # bench <label> [extra flags]: prints images/s or "n/a"
  local label=$1
  shift
  "$BUILD/cpoison" bench step --model resnet18 --batch "$BATCH" --device cuda --repeats "$REPEATS" --warmup 3 "$@" \
    >"$LOGS/bench-$label.log" 2>&1
  local rc=$?
  local ips
  ips=$(grep -E '^images/s:' "$LOGS/bench-$label.log" | awk '{print $2}')
  if [ "$rc" -ne 0 ] || [ -z "$ips" ]; then
    tail -n 5 "$LOGS/bench-$label.log" >&2
    echo "n/a"
  else
    echo "$ips"
  fi
}
cp_f32=$(bench f32)
[ "$cp_f32" = "n/a" ] && status=1
if "$BUILD/cpoison" bench step --help 2>&1 | grep -q -- '--tf32'; then
  cp_tf32=$(bench tf32 --tf32)
else
  cp_tf32="n/a (no --tf32 flag)"
fi
echo "cpoison resnet18 batch $BATCH: f32 $cp_f32 images/s, tf32 $cp_tf32 images/s"

# ---- matrix completion (USVT) of a CIFAR-sized batch: cuSOLVER vs LAPACK
usvt() {  # usvt <device>: prints images/s or "n/a"
  "$BUILD/cpoison" bench usvt --device "$1" >"$LOGS/usvt-$1.log" 2>&1
  local ips
  ips=$(grep -E '^images/s:' "$LOGS/usvt-$1.log" | awk '{print $2}')
  echo "${ips:-n/a}"
}
usvt_cuda=$(usvt cuda)
usvt_cpu=$(usvt cpu)
echo "usvt: cuda $usvt_cuda images/s, cpu $usvt_cpu images/s"

# ---- PyTorch eager, the same CIFAR ResNet-18 step (kuangliu/pytorch-cifar), when available
torch_f32="n/a (no PyTorch with CUDA)"
torch_tf32="n/a"
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  cat >"$LOGS/torch_step.py" <<'PY'
import statistics, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))

class ResNet18(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, classes)
    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))

batch, repeats, tf32 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "tf32"
torch.backends.cuda.matmul.allow_tf32 = tf32
torch.backends.cudnn.allow_tf32 = tf32
dev = torch.device("cuda")
model = ResNet18().to(dev)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
x = torch.rand(batch, 3, 32, 32, device=dev)
y = torch.randint(0, 10, (batch,), device=dev)
def step():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    torch.cuda.synchronize()
for _ in range(3):
    step()
times = []
for _ in range(repeats):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
print(f"images/s: {batch / statistics.median(times):.1f}")
PY
  torch_run() {
    python3 "$LOGS/torch_step.py" "$BATCH" "$REPEATS" "$1" >"$LOGS/torch-$1.log" 2>&1
    grep -E '^images/s:' "$LOGS/torch-$1.log" | awk '{print $2}' || true
  }
  torch_f32=$(torch_run f32)
  torch_tf32=$(torch_run tf32)
  torch_f32=${torch_f32:-n/a (failed)}
  torch_tf32=${torch_tf32:-n/a (failed)}
  echo "pytorch resnet18 batch $BATCH: f32 $torch_f32 images/s, tf32 $torch_tf32 images/s"
fi

rate() {  # a number gets its unit; a reason is printed as is
  if [[ $1 =~ ^[0-9.]+$ ]]; then echo "$1 images/s"; else echo "$1"; fi
}
{
  echo
  echo "GPU: ${gpu:-unknown}"
  echo
  echo "| check | result |"
  echo "|---|---|"
  echo "| test suite with the CUDA cases (\`cpoison-tests\`) | ${tests_line:-no summary} |"
  echo "| cpoison ResNet-18 step, batch $BATCH, f32 | $(rate "$cp_f32") |"
  echo "| cpoison ResNet-18 step, batch $BATCH, TF32 | $(rate "$cp_tf32") |"
  echo "| PyTorch eager ResNet-18 step, batch $BATCH, f32 | $(rate "$torch_f32") |"
  echo "| PyTorch eager ResNet-18 step, batch $BATCH, TF32 | $(rate "$torch_tf32") |"
  echo "| USVT matrix completion, cuSOLVER | $(rate "$usvt_cuda") |"
  echo "| USVT matrix completion, LAPACK (this machine's CPU) | $(rate "$usvt_cpu") |"
} | tee "$LOGS/results.md"
exit "$status"
