"""cpoison's HDF5 dataset and poison files as a PyTorch-style Dataset (h5py + numpy; torch only
when installed). docs/poison-format.md and data/README.md describe the files.

    from cpoison_data import CpoisonDataset
    ds = CpoisonDataset("data/train.h5", poison="poison.h5")
    image, label = ds[0]

The poison is applied exactly as cpoison's poison::apply_poison does (round to nearest, clip to
the L-infinity ball of floor(255 eps) levels), so the images equal those `cpoison export` writes.
A poison made for a subset (`--subset`) or padded / replicated data (`--pad-to`, `--channels`)
is applied to the same rows and shapes: the poison file's /source_rows names the rows of the
dataset file, and its pad_to / channels attributes say how they were changed. Layout letters:
N images, K classes, C channels, H rows, W columns.
"""
import h5py
import numpy as np

try:  # torch is optional: without it the Dataset returns numpy arrays
    import torch
    from torch.utils.data import Dataset as _Base
except ImportError:  # pragma: no cover - depends on the machine
    torch = None
    _Base = object

__all__ = ["load_dataset", "load_poison", "apply_poison", "CpoisonDataset"]


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def load_dataset(path, split="train"):
    """(images u8 [N,H,W,C], labels i64 [N], attributes dict) of one split of a dataset file:
    the group /<split>/ when the file has it, else the flat /images and /labels."""
    with h5py.File(path, "r") as f:
        prefix = split + "/" if split + "/images" in f else ""
        if not prefix and "images" not in f:
            raise ValueError(f"{path}: holds neither /{split}/images nor /images")
        if not prefix and "split" in f.attrs and _text(f.attrs["split"]) != split:
            raise ValueError(f"{path}: holds the {_text(f.attrs['split'])} split only, not {split}")
        images = f[prefix + "images"][()]
        labels = f[prefix + "labels"][()].astype(np.int64)
        attrs = {k: (_text(v) if isinstance(v, (bytes, str)) else v) for k, v in f.attrs.items()}
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{path}: images must be uint8 [N, H, W, C], found {images.dtype} {images.shape}")
    return images, labels, attrs


def load_poison(path):
    """The poison file as a dict: delta f32 [N or K, C, H, W] (unit scale), indices i64 [M], eps,
    kind ("sample" | "class"), source_rows (i64 [N] or None) and every attribute."""
    with h5py.File(path, "r") as f:
        attrs = {k: (_text(v) if isinstance(v, (bytes, str)) else v) for k, v in f.attrs.items()}
        poison = {
            "delta": f["delta"][()].astype(np.float32),
            "indices": f["indices"][()].astype(np.int64),
            "source_rows": f["source_rows"][()].astype(np.int64) if "source_rows" in f else None,
        }
    poison.update(eps=float(attrs["eps"]), kind=_text(attrs["kind"]), attrs=attrs)
    if not np.all(np.isfinite(poison["delta"])) or np.abs(poison["delta"]).max(initial=0) > 1:
        raise ValueError(f"{path}: /delta must be finite and within [-1, 1]")
    return poison


def apply_poison(images, labels, poison):
    """The training set as the victim sees it (cpoison's poison::apply_poison): for a poisoned row
    with pixel p (0..255), q = clip(round(255 * clamp(p / 255 + eps * clamp(d, -1, 1), 0, 1)),
    p - r, p + r), r = floor(255 eps), in float64, round half to even; other rows stay clean."""
    eps, kind = poison["eps"], poison["kind"]
    delta, indices = poison["delta"], poison["indices"]
    n, h, w, c = images.shape
    if delta.shape[1:] != (c, h, w):
        raise ValueError(f"delta {delta.shape} does not fit images of {c}x{h}x{w} (C x H x W)")
    out = images.copy()
    if kind == "class":
        rows = labels[indices]
        keep = rows >= 0  # unlabelled images get no class-wise noise
        indices, rows = indices[keep], rows[keep]
    else:
        rows = indices
    d = np.clip(delta[rows].astype(np.float64), -1.0, 1.0)
    d = np.where(np.isfinite(d), d, 0.0).transpose(0, 2, 3, 1)  # [M, H, W, C]
    p = images[indices].astype(np.float64)
    radius = np.floor(255.0 * eps + 1e-9)
    target = np.rint(255.0 * np.clip(p / 255.0 + eps * d, 0.0, 1.0))
    out[indices] = np.clip(np.clip(target, p - radius, p + radius), 0, 255).astype(np.uint8)
    return out


def _pad_center(images, side):
    n, h, w, c = images.shape
    if side <= 0 or (side == h and side == w):
        return images
    out = np.zeros((n, side, side, c), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[:, top:top + h, left:left + w, :] = images
    return out


class CpoisonDataset(_Base):
    """Images and labels of a cpoison HDF5 dataset file, optionally poisoned.

    data: the dataset file; poison: a poison file (or None); split: "train" or "test" (a poison
    applies to the training split only); transform: called on each u8 [H, W, C] image (default:
    float [C, H, W] in [0, 1], a torch tensor when torch is installed, as ToTensor gives)."""

    def __init__(self, data, poison=None, split="train", transform=None):
        images, labels, self.attrs = load_dataset(data, split)
        self.poison = load_poison(poison) if poison is not None else None
        if self.poison is not None:
            if split != "train":
                raise ValueError("a poison applies to the training split")
            a = self.poison["attrs"]
            rows = self.poison["source_rows"]
            if rows is not None:  # the subset the poison was made for, by row
                images, labels = images[rows], labels[rows]
            images = _pad_center(images, int(a.get("pad_to", 0)))
            if int(a.get("channels", 0)) == 3 and images.shape[3] == 1:
                images = np.repeat(images, 3, axis=3)
            if images.shape[0] != int(a["image_count"]):
                raise ValueError(f"{poison}: made for {int(a['image_count'])} images, {data} gives {images.shape[0]} "
                                 "(a poison without /source_rows needs the very rows it was made for)")
            images = apply_poison(images, labels, self.poison)
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image, label = self.images[i], int(self.labels[i])
        if self.transform is not None:
            return self.transform(image), label
        x = image.transpose(2, 0, 1).astype(np.float32) / 255.0
        return (torch.from_numpy(x) if torch is not None else x), label
