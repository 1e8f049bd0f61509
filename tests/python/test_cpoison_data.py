"""Checks python/cpoison_data.py against cpoison's own output (called by
tests/tools/python_reader_test.cpp with the working folder holding data/train.h5, poison.h5 and
the export of that poison in exp/, and class.h5 with its export in exp-class/).

1. The README's example (the python block after the marker "cpoison_data example") runs as is.
2. The reader's poisoned images equal `cpoison export`'s, byte for byte (sample-wise poison of a
   subset: rows rebuilt from /source_rows; class-wise poison with eps 0.032: round-to-nearest
   and the clip to the eps ball)."""
import os
import re
import sys

import h5py
import numpy as np

source_dir = sys.argv[1]
sys.path.insert(0, os.path.join(source_dir, "python"))
import cpoison_data  # noqa: E402

readme = open(os.path.join(source_dir, "README.md")).read()
match = re.search(r"cpoison_data example.*?```python\n(.*?)```", readme, re.S)
assert match, "README.md has no python block after 'cpoison_data example'"
example = match.group(1)
assert len(example.strip().splitlines()) == 3, "the README example is not 3 lines:\n" + example
scope = {}
exec(compile(example, "README.md example", "exec"), scope)
image, label = scope["image"], scope["label"]
assert tuple(np.asarray(image).shape) == (1, 8, 8), np.asarray(image).shape
print("readme example ok: label", label)

for poison, export in (("poison.h5", "exp"), ("class.h5", "exp-class")):
    ds = cpoison_data.CpoisonDataset("data/train.h5", poison=poison)
    with h5py.File(os.path.join(export, "poisoned_train.h5"), "r") as f:
        want, labels = f["images"][()], f["labels"][()]
    assert ds.images.shape == want.shape, (ds.images.shape, want.shape)
    bad = np.argwhere(ds.images != want)
    assert bad.size == 0, f"{poison}: {len(bad)} pixels differ, first at {bad[0].tolist()}"
    assert (ds.labels == labels).all()
    print(f"{poison}: {len(ds)} images equal to cpoison export")
# tools/python/torch_to_h5.py without PyTorch: a stand-in torch module whose load() returns a
# checkpoint dict as the CP release's would (delta among the model's entries); the script must
# find the entry, and `cpoison import` (argv[2]) must turn it into a poison file.
if len(sys.argv) > 2:
    import types
    sys.path.insert(0, os.path.join(source_dir, "tools", "python"))
    import torch_to_h5  # noqa: E402
    rng = np.random.default_rng(0)
    delta = np.sign(rng.standard_normal((40, 1, 8, 8))).astype(np.float32)
    fake = types.ModuleType("torch")
    fake.load = lambda path, map_location=None, weights_only=None: {"epoch": 3, "model": {"conv.weight": np.zeros(3), "delta": delta}}
    sys.modules["torch"] = fake
    open("release.pth", "wb").close()
    rc = torch_to_h5.main(["release.pth", "--out", "from-torch.h5", "--cpoison", sys.argv[2], "--data", "data/train.h5",
                           "--scale", "unit", "--attack", "cp-s"])
    assert rc == 0, rc
    with h5py.File("from-torch.h5", "r") as f:
        assert (f["delta"][()] == delta).all() and f.attrs["attack"] in (b"cp-s", "cp-s")
        assert len(f.attrs["data_fingerprint"]) == 16
    try:
        torch_to_h5.pick({"a": {"delta": delta}, "b": {"noise": delta}}, "", "x.pth")
        raise AssertionError("two delta-like entries were not refused")
    except SystemExit as e:
        assert "several tensors named like a delta" in str(e), e
    print("torch_to_h5 ok")
print("python-reader-ok")
