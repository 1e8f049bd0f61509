#!/usr/bin/python3
"""A hostile-input corpus for issue #16: broken files and nonsensical numbers fed to every reader
and command of the `cpoison` executable. Each case is classified as

  ok       the command exits non-zero and its message names what it should (file, dataset,
           attribute or option, and the bad value where there is one);
  crash    killed by a signal, or a sanitizer / std::terminate report;
  silent   exit 0 on input that must be refused;
  vague    exit non-zero, but the message misses a name it should carry;
  hang     still running after the time limit.

Control cases run the same commands on the good files first; they must exit 0 (otherwise a case
could "fail" for an unrelated reason). Needs /usr/bin/python3 with h5py and numpy (Debian's
python3-h5py). This is a development tool; the permanent regression cases live in the doctest
suite (tests/engine/bad_input_test.cpp, tests/tools/bad_input_cli_test.cpp).

  /usr/bin/python3 tests/bad_input/corpus.py --cpoison build-cpu/cpoison [--json out.json] [-v]
"""
import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import h5py
import numpy as np

BIG = 2 ** 62

# ------------------------------------------------------------------------------------------ running


class Runner:
    def __init__(self, exe, work, timeout, verbose):
        self.exe, self.work, self.timeout, self.verbose = exe, work, timeout, verbose
        self.results = []

    def run(self, args):
        env = dict(os.environ, OMP_NUM_THREADS="1", ASAN_OPTIONS="detect_leaks=0")
        try:
            p = subprocess.run([self.exe] + args, cwd=self.work, env=env, capture_output=True, text=True,
                               errors="replace", timeout=self.timeout)
            return p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            return None, "(timeout)"

    def control(self, name, args):
        code, out = self.run(args)
        if code != 0:
            raise SystemExit(f"control case {name} failed ({code}): {' '.join(args)}\n{out}")

    def case(self, klass, name, args, expect):
        """expect: substrings (case-insensitive) the error message must contain."""
        code, out = self.run(args)
        crash_marks = ("Segmentation fault", "AddressSanitizer", "runtime error:", "terminate called", "Aborted",
                       "LeakSanitizer", "core dumped")
        if code is None:
            verdict = "hang"
        elif code < 0 or code >= 128 or any(m in out for m in crash_marks):
            verdict = "crash"
        elif code == 0:
            verdict = "silent"
        else:
            low = out.lower()
            missing = [e for e in expect if e.lower() not in low]
            verdict = "vague" if missing else "ok"
        self.results.append({"class": klass, "name": name, "verdict": verdict, "code": code,
                             "args": args, "expect": expect, "output": out[-600:]})
        if self.verbose or verdict != "ok":
            first = next((l for l in out.splitlines() if l.startswith("error")), out.strip().splitlines()[-1:] or [""])
            if isinstance(first, list):
                first = first[0] if first else ""
            print(f"[{verdict:6}] {klass} {name}: {first[:220]}")


# ------------------------------------------------------------------------------------------ files


def with_opt(args, flag, value):
    """args with `flag value` set: the existing value replaced, else appended."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
        return args
    return args + [flag, value]


def write_dataset(path, images, labels, classes=None, name="tiny", grouped_test=None, split="train"):
    with h5py.File(path, "w") as f:
        if grouped_test is not None:
            f["train/images"], f["train/labels"] = images, labels
            f["test/images"], f["test/labels"] = grouped_test[0], grouped_test[1]
        else:
            f["images"], f["labels"] = images, labels
            f.attrs["split"] = split
        f.attrs["name"] = name
        f.attrs["classes"] = np.int64(classes if classes is not None else 4)


def tiny_arrays(n, salt):
    rng = np.random.default_rng(salt)
    return rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8), (np.arange(n) % 4).astype(np.int64)


def copy_h5(src, dst, edit):
    """Copies src to dst, then calls edit(f) on the copy opened read-write."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def replace(f, name, data=None, shape=None, dtype=None, chunks=None):
    attrs = dict(f[name].attrs)
    del f[name]
    if data is not None:
        f.create_dataset(name, data=data)
    else:
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
    for k, v in attrs.items():
        f[name].attrs[k] = v


def custom_float_dataset(f, name, data, mutate):
    """Writes float32 `data` under `name` with an HDF5 float type changed by `mutate(tid)`."""
    attrs = dict(f[name].attrs) if name in f else {}
    if name in f:
        del f[name]
    tid = h5py.h5t.IEEE_F32LE.copy()
    mutate(tid)
    space = h5py.h5s.create_simple(data.shape)
    ds = h5py.h5d.create(f.id, name.encode(), tid, space)
    # Write raw bytes: memory type = file type, so the float32 bytes land unchanged.
    raw = np.ascontiguousarray(data, dtype=np.float32)
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=tid)
    for k, v in attrs.items():
        f[name].attrs[k] = v


def idx_images(n, h, w, pixels=None):
    head = struct.pack(">IIII", 0x803, n, h, w)
    body = bytes(pixels) if pixels is not None else bytes((i * 7) % 256 for i in range(n * h * w))
    return head + body


def idx_labels(labels):
    return struct.pack(">II", 0x801, len(labels)) + bytes(labels)


def write_fmnist(root, images=None, labels=None, test_images=None, test_labels=None, raw=False):
    os.makedirs(root, exist_ok=True)
    parts = {"train-images-idx3-ubyte": images if images is not None else idx_images(12, 4, 5),
             "train-labels-idx1-ubyte": labels if labels is not None else idx_labels([i % 10 for i in range(12)]),
             "t10k-images-idx3-ubyte": test_images if test_images is not None else idx_images(2, 4, 5),
             "t10k-labels-idx1-ubyte": test_labels if test_labels is not None else idx_labels([1, 2])}
    for name, data in parts.items():
        if raw:
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
        else:
            with open(os.path.join(root, name + ".gz"), "wb") as f:
                f.write(gzip.compress(data) if isinstance(data, bytes) else data.gz)
    return root


class RawGz:
    """Already-compressed bytes for write_fmnist."""

    def __init__(self, gz):
        self.gz = gz


# ------------------------------------------------------------------------------------------ corpus


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpoison", required=True)
    ap.add_argument("--json")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    exe = os.path.abspath(a.cpoison)
    work = tempfile.mkdtemp(prefix="cpoison-corpus-")
    R = Runner(exe, work, a.timeout, a.verbose)
    W = lambda name: os.path.join(work, name)
    quiet = ["--progress-seconds", "-1"]

    # ---- good fixtures
    tr_x, tr_y = tiny_arrays(40, 1)
    te_x, te_y = tiny_arrays(16, 2)
    tiny = W("tiny.h5")
    write_dataset(tiny, tr_x, tr_y, grouped_test=(te_x, te_y))
    ot_x, _ = tiny_arrays(40, 3)
    other = W("other.h5")  # same shape and labels, other pixels
    write_dataset(other, ot_x, tr_y, grouped_test=(te_x, te_y))

    train_core = ["train", "--algo", "simclr", "--width", "2", "--proj-dim", "8", "--batch-size", "8", "--augment",
                  "crop-flip", "--warmup-epochs", "0"] + quiet
    train_base = train_core + ["--epochs", "1"]
    moco_core = ["train", "--algo", "moco", "--width", "2", "--proj-dim", "8", "--queue-size", "16", "--batch-size", "8",
                 "--augment", "crop-flip", "--warmup-epochs", "0"] + quiet
    moco_base = moco_core + ["--epochs", "1"]
    cpc = ["poison", "--attack", "cp-c", "--algo", "simclr", "--recipe", "cpu-small", "--model-steps", "1",
           "--noise-batches", "1", "--width", "2", "--batch-size", "8", "--subset", "0"] + quiet
    probe_base = ["probe", "--mode", "features", "--iterations", "2", "--batch-size", "16"]

    R.control("poison random", ["poison", "--attack", "random", "--data", tiny, "--out", W("p.h5")] + quiet)
    R.control("poison random class", ["poison", "--attack", "random", "--kind", "class", "--data", tiny, "--out",
                                      W("pc.h5")] + quiet)
    R.control("poison random subset", ["poison", "--attack", "random", "--data", tiny, "--subset", "20",
                                       "--subset-seed", "0", "--out", W("psub.h5")] + quiet)
    R.control("train", train_base + ["--data", tiny, "--out", W("ck.h5")])
    R.control("train moco", moco_base + ["--data", tiny, "--out", W("moco.h5")])
    R.control("train 2 epochs", train_core + ["--epochs", "2", "--data", tiny, "--out",
                                                   W("ck2.h5")])
    R.control("poison ckpt", cpc + ["--rounds", "3", "--stop-after-rounds", "2", "--data", tiny, "--out", W("gen.h5")])
    R.control("export", ["export", W("p.h5"), "--out", W("exp")])
    R.control("train --poison", train_base + ["--data", tiny, "--poison", W("p.h5"), "--out", W("ckp.h5")])
    R.control("probe", probe_base + ["--encoder", W("ck.h5"), "--data", tiny])
    R.control("probe --poison", probe_base + ["--random-init", "--width", "2", "--data", tiny, "--poison", W("p.h5")])
    R.control("defend", ["defend", "--method", "noise", "--data", tiny, "--poison", W("p.h5"), "--out", W("d.h5")])
    R.control("dataset-info", ["dataset-info", tiny])
    fm = write_fmnist(W("fm-good"))
    R.control("idx", ["dataset-info", "fashion-mnist", "--root", fm])

    # Consumers of a dataset file, of a poison file, of a training checkpoint.
    def dataset_consumers(path):
        return [("dataset-info", ["dataset-info", path, "--splits", "train"]),
                ("train", train_base + ["--data", path, "--out", W("x-ck.h5")])]

    def poison_consumers(path):
        return [("export", ["export", path, "--data", tiny, "--out", W("x-exp")]),
                ("train", train_base + ["--data", tiny, "--poison", path, "--out", W("x-ck.h5")]),
                ("probe", probe_base + ["--random-init", "--width", "2", "--data", tiny, "--poison", path]),
                ("defend", ["defend", "--method", "noise", "--data", tiny, "--poison", path, "--out", W("x-d.h5")])]

    def checkpoint_consumers(path, resume=True):
        """(command, args, the file its message must name): the resume reads a copy."""
        out = [("probe", probe_base + ["--encoder", path, "--data", tiny], path)]
        if resume:
            c = W("x-resume.h5")
            shutil.copyfile(path, c)
            out.append(("train --resume", train_core + ["--epochs", "3", "--data", tiny, "--resume", "--out", c], c))
        return out

    # =================================================================== 1. sizes that overflow
    K = "1-overflow"

    def d_dims(shape, name):
        return copy_h5(tiny, W(name), lambda f: replace(f, "train/images", shape=shape, dtype="u8",
                                                          chunks=tuple([1] * len(shape))))
    for shape, tag in [((4, BIG, 1, 1), "wrap0"), ((40, 2 ** 31 + 1, 1, 1), "axis"), ((40, 2 ** 40, 2 ** 40, 1), "wrap")]:
        path = d_dims(shape, f"d-{tag}.h5")
        for cmd, args in dataset_consumers(path):
            R.case(K, f"dataset images {shape} via {cmd}", args, [path, "images"])
    path = copy_h5(tiny, W("d-classes.h5"), lambda f: f.attrs.__setitem__("classes", np.int64(BIG)))
    for cmd, args in dataset_consumers(path):
        R.case(K, f"dataset classes 2^62 via {cmd}", args, [path, "classes"])

    def p_delta_dims(f):
        replace(f, "delta", shape=(4, BIG, 1, 1), dtype="f4", chunks=(1, 1, 1, 1))
        f.attrs["image_count"] = np.int64(4)
        del f["indices"]
    path = copy_h5(W("p.h5"), W("p-dims.h5"), p_delta_dims)
    for cmd, args in poison_consumers(path):
        R.case(K, f"poison delta [4, 2^62, 1, 1] via {cmd}", args, [path, "delta"])

    def p_count(f):
        del f["indices"]
        f.attrs["image_count"] = np.int64(BIG)
    path = copy_h5(W("p.h5"), W("p-count.h5"), p_count)
    for cmd, args in poison_consumers(path)[:2]:
        R.case(K, f"poison image_count 2^62 without /indices via {cmd}", args, [path, "image_count"])

    path = copy_h5(W("ck.h5"), W("ck-dims.h5"),
                   lambda f: replace(f, "encoder.conv1.weight", shape=(BIG, 4, 1, 1), dtype="f4", chunks=(1, 1, 1, 1)))
    for cmd, args, named in checkpoint_consumers(path):
        R.case(K, f"checkpoint weight [2^62, 4, 1, 1] via {cmd}", args, [named, "encoder.conv1.weight"])
    path = copy_h5(W("ck.h5"), W("ck-width.h5"), lambda f: f.attrs.__setitem__("width", np.int64(BIG)))
    R.case(K, "checkpoint width attribute 2^62 via probe", probe_base + ["--encoder", path, "--data", tiny],
           [path, "width"])
    path = copy_h5(W("ck.h5"), W("ck-queue.h5"), lambda f: f.attrs.__setitem__("proj_dim", np.int64(BIG)))
    R.case(K, "checkpoint proj_dim attribute 2^62 via probe", probe_base + ["--encoder", path, "--data", tiny],
           [path, "proj_dim"])

    # IDX header whose n*h*w overflows int64.
    root = write_fmnist(W("fm-huge"), images=struct.pack(">IIII", 0x803, 0xFFFFFFFF, 65536, 65536) + b"\0" * 64,
                        labels=idx_labels([1, 2]))
    R.case(K, "idx header n*h*w overflows", ["dataset-info", "fashion-mnist", "--root", root, "--splits", "train"],
           ["train-images-idx3-ubyte"])

    for flag, val in [("--pad-to", str(2 ** 31)), ("--width", str(BIG)), ("--proj-hidden", str(BIG)),
                      ("--proj-dim", str(BIG))]:
        R.case(K, f"train {flag} {val}", with_opt(train_base, flag, val) + ["--data", tiny, "--out", W("x.h5")], [flag])
    R.case(K, "train --queue-size 2^62", with_opt(moco_base, "--queue-size", str(BIG)) + ["--data", tiny, "--out", W("x.h5")],
           ["--queue-size"])
    R.case(K, "poison --width 2^62", with_opt(cpc, "--width", str(BIG)) + ["--rounds", "1", "--data", tiny, "--out", W("x.h5")],
           ["--width"])
    R.case(K, "poison --pad-to 2^31", ["poison", "--attack", "random", "--data", tiny, "--pad-to", str(2 ** 31), "--out",
                                       W("x.h5")] + quiet, ["--pad-to"])
    R.case(K, "probe --width 2^62", probe_base + ["--random-init", "--data", tiny, "--width", str(BIG)], ["--width"])
    R.case(K, "convert --pad-to 2^31", ["convert", "fashion-mnist", "--root", fm, "--pad-to", str(2 ** 31), "--out",
                                        W("x.h5")], ["--pad-to"])
    R.case(K, "defend --pad-to 2^31", ["defend", "--method", "noise", "--data", tiny, "--pad-to", str(2 ** 31), "--out",
                                       W("x.h5")], ["--pad-to"])

    # =================================================================== 2. non-finite / impossible values
    K = "2-values"

    def p_delta(value, at=(3, 0, 2, 5)):
        def edit(f):
            d = f["delta"][()]
            d[at] = value
            f["delta"][...] = d
        return edit
    for value, tag in [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf"), (1.5, "1.5"), (-2.0, "-2")]:
        path = copy_h5(W("p.h5"), W(f"p-delta-{tag}.h5"), p_delta(value))
        for cmd, args in poison_consumers(path):
            R.case(K, f"poison delta {tag} via {cmd}", args, [path, "delta"])
    path = copy_h5(W("pc.h5"), W("pc-delta-nan.h5"), p_delta(np.nan, (1, 0, 0, 0)))
    for cmd, args in poison_consumers(path)[:2]:
        R.case(K, f"class-wise poison delta nan via {cmd}", args, [path, "delta"])

    # One changed byte in the stored float type: exponent bias, byte order, mantissa size, ...
    mutations = {
        "ebias": lambda t: t.set_ebias(t.get_ebias() + 100),
        "byte-order": lambda t: t.set_order(h5py.h5t.ORDER_BE),
        "fields": lambda t: t.set_fields(31, 24, 7, 0, 24),
        "norm": lambda t: t.set_norm(h5py.h5t.NORM_NONE),
    }
    for tag, mutate in mutations.items():
        def edit(f, mutate=mutate):
            custom_float_dataset(f, "delta", f["delta"][()], mutate)
        path = copy_h5(W("p.h5"), W(f"p-type-{tag}.h5"), edit)
        for cmd, args in poison_consumers(path):
            R.case(K, f"poison delta stored type changed ({tag}) via {cmd}", args, [path, "delta"])
    path = copy_h5(W("p.h5"), W("p-type-f64.h5"), lambda f: replace(f, "delta", data=f["delta"][()].astype(">f8")))
    R.case(K, "poison delta stored as big-endian f64 via export", poison_consumers(path)[0][1], [path, "delta"])
    path = copy_h5(W("p.h5"), W("p-type-i8.h5"), lambda f: replace(f, "delta", data=f["delta"][()].astype("i1")))
    R.case(K, "poison delta stored as int8 via export", poison_consumers(path)[0][1], [path, "delta"])
    path = copy_h5(W("p.h5"), W("p-eps-nan.h5"), lambda f: f.attrs.__setitem__("eps", np.nan))
    R.case(K, "poison eps attribute nan via export", poison_consumers(path)[0][1], [path, "eps"])
    path = copy_h5(W("p.h5"), W("p-ratio-inf.h5"), lambda f: f.attrs.__setitem__("ratio", np.inf))
    R.case(K, "poison ratio attribute inf via export", poison_consumers(path)[0][1], [path, "ratio"])
    path = copy_h5(W("p.h5"), W("p-nodelta.h5"), lambda f: f.__delitem__("delta"))
    R.case(K, "poison without /delta via train", poison_consumers(path)[1][1], [path, "delta"])
    path = copy_h5(W("p.h5"), W("p-noeps.h5"), lambda f: f.attrs.__delitem__("eps"))
    R.case(K, "poison without eps attribute via train", poison_consumers(path)[1][1], [path, "eps"])
    path = copy_h5(W("p.h5"), W("p-kind-int.h5"), lambda f: f.attrs.__setitem__("kind", np.int64(3)))
    R.case(K, "poison kind attribute an integer via train", poison_consumers(path)[1][1], [path, "kind"])

    def ck_edit(name, value, at=0):
        def edit(f):
            d = f[name][()]
            d.reshape(-1)[at] = value
            f[name][...] = d
        return edit
    for name, value, tag in [("encoder.conv1.weight", np.nan, "weight-nan"), ("encoder.bn1.running_var", -1.0, "var-neg"),
                             ("encoder.bn1.running_mean", np.inf, "mean-inf"),
                             ("optim/encoder.conv1.weight/momentum_buffer", np.nan, "momentum-nan")]:
        path = copy_h5(W("ck.h5"), W(f"ck-{tag}.h5"), ck_edit(name, value, 1))
        consumers = checkpoint_consumers(path, resume=True)
        if name.startswith("optim/"):
            consumers = consumers[1:]
        for cmd, args, named in consumers:
            R.case(K, f"checkpoint {name} {tag} via {cmd}", args, [named, name])
    path = copy_h5(W("moco.h5"), W("moco-queue-nan.h5"), ck_edit("queue", np.nan, 5))
    R.case(K, "MoCo checkpoint queue nan via train --resume",
           moco_core + ["--epochs", "2", "--data", tiny, "--resume", "--out", path],
           [path, "queue"])
    path = copy_h5(W("ck.h5"), W("ck-temp-nan.h5"), lambda f: f.attrs.__setitem__("temperature", np.nan))
    R.case(K, "checkpoint temperature attribute nan via probe", probe_base + ["--encoder", path, "--data", tiny],
           [path, "temperature"])
    path = copy_h5(W("ck.h5"), W("ck-type-be.h5"),
                   lambda f: custom_float_dataset(f, "encoder.conv1.weight", f["encoder.conv1.weight"][()],
                                                  lambda t: t.set_order(h5py.h5t.ORDER_BE)))
    R.case(K, "checkpoint weight stored byte-order flipped via probe", probe_base + ["--encoder", path, "--data", tiny],
           [path, "encoder.conv1.weight"])
    path = copy_h5(W("ck.h5"), W("ck-epochs-done-neg.h5"), lambda f: f.attrs.__setitem__("epochs_done", np.int64(-5)))
    c = W("x-res2.h5")
    R.case(K, "checkpoint epochs_done -5 via train --resume",
           train_core + ["--epochs", "3", "--data", tiny, "--resume", "--resume-from",
                              path, "--out", c], [path, "epochs_done"])
    path = copy_h5(W("gen.ckpt.h5"), W("gen-delta-nan.ckpt.h5"), ck_edit("delta", np.nan, 7))
    g = W("gen-nan.h5")
    shutil.copyfile(path, W("gen-nan.ckpt.h5"))
    R.case(K, "poison checkpoint delta nan via poison --resume",
           cpc + ["--rounds", "3", "--data", tiny, "--resume", "--out", g], [W("gen-nan.ckpt.h5"), "delta"])
    shutil.copyfile(W("gen.ckpt.h5"), W("gen-mom.ckpt.h5"))
    with h5py.File(W("gen-mom.ckpt.h5"), "r+") as f:
        key = next(k for k in f["optim"].keys())
        f[f"optim/{key}/momentum_buffer"][...] = np.full(f[f"optim/{key}/momentum_buffer"].shape, np.nan, np.float32)
    R.case(K, "poison checkpoint momentum nan via poison --resume",
           cpc + ["--rounds", "3", "--data", tiny, "--resume", "--out", W("gen-mom.h5")], [W("gen-mom.ckpt.h5"), "momentum"])

    for dt, tag in [(">u1", "u8-BE"), ("i1", "i8"), ("f4", "f32"), ("u2", "u16")]:
        path = copy_h5(tiny, W(f"d-images-{tag}.h5"), lambda f, dt=dt: replace(f, "train/images", data=tr_x.astype(dt)))
        if tag == "u8-BE":
            continue  # a one-byte type has no byte order: legitimately readable
        for cmd, args in dataset_consumers(path)[:1]:
            R.case(K, f"dataset images stored as {tag} via {cmd}", args, [path, "images"])
    path = copy_h5(tiny, W("d-labels-f32.h5"), lambda f: replace(f, "train/labels", data=tr_y.astype("f4")))
    R.case(K, "dataset labels stored as f32", dataset_consumers(path)[0][1], [path, "labels"])
    path = copy_h5(tiny, W("d-labels-be.h5"), lambda f: replace(f, "train/labels", data=tr_y.astype(">i8")))
    R.case(K, "dataset labels stored big-endian i64", dataset_consumers(path)[0][1], [path, "labels"])
    path = copy_h5(tiny, W("d-label-neg.h5"), lambda f: f["train/labels"].__setitem__(3, -4))
    R.case(K, "dataset label -4", dataset_consumers(path)[0][1], [path, "labels"])
    path = copy_h5(tiny, W("d-classes-0.h5"), lambda f: f.attrs.__setitem__("classes", np.int64(0)))
    R.case(K, "dataset classes attribute 0", dataset_consumers(path)[0][1], [path, "classes"])
    path = copy_h5(tiny, W("d-classes-neg.h5"), lambda f: f.attrs.__setitem__("classes", np.int64(-3)))
    R.case(K, "dataset classes attribute -3", dataset_consumers(path)[0][1], [path, "classes"])
    path = copy_h5(tiny, W("d-unwritten.h5"), lambda f: replace(f, "train/images", shape=(40, 8, 8, 1), dtype="u1",
                                                                 chunks=(8, 8, 8, 1)))
    R.case(K, "dataset images never written (no stored data)", dataset_consumers(path)[0][1], [path, "images"])

    # =================================================================== 3. poison applied to other images
    K = "3-fingerprint"
    for cmd, args in [("train", train_base + ["--data", tiny, "--subset", "20", "--subset-seed", "1", "--poison",
                                              W("psub.h5"), "--out", W("x.h5")]),
                      ("probe", probe_base + ["--random-init", "--width", "2", "--data", tiny, "--subset", "20",
                                              "--subset-seed", "1", "--poison", W("psub.h5")]),
                      ("defend", ["defend", "--method", "noise", "--data", tiny, "--subset", "20", "--subset-seed", "1",
                                  "--poison", W("psub.h5"), "--out", W("x-d.h5")])]:
        R.case(K, f"subset-seed 0 poison on subset-seed 1 via {cmd}", args, [W("psub.h5"), "fingerprint"])
    for cmd, args in [("train", train_base + ["--data", other, "--poison", W("p.h5"), "--out", W("x.h5")]),
                      ("probe", probe_base + ["--random-init", "--width", "2", "--data", other, "--poison", W("p.h5")]),
                      ("defend", ["defend", "--method", "noise", "--data", other, "--poison", W("p.h5"), "--out",
                                  W("x-d.h5")]),
                      ("export", ["export", W("p.h5"), "--data", other, "--out", W("x-exp")])]:
        R.case(K, f"poison on other pixels of the same shape via {cmd}", args, [W("p.h5"), "fingerprint"])
    path = copy_h5(W("p.h5"), W("p-fp-bad.h5"), lambda f: f.attrs.__setitem__("data_fingerprint", "0123456789abcdef"))
    R.case(K, "poison with a wrong fingerprint via train", poison_consumers(path)[1][1], [path, "fingerprint"])

    # =================================================================== 4. truncated / malformed data files
    K = "4-truncated"
    good_images = gzip.compress(idx_images(12, 4, 5))
    for tag, gz in [("cut-trailer", good_images[:-8]), ("cut-4", good_images[:-4]), ("cut-half", good_images[:len(good_images) // 2]),
                    ("bad-crc", good_images[:-8] + bytes([good_images[-8] ^ 0xFF]) + good_images[-7:]),
                    ("bad-length", good_images[:-4] + struct.pack("<I", 7)),
                    ("extra-payload", gzip.compress(idx_images(12, 4, 5) + b"\x01\x02\x03"))]:
        root = write_fmnist(W(f"fm-{tag}"), images=RawGz(gz))
        R.case(K, f"idx images .gz {tag}", ["dataset-info", "fashion-mnist", "--root", root, "--splits", "train"],
               ["train-images-idx3-ubyte"])
    root = write_fmnist(W("fm-plain-extra"), images=idx_images(12, 4, 5) + b"\0\0", raw=True)
    R.case(K, "idx images plain with extra bytes", ["dataset-info", "fashion-mnist", "--root", root, "--splits", "train"],
           ["train-images-idx3-ubyte"])
    root = write_fmnist(W("fm-labels-extra"), labels=idx_labels([i % 10 for i in range(12)] + [0]))
    R.case(K, "idx labels .gz extra byte", ["dataset-info", "fashion-mnist", "--root", root, "--splits", "train"],
           ["train-labels-idx1-ubyte"])
    root = write_fmnist(W("fm-zero"), images=idx_images(0, 4, 5), labels=idx_labels([]))
    R.case(K, "idx with zero images", ["dataset-info", "fashion-mnist", "--root", root, "--splits", "train"],
           ["train-images-idx3-ubyte"])
    root = write_fmnist(W("fm-zero-rows"), images=struct.pack(">IIII", 0x803, 12, 0, 5))
    R.case(K, "idx with zero rows", ["dataset-info", "fashion-mnist", "--root", root, "--splits", "train"],
           ["train-images-idx3-ubyte"])
    for shape, tag in [((0, 8, 8, 1), "N0"), ((40, 0, 8, 1), "H0"), ((40, 8, 8, 0), "C0")]:
        def edit(f, shape=shape):
            replace(f, "train/images", data=np.zeros(shape, np.uint8))
            if shape[0] == 0:
                replace(f, "train/labels", data=np.zeros((0,), np.int64))
        path = copy_h5(tiny, W(f"d-zero-{tag}.h5"), edit)
        for cmd, args in dataset_consumers(path):
            R.case(K, f"dataset images {shape} via {cmd}", args, [path, "images"])
    path = copy_h5(W("p.h5"), W("p-zero.h5"), lambda f: replace(f, "delta", data=np.zeros((40, 1, 0, 8), np.float32)))
    R.case(K, "poison delta [40, 1, 0, 8] via export", poison_consumers(path)[0][1], [path, "delta"])
    with open(tiny, "rb") as f:
        whole = f.read()
    path = W("d-truncated.h5")
    with open(path, "wb") as f:
        f.write(whole[: len(whole) // 2])
    R.case(K, "dataset file cut in half", dataset_consumers(path)[0][1], [path])
    os.makedirs(W("c10/cifar-10-batches-bin"), exist_ok=True)
    rec = bytes([3]) + bytes(3072)
    for b in range(1, 6):
        with open(W(f"c10/cifar-10-batches-bin/data_batch_{b}.bin"), "wb") as f:
            f.write(rec * 2 + (b"\x01" if b == 3 else b""))
    with open(W("c10/cifar-10-batches-bin/test_batch.bin"), "wb") as f:
        f.write(rec)
    R.case(K, "cifar10 batch of wrong length", ["dataset-info", "cifar10", "--root", W("c10"), "--splits", "train"],
           ["data_batch_3.bin"])
    os.makedirs(W("c100"), exist_ok=True)
    with open(W("c100/train.bin"), "wb") as f:
        f.write((bytes([1, 5]) + bytes(3072)) * 2 + bytes(100))
    R.case(K, "cifar100 train.bin of wrong length", ["dataset-info", "cifar100", "--root", W("c100"), "--splits", "train"],
           ["train.bin"])
    os.makedirs(W("stl"), exist_ok=True)
    with open(W("stl/train_X.bin"), "wb") as f:
        f.write(bytes(27648 * 2))
    with open(W("stl/train_y.bin"), "wb") as f:
        f.write(bytes([1, 2, 3]))
    R.case(K, "stl10 labels and images disagree", ["dataset-info", "stl10", "--root", W("stl"), "--splits", "train"],
           ["train_y.bin"])

    # =================================================================== 5. nonsensical numbers
    K = "5-cli"
    for flag, val in [("--lr", "-1"), ("--lr", "nan"), ("--lr", "inf"), ("--temperature", "-1"), ("--temperature", "nan"),
                      ("--proj-dim", "-5"), ("--proj-hidden", "-2"), ("--pred-hidden", "-3"), ("--final-lr-fraction", "-1"),
                      ("--subset", "-1"), ("--momentum", "1.5"), ("--momentum", "nan"), ("--weight-decay", "-1"),
                      ("--weight-decay", "nan"), ("--warmup-epochs", "nan"), ("--warmup-start-lr", "-1"),
                      ("--width", "0"), ("--width", "-3"), ("--batch-size", "0"), ("--epochs", "-2"), ("--pad-to", "-1"),
                      ("--channels", "2"), ("--checkpoint-every", "-1"), ("--loss-scale", "nan"), ("--loss-scale", "-1"),
                      ("--ema-momentum", "2"), ("--warmup-steps", "-5")]:
        R.case(K, f"train {flag} {val}", with_opt(train_base, flag, val) + ["--data", tiny, "--out", W("x.h5")], [flag, val])
    R.case(K, "train --queue-size -7", with_opt(moco_base, "--queue-size", "-7") + ["--data", tiny, "--out", W("x.h5")],
           ["--queue-size", "-7"])
    for spec, key in [("adv:eps=2", "eps"), ("adv:steps=-1", "steps"), ("adv:alpha=nan", "alpha"), ("cutout:size=0", "size"),
                      ("noise:std=-1", "std"), ("usvt:p=1.5", "p")]:
        R.case(K, f"train --defense {spec}", train_base + ["--data", tiny, "--defense", spec, "--out", W("x.h5")],
               ["--defense", key])
    R.case(K, "train --resume-from missing file", train_base + ["--data", tiny, "--resume", "--resume-from",
                                                                W("missing.h5"), "--out", W("x.h5")],
           ["--resume-from", W("missing.h5")])
    for flag, val in [("--model-steps", "-1"), ("--noise-batches", "-1"), ("--rounds", "-1"), ("--lr", "-1"),
                      ("--lr", "nan"), ("--temperature", "-1"), ("--final-lr-fraction", "-1"), ("--ratio", "2"),
                      ("--ratio", "nan"), ("--step", "nan"), ("--eps", "2"), ("--eps", "nan"), ("--pgd-steps", "0"),
                      ("--proj-dim", "-5"), ("--queue-size", "-7"), ("--subset", "-1"), ("--momentum", "-1"),
                      ("--weight-decay", "nan"), ("--checkpoint-every", "-1"), ("--pretrain-epochs", "-1")]:
        R.case(K, f"poison {flag} {val}", with_opt(with_opt(cpc, "--rounds", "1"), flag, val) + ["--data", tiny, "--out", W("x.h5")],
               [flag, val])
    for flag, val in [("--subset", "-2"), ("--test-subset", "-1"), ("--lr", "-1"), ("--epochs", "0"),
                      ("--iterations", "-1"), ("--l2", "nan"), ("--knn-k", "0"), ("--knn-temperature", "0"),
                      ("--batch-size", "0"), ("--width", "0"), ("--pad-to", "-3"), ("--gamma", "nan")]:
        R.case(K, f"probe {flag} {val}", with_opt(probe_base, flag, val) + ["--random-init", "--data", tiny], [flag, val])
    R.case(K, "probe --milestones x", probe_base[:1] + ["--mode", "sgd", "--epochs", "1", "--random-init", "--width", "2",
                                                         "--data", tiny, "--milestones", "1,x"], ["--milestones", "x"])
    for flag, val, method in [("--size", "0", "cutout"), ("--batch", "0", "noise"), ("--subset", "-1", "noise"),
                              ("--std", "nan", "noise"), ("--p", "2", "usvt"), ("--kernel", "4", "smooth")]:
        R.case(K, f"defend {method} {flag} {val}", ["defend", "--method", method, "--data", tiny, flag, val, "--out",
                                                   W("x-d.h5")], [flag.lstrip("-"), val])
    R.case(K, "convert --limit -1", ["convert", "fashion-mnist", "--root", fm, "--limit", "-1", "--out", W("x.h5")],
           ["--limit", "-1"])
    R.case(K, "convert imagefolder --size 0", ["convert", "imagefolder", "--input", W("nothing"), "--size", "0", "--out",
                                               W("x.h5")], ["--size", "0"])
    write_scales_preset(work, tiny)
    R.control("experiment dry run", ["experiment", "--preset", W("presets/p.toml"), "--scale", "tiny", "--dry-run",
                                     "--results", W("res")])
    R.case(K, "experiment --max-cells -1", ["experiment", "--preset", W("presets/p.toml"), "--scale", "tiny",
                                            "--dry-run", "--max-cells", "-1", "--results", W("res")], ["--max-cells", "-1"])

    # =================================================================== 6. resume with changed settings
    K = "6-resume"

    def fresh(src, name):
        shutil.copyfile(src, W(name))
        return W(name)
    resume2 = train_core + ["--epochs", "2", "--data", tiny, "--resume"]
    R.case(K, "train --resume with another --weight-decay", resume2 + ["--weight-decay", "0.5", "--out",
                                                                       fresh(W("ck.h5"), "r1.h5")], ["weight_decay"])
    R.case(K, "train --resume adding --poison", resume2 + ["--poison", W("p.h5"), "--out", fresh(W("ck.h5"), "r2.h5")],
           ["poison"])
    R.case(K, "train --resume with another --lr", resume2 + ["--lr", "0.05", "--out", fresh(W("ck.h5"), "r3.h5")], ["lr"])
    R.case(K, "train --resume with another --momentum", resume2 + ["--momentum", "0.5", "--out", fresh(W("ck.h5"), "r4.h5")],
           ["momentum"])
    R.case(K, "train --resume with another --subset", resume2 + ["--subset", "20", "--out", fresh(W("ck.h5"), "r5.h5")],
           ["subset"])
    R.case(K, "train --resume with another --temperature", resume2 + ["--temperature", "0.2", "--out",
                                                                      fresh(W("ck.h5"), "r6.h5")], ["temperature"])
    R.case(K, "train --resume: epochs done exceed --epochs",
           train_base + ["--data", tiny, "--resume", "--out", fresh(W("ck2.h5"), "r7.h5")], ["epochs"])
    shutil.copyfile(W("gen.ckpt.h5"), W("g1.ckpt.h5"))
    R.case(K, "poison --resume with another --weight-decay",
           cpc + ["--rounds", "3", "--data", tiny, "--resume", "--weight-decay", "0.5", "--out", W("g1.h5")],
           ["weight_decay"])
    shutil.copyfile(W("gen.ckpt.h5"), W("g2.ckpt.h5"))
    R.case(K, "poison --resume with another --lr", cpc + ["--rounds", "3", "--data", tiny, "--resume", "--lr", "0.01",
                                                          "--out", W("g2.h5")], ["lr"])
    shutil.copyfile(W("gen.ckpt.h5"), W("g3.ckpt.h5"))
    R.case(K, "poison --resume: rounds done exceed --rounds",
           cpc + ["--rounds", "1", "--data", tiny, "--resume", "--out", W("g3.h5")], ["rounds"])
    shutil.copyfile(W("gen.ckpt.h5"), W("g4.ckpt.h5"))
    R.case(K, "poison --resume with another --eps", cpc + ["--rounds", "3", "--data", tiny, "--resume", "--eps", "4/255",
                                                           "--out", W("g4.h5")], ["eps"])
    for tag, text, key in [("unknown key in another scale", "[scale.other]\nvictim.epochz = 3\n", "epochz"),
                           ("impossible value in another scale", "[scale.other]\nvictim.epochs = -3\n", "epochs"),
                           ("impossible value in the run scale", "[scale.tiny]\nalgo.moco.queue_size = -9\n", "queue_size")]:
        p = write_preset(work, f"bad-{len(text)}-{key}.toml", text)
        R.case(K, f"experiment preset: {tag}", ["experiment", "--preset", p, "--scale", "tiny", "--dry-run", "--results",
                                                W("res")], [key])

    # =================================================================== summary
    counts = {}
    for r in R.results:
        counts.setdefault(r["class"], {}).setdefault(r["verdict"], 0)
        counts[r["class"]][r["verdict"]] += 1
    total = {}
    for r in R.results:
        total[r["verdict"]] = total.get(r["verdict"], 0) + 1
    print(f"\n{len(R.results)} cases")
    for k in sorted(counts):
        print(f"  {k:14} " + ", ".join(f"{v} {n}" for v, n in sorted(counts[k].items())))
    print("  total          " + ", ".join(f"{v} {n}" for v, n in sorted(total.items())))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"counts": counts, "total": total, "cases": R.results}, f, indent=1)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("files kept in", work)


def write_scales_preset(work, data):
    os.makedirs(os.path.join(work, "presets"), exist_ok=True)
    with open(os.path.join(work, "presets/scales.toml"), "w") as f:
        f.write(f'[tiny]\nwidth = 2\n[tiny.data]\ndataset = "{data}"\nsubset = 0\n[tiny.victim]\nepochs = 1\n'
                f'batch_size = 8\n[tiny.supervised]\nepochs = 1\nbatch_size = 8\n'
                f'[other]\nwidth = 3\n[other.data]\ndataset = "{data}"\n')
    with open(os.path.join(work, "presets/p.toml"), "w") as f:
        f.write('title = "t"\ncolumns = [ { label = "A", victim = "simclr" } ]\n'
                'rows = [ { label = "clean", attack = "none" } ]\n[scale.tiny]\n[scale.other]\n')


def write_preset(work, name, tail):
    path = os.path.join(work, "presets", name)
    with open(path, "w") as f:
        f.write('title = "t"\ncolumns = [ { label = "A", victim = "simclr" } ]\n'
                'rows = [ { label = "clean", attack = "none" } ]\n')
        if "[scale.tiny]" not in tail:
            f.write("[scale.tiny]\n")
        f.write(tail)
        if "[scale.other]" not in tail:
            f.write("[scale.other]\n")
    return path


if __name__ == "__main__":
    main()
