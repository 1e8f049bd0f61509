#!/usr/bin/python3
"""Rewrites /delta of a class-wise `cpoison poison --attack pattern` file with another grating
design, for the sweep in docs/experiments.md ("The blank class"). Exploration only: the designs
that won are built into `--attack pattern` (`--pattern-blank`).

  pattern_designs.py IN.h5 OUT.h5 DESIGN SEED [PERIOD]

DESIGN: fold  (orientations (pi/2) c / (K-1), in [0, pi/2]: a horizontal flip maps theta to
               -theta, which has the same |theta|, so flips do not pair classes up)
        plaid (the product of the gratings at +theta and -theta, theta as for fold: every
               pattern is its own mirror image up to a phase)
        blankB (IN's gratings with class B set to 0; e.g. blank6)
Phases of fold and plaid are drawn from numpy's default_rng(SEED).
"""
import shutil
import sys

import h5py
import numpy as np

src, dst, design, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
period = float(sys.argv[5]) if len(sys.argv) > 5 else 8.0
shutil.copy(src, dst)
with h5py.File(dst, "r+") as f:
    d = f["/delta"]
    K, C, H, W = d.shape
    if design.startswith("blank"):
        d[int(design[5:])] = 0.0
        sys.exit(0)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    out = np.zeros((K, C, H, W), np.float32)
    for c in range(K):
        th = (np.pi / 2) * c / (K - 1)
        v = np.sin(2 * np.pi * (x * np.cos(th) + y * np.sin(th)) / period + rng.uniform(0, 2 * np.pi))
        if design == "plaid":
            v = v * np.sin(2 * np.pi * (-x * np.cos(th) + y * np.sin(th)) / period + rng.uniform(0, 2 * np.pi))
        elif design != "fold":
            sys.exit("unknown design " + design)
        out[c, :] = np.where(v >= 0, 1.0, -1.0)
    d[...] = out
