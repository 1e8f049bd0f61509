#!/usr/bin/python3
"""Rewrites /delta of a class-wise `cpoison poison --attack pattern` file with another grating
design, for the sweeps in docs/experiments.md ("The blank class", "Other class-wise cues").
Exploration only: the designs that won are built into `--attack pattern` (`--pattern-blank`).

  pattern_designs.py IN.h5 OUT.h5 DESIGN SEED [PERIOD]

IN.h5 should be a ten-gratings file (`--pattern-blank -1`); /delta is in units of eps.
DESIGN: fold   (orientations (pi/2) c / (K-1), in [0, pi/2]: a horizontal flip maps theta to
                -theta, which has the same |theta|, so flips do not pair classes up)
        plaid  (the product of the gratings at +theta and -theta, theta as for fold: every
                pattern is its own mirror image up to a phase)
        blankB (IN's gratings with class B set to 0; e.g. blank6)
        blankset:B1,B2,... (IN's gratings with every listed class set to 0; e.g. blankset:1,3,4,6,7)
        dc     (no grating: class c adds c/(K-1) eps to every pixel, a brightness ladder)
        dcs    (the same ladder centred: (2c/(K-1) - 1) eps)
        gdc    (half of IN's grating plus half of the dc ladder)
        mp     (class 0 blank; class c > 0: one orientation pi c/K, two periods 5 and 10 summed
                before the sign, so that the orientation cue survives the crops' zoom)
Phases of fold, plaid and mp are drawn from numpy's default_rng(SEED).
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
    if design.startswith("blankset:"):
        for c in design[len("blankset:"):].split(","):
            d[int(c)] = 0.0
        sys.exit(0)
    if design.startswith("blank"):
        d[int(design[5:])] = 0.0
        sys.exit(0)
    level = (np.arange(K, dtype=np.float32) / (K - 1))[:, None, None, None]
    if design in ("dc", "dcs", "gdc"):
        g = d[...]
        out = {"dc": np.ones_like(g) * level, "dcs": np.ones_like(g) * (2 * level - 1),
               "gdc": 0.5 * g + 0.5 * level}[design]
        d[...] = out.astype(np.float32)
        sys.exit(0)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    out = np.zeros((K, C, H, W), np.float32)
    for c in range(K):
        if design == "mp":
            if c == 0:
                continue
            th = np.pi * c / K
            u = x * np.cos(th) + y * np.sin(th)
            v = np.sin(2 * np.pi * u / 5 + rng.uniform(0, 6.3)) + np.sin(2 * np.pi * u / 10 + rng.uniform(0, 6.3))
            out[c, :] = np.where(v >= 0, 1.0, -1.0)
            continue
        th = (np.pi / 2) * c / (K - 1)
        v = np.sin(2 * np.pi * (x * np.cos(th) + y * np.sin(th)) / period + rng.uniform(0, 2 * np.pi))
        if design == "plaid":
            v = v * np.sin(2 * np.pi * (-x * np.cos(th) + y * np.sin(th)) / period + rng.uniform(0, 2 * np.pi))
        elif design != "fold":
            sys.exit("unknown design " + design)
        out[c, :] = np.where(v >= 0, 1.0, -1.0)
    d[...] = out
