#!/usr/bin/python3
"""The "plaid" design of docs/experiments.md ("A sample-wise component to make the encoder carry
the class cue"): each image of classes 1..K-1 gets half its class's grating (from a class-wise
`cpoison poison --attack pattern` file) plus half a grating of its own (random orientation in
[0, pi), period in [4, 10] pixels and phase, square wave); class 0 stays blank. Exploration only:
it was weaker than the pattern.

  plaid_design.py PATTERN.h5 SAMPLE_TEMPLATE.h5 LABELS.h5 OUT.h5 SEED

PATTERN.h5: a class-wise pattern file; SAMPLE_TEMPLATE.h5: any sample-wise poison file of the
same training set (its /delta is overwritten, its attributes kept, `attack` set to `random`);
LABELS.h5: `cpoison export SAMPLE_TEMPLATE.h5 --format h5 ...`'s poisoned_train.h5 (its /labels).
"""
import shutil
import sys

import h5py
import numpy as np

pattern_file, template, labels_file, out, seed = sys.argv[1:6]
pat = h5py.File(pattern_file, "r")["delta"][...]
labels = h5py.File(labels_file, "r")["labels"][...]
shutil.copy(template, out)
rng = np.random.default_rng(1000 + int(seed))
_, C, H, W = pat.shape
y, x = np.mgrid[0:H, 0:W].astype(np.float64)
d = np.zeros((labels.shape[0], C, H, W), np.float32)
for i, c in enumerate(labels.astype(int)):
    if c == 0:
        continue
    th, period, phase = rng.uniform(0, np.pi), rng.uniform(4, 10), rng.uniform(0, 2 * np.pi)
    own = np.where(np.sin(2 * np.pi * (x * np.cos(th) + y * np.sin(th)) / period + phase) >= 0, 1.0, -1.0)
    d[i] = 0.5 * pat[c] + 0.5 * own
with h5py.File(out, "r+") as f:
    assert f["delta"].shape == d.shape, "the template must be sample-wise, one row per training image"
    f["delta"][...] = d
    f.attrs["attack"] = "random"
