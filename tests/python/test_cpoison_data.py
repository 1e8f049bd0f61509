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
print("python-reader-ok")
