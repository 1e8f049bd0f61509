#!/usr/bin/env python3
"""A poison that only PyTorch can open -> cpoison's poison file.

    python3 tools/python/torch_to_h5.py delta.pt --data cifar10 --scale pixel --out poison.h5
    python3 tools/python/torch_to_h5.py cp_release.pth --key delta --data cifar10 --scale unit --out cp.h5

Reads a .pt / .pth file with torch.load: a bare tensor (AUE-AAP, TUE), or a checkpoint dict
(the CP release keeps delta among the model's entries): --key names the entry, dotted for nested
dicts ("state_dict.delta"); without --key the one entry whose name ends in "delta", "noise" or
"perturbation" is taken, and several or none is an error listing the tensors found. The tensor is
written to an .npy next to --out and handed to `cpoison import`, which checks its shape against
the clean data, its value range against --scale, records the data fingerprint, and writes the
poison file (docs/poison-format.md). Every argument after the known ones goes to `cpoison import`
unchanged (--eps, --layout, --kind, --subset, ...).
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

SUFFIXES = ("delta", "noise", "perturbation", "perturbations")


def tensors_in(obj, prefix=""):
    """(dotted name, array) for every tensor / array inside nested dicts, lists and tuples."""
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # a torch tensor
        yield prefix, obj.detach().cpu().float().numpy() if obj.is_floating_point() else obj.detach().cpu().numpy()
    elif isinstance(obj, np.ndarray):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors_in(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors_in(v, f"{prefix}.{i}" if prefix else str(i))


def pick(obj, key, path):
    found = dict(tensors_in(obj))
    listing = ", ".join(f"{k or '<tensor>'} {tuple(v.shape)}" for k, v in found.items()) or "none"
    if key:
        if key not in found:
            sys.exit(f"error: {path}: no tensor '{key}' (tensors: {listing})")
        return found[key]
    if "" in found:  # a bare tensor
        return found[""]
    hits = [k for k in found if k.split(".")[-1].lower() in SUFFIXES]
    if len(hits) != 1:
        sys.exit(f"error: {path}: {'several' if hits else 'no'} tensors named like a delta; give --key (tensors: {listing})")
    return found[hits[0]]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help=".pt / .pth file")
    ap.add_argument("--out", required=True, help="poison file to write (HDF5)")
    ap.add_argument("--key", default="", help="entry of a checkpoint dict, dotted for nested dicts")
    ap.add_argument("--cpoison", default=shutil.which("cpoison") or "cpoison", help="the cpoison executable")
    ap.add_argument("--keep-npy", action="store_true", help="keep the intermediate .npy")
    args, rest = ap.parse_known_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("error: PyTorch is not installed (Debian: apt install python3-torch); it is needed to read " + args.input)
    if not os.path.isfile(args.input):
        sys.exit(f"error: {args.input}: no such file")
    obj = torch.load(args.input, map_location="cpu", weights_only=False)
    array = pick(obj, args.key, args.input)
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
    npy = os.path.splitext(args.out)[0] + ".from-torch.npy"
    np.save(npy, np.ascontiguousarray(array))
    try:
        cmd = [args.cpoison, "import", npy, "--out", args.out] + rest
        print("running:", " ".join(cmd), file=sys.stderr)
        return subprocess.call(cmd)
    finally:
        if not args.keep_npy and os.path.exists(npy):
            os.remove(npy)


if __name__ == "__main__":
    sys.exit(main())
