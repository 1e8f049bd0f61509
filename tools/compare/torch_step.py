#!/usr/bin/python3
"""Same-run comparison of cpoison and PyTorch on the CPU (`make compare`).

speed (the default): one supervised training step of the CIFAR ResNet-18 (3x3 stem, no
max-pool, BasicBlocks [2, 2, 2, 2], widths w, 2w, 4w, 8w, strides 1, 2, 2, 2; global average
pool; linear head) on random images: forward, cross-entropy, backward, SGD with momentum 0.9 and
weight decay 1e-4 -- `cpoison bench step` against the same step written in PyTorch below. For
each shape the two run interleaved, A B A B, --rounds times, each round in a fresh process
(one warm-up step, then --steps timed steps), with the same thread count (OMP_NUM_THREADS and
torch.set_num_threads). Reported: the median step time of each, images/s, and the time ratio
ours/theirs (below 1: we are faster), with the range of the per-round ratios.

memory: one CP-S noise step (the poison's noise phase: SimCLR in eval mode with frozen weights,
x + eps * delta clamped, two augmented views through the encoder in one batch, NT-Xent, the
gradient w.r.t. delta, the signed step) -- `cpoison bench noise-step` against the same step in
PyTorch. Each side runs its first step in a fresh process and reports the peak resident set
(VmHWM) and the part of it above the resident set before the step.

PyTorch is only importable by Debian's /usr/bin/python3 (package python3-torch); run this
script with it. Nothing here uses torch.compile, JIT or channels-last: eager PyTorch as a
researcher would write it, which on the CPU runs its convolutions through oneDNN (mkldnn).
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

SPEED_SHAPES = [
    # (label, width, batch, size, channels)
    ("ResNet-18 width 64, batch 128, 32x32x3", 64, 128, 32, 3),
    ("ResNet-18 width 8, batch 256, 28x28x1 (demo SimCLR shape)", 8, 256, 28, 1),
    ("ResNet-18 width 8, batch 128, 28x28x1 (demo supervised shape)", 8, 128, 28, 1),
]
MEMORY_SHAPES = [
    ("CP-S noise step, width 8, batch 256, 28x28x1", 8, 256, 28, 1),
    ("CP-S noise step, width 64, batch 128, 32x32x3", 64, 128, 32, 3),
]


# ---------------------------------------------------------------- the PyTorch side

def torch_resnet18(width, in_channels, classes):
    import torch.nn as nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, 0, bias=False), nn.BatchNorm2d(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            layers, cin = [], width
            for i, stride in enumerate([1, 2, 2, 2]):
                planes = width << i
                layers.append(nn.Sequential(BasicBlock(cin, planes, stride), BasicBlock(planes, planes, 1)))
                cin = planes
            self.layers = nn.Sequential(*layers)
            self.feature_dim = cin
            self.fc = nn.Linear(cin, classes) if classes > 0 else None

        def features(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layers(out)
            return F.adaptive_avg_pool2d(out, 1).flatten(1)

        def forward(self, x):
            return self.fc(self.features(x))

    return ResNet18()


def torch_worker_step(a):
    """One fresh process: warm-up, then timed supervised steps; prints one JSON line."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = torch_resnet18(a.width, a.channels, 10)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    images = torch.rand(a.batch, a.channels, a.size, a.size)
    labels = torch.randint(0, 10, (a.batch,))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"step_ms": [t * 1e3 for t in times], "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


def status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return -1.0


def torch_worker_noise(a):
    """One fresh process: the first CP-S noise step; prints time and memory as one JSON line."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    encoder = torch_resnet18(a.width, a.channels, 0)
    d = encoder.feature_dim
    projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 128))
    encoder.eval()
    projector.eval()
    for p in list(encoder.parameters()) + list(projector.parameters()):
        p.requires_grad_(False)
    n, c, s = a.batch, a.channels, a.size
    images = torch.rand(n, c, s, s)
    delta = torch.rand(n, c, s, s) * 2 - 1
    eps, step_size, temperature = 8.0 / 255.0, 0.1, 0.5
    if c == 1:
        mean, std = torch.tensor([0.2860]), torch.tensor([0.3530])
    else:
        mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])
    gray_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)

    def gray(x):
        return x if x.shape[1] == 1 else (x * gray_w).sum(1, keepdim=True)

    def augment(x):
        # RandomResizedCrop (scale 0.2-1, ratio 3/4-4/3) as one bilinear grid sample per batch,
        # horizontal flip folded into the grid, then with p 0.8 brightness and contrast (and for
        # 3 channels saturation), grayscale with p 0.2 for 3 channels, normalisation: the
        # pipeline of augment/augment.h (hue rotation, a per-pixel op of the 3-channel pipeline,
        # is left out: its memory is one image batch).
        b = x.shape[0]
        area = torch.empty(b).uniform_(0.2, 1.0)
        ratio = torch.exp(torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3)))
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(b) * 2 - 1) * (1 - w)
        cy = (torch.rand(b) * 2 - 1) * (1 - h)
        flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        on = (torch.rand(b) < 0.8).float().view(b, 1, 1, 1)
        f = 1 + on * (torch.rand(b, 1, 1, 1) * 0.8 - 0.4)
        x = (x * f).clamp(0, 1)
        f = 1 + on * (torch.rand(b, 1, 1, 1) * 0.8 - 0.4)
        m = gray(x).mean((1, 2, 3), keepdim=True)
        x = (m + f * (x - m)).clamp(0, 1)
        if c == 3:
            f = 1 + on * (torch.rand(b, 1, 1, 1) * 0.8 - 0.4)
            g = gray(x)
            x = (g + f * (x - g)).clamp(0, 1)
            to_gray = (torch.rand(b) < 0.2).float().view(b, 1, 1, 1)
            x = to_gray * gray(x).expand_as(x) + (1 - to_gray) * x
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def nt_xent(z1, z2):
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        sim = z @ z.t() / temperature
        m = z.shape[0]
        sim = sim.masked_fill(torch.eye(m, dtype=torch.bool), float("-inf"))
        target = torch.cat([torch.arange(n, m), torch.arange(0, n)])
        return F.cross_entropy(sim, target)

    def step():
        nonlocal delta
        leaf = delta.detach().requires_grad_(True)
        x = (images + eps * leaf.clamp(-1, 1)).clamp(0, 1)
        v1, v2 = augment(x), augment(x)
        z = projector(encoder.features(torch.cat([v1, v2])))
        loss = nt_xent(z[:n], z[n:])
        (g,) = torch.autograd.grad(loss, [leaf])
        with torch.no_grad():
            delta = (leaf - step_size * g.sign()).clamp(-1, 1)
        return loss.item()

    for _ in range(a.warmup):
        step()
    rss_before = status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t0 = time.perf_counter()
    step()
    ms = (time.perf_counter() - t0) * 1e3
    peak = status_mib("VmHWM")
    print(json.dumps({"step_ms": ms, "peak_rss_mib": peak, "rss_before_mib": rss_before,
                      "step_peak_rss_mib": peak - rss_before, "threads": torch.get_num_threads()}))


# ---------------------------------------------------------------- the driver

def last_json(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in:\n" + text)


def run(cmd, env):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise RuntimeError("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stdout))
    return p.stdout


def load_average():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def speed(a, env, conv_kernels):
    print("| work | cpoison img/s | PyTorch img/s | time ratio ours/theirs (median; per-round range) |")
    print("|---|---:|---:|---:|")
    results = []
    for label, width, batch, size, channels in SPEED_SHAPES:
        ours, theirs, ratios = [], [], []
        for _ in range(a.rounds):
            out = run([a.cpoison] + (["--deterministic"] if a.deterministic else []) +
                      ["bench", "step", "--model", "resnet18", "--width", str(width), "--batch", str(batch),
                       "--size", str(size), "--channels", str(channels), "--threads", str(a.threads),
                       "--warmup", "1", "--repeats", str(a.steps)], env)
            o = statistics.median(last_json(out)["step_ms"])
            out = run([sys.executable, __file__, "--worker", "step", "--width", str(width), "--batch", str(batch),
                       "--size", str(size), "--channels", str(channels), "--threads", str(a.threads),
                       "--steps", str(a.steps)], env)
            t = statistics.median(last_json(out)["step_ms"])
            ours.append(o)
            theirs.append(t)
            ratios.append(o / t)
        mo, mt = statistics.median(ours), statistics.median(theirs)
        row = {"work": label, "width": width, "batch": batch, "size": size, "channels": channels,
               "cpoison_ms": ours, "torch_ms": theirs, "cpoison_img_s": batch / mo * 1e3,
               "torch_img_s": batch / mt * 1e3, "ratio": mo / mt, "ratio_min": min(ratios), "ratio_max": max(ratios)}
        results.append(row)
        print("| %s | %.1f | %.1f | %.2f (%.2f-%.2f) |" % (label, row["cpoison_img_s"], row["torch_img_s"], row["ratio"],
                                                       row["ratio_min"], row["ratio_max"]), flush=True)
    return results


def memory(a, env):
    print("| work | cpoison peak RSS MiB (step's part) | PyTorch peak RSS MiB (step's part) | ms/step ours / theirs |")
    print("|---|---:|---:|---:|")
    results = []
    for label, width, batch, size, channels in MEMORY_SHAPES:
        out = run([a.cpoison] + (["--deterministic"] if a.deterministic else []) +
                  ["bench", "noise-step", "--width", str(width), "--batch", str(batch), "--size", str(size),
                   "--channels", str(channels), "--threads", str(a.threads)], env)
        o = last_json(out)
        out = run([sys.executable, __file__, "--worker", "noise", "--width", str(width), "--batch", str(batch),
                   "--size", str(size), "--channels", str(channels), "--threads", str(a.threads)], env)
        t = last_json(out)
        row = {"work": label, "cpoison": o, "torch": t}
        results.append(row)
        print("| %s | %.0f (%.0f) | %.0f (%.0f) | %.0f / %.0f |" % (
            label, o["peak_rss_mib"], o["step_peak_rss_mib"], t["peak_rss_mib"], t["step_peak_rss_mib"],
            o["median_step_ms"], t["step_ms"]), flush=True)
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpoison", default="build/cpoison", help="the cpoison executable")
    p.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per shape (default 5)")
    p.add_argument("--steps", type=int, default=1, help="timed steps per round and side (default 1)")
    p.add_argument("--what", choices=["speed", "memory", "both"], default="both")
    p.add_argument("--deterministic", action="store_true", help="run cpoison with --deterministic")
    p.add_argument("--json", help="also write the results to this file")
    # internal: one measurement in this process
    p.add_argument("--worker", choices=["step", "noise"], help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--channels", type=int, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker == "step":
        a.warmup = 1 if a.warmup is None else a.warmup
        return torch_worker_step(a)
    if a.worker == "noise":
        a.warmup = 0 if a.warmup is None else a.warmup
        return torch_worker_noise(a)

    try:
        import torch
    except ImportError:
        sys.exit("PyTorch is not importable by %s: install python3-torch (Debian) and run this script with "
                 "/usr/bin/python3" % sys.executable)
    if not os.path.exists(a.cpoison):
        sys.exit("no cpoison executable at %s (build first, or pass --cpoison)" % a.cpoison)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    env.setdefault("OMP_WAIT_POLICY", "passive")  # what cpoison sets for itself; the same for both
    version = run([a.cpoison, "version"], env).strip().splitlines()[0]
    head = last_json(run([a.cpoison] + (["--deterministic"] if a.deterministic else []) +
                         ["bench", "step", "--model", "resnet18", "--width", "8", "--batch", "2", "--size", "8",
                          "--channels", "1", "--threads", str(a.threads), "--warmup", "0", "--repeats", "1"], env))
    print("# cpoison against PyTorch, same run (%s)" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    print()
    print("- command: `%s`" % " ".join([os.path.basename(sys.executable)] + sys.argv))
    print("- CPU: %s, %d cores; %d threads each (OMP_NUM_THREADS, torch.set_num_threads)" % (cpu_model(), os.cpu_count(), a.threads))
    print("- cpoison: %s; convolutions: %s" % (version, head.get("conv", "?")))
    dnn = [l.strip(" -") for l in torch.__config__.show().splitlines() if "MKL-DNN" in l or "oneDNN" in l]
    print("- PyTorch %s (CPU; %s)" % (torch.__version__, dnn[0] if dnn else "no oneDNN"))
    print("- load average before: %s" % load_average())
    print()
    out = {"cpu": cpu_model(), "threads": a.threads, "load_before": load_average(), "cpoison": version,
           "torch": torch.__version__}
    if a.what in ("speed", "both"):
        print("Training step (forward, cross-entropy, backward, SGD momentum), median of %d interleaved rounds:" % a.rounds)
        print()
        out["speed"] = speed(a, env, head.get("conv"))
        print()
    if a.what in ("memory", "both"):
        print("CP-S noise step, first step of a fresh process (peak resident set, and its part above the resident set before the step):")
        print()
        out["memory"] = memory(a, env)
        print()
    print("- load average after: %s" % load_average())
    out["load_after"] = load_average()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
