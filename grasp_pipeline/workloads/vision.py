"""The vision workload: 8×8 handwritten digits under documented domain shifts.

GRASP's scoring only sees per-example gradients, so the same asset graph attributes image
classification as it does language modelling. The images are scikit-learn's bundled copy of
the UCI "Optical Recognition of Handwritten Digits" test set (`sklearn.datasets.load_digits`:
1,797 images, 8×8 pixels, intensities 0–16, ten classes; CC BY 4.0), shipped here as the
corpus `data/digits_shifts.jsonl.gz` (see data/DIGITS_PROVENANCE.md) so nothing is downloaded and
scikit-learn is only needed to rebuild it (`python -m grasp_pipeline.workloads.vision --write-corpus`).

**Domains are shifts** of the same images, each deterministic from (seed, domain, image):

| domain | shift (scipy.ndimage, on the 0–16 image) |
|---|---|
| `clean` | none |
| `thick` | stroke thickening: grey dilation with a 2×2 footprint |
| `rotated` | rotation by ±(25°–45°), bilinear, zero fill, same 8×8 frame |
| `noisy` | additive Gaussian sensor noise, σ = 4, clipped to 0–16 |
| `inverted` | contrast inversion, 16 − x (a light background) |

Every domain lists all 1,797 images in one seeded order, so a domain's task set (its last
examples) is the same base images in every domain and none of them reaches any pool.

**One corpus row is one image** (the workload sets `whole_documents`, so the corpus stage
does not cut rows): `text` is the label, a colon, then the 8 pixel rows separated by `/`,
each 8 hex digits of intensity 0–15 (the 0–16 scale times 15/16, rounded), e.g.
`7:0037ff80/00f0...`. `encode` parses it into (n, 65) float rows [label, 64 pixels / 15].
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..infra.fields import doc
from .base import seeded_build

DIGITS_CORPUS: Path = Path(__file__).resolve().parents[1] / "data" / "digits_shifts.jsonl.gz"
SIDE = 8
CLASSES = 10
LEVELS = 15  # stored intensities 0..15: one hex digit per pixel
DOMAINS = ("clean", "thick", "rotated", "noisy", "inverted")


# ---------------------------------------------------------------- the corpus

def apply_shift(domain: str, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Returns the shifted copy of one 8×8 image on the 0–16 scale (float)."""
    from scipy import ndimage

    image = image.astype(np.float64)
    if domain == "clean":
        return image
    if domain == "thick":
        return ndimage.grey_dilation(image, footprint=np.ones((2, 2)))
    if domain == "rotated":
        angle = rng.uniform(25.0, 45.0) * rng.choice([-1.0, 1.0])
        return np.clip(ndimage.rotate(image, angle, reshape=False, order=1, mode="constant", cval=0.0), 0, 16)
    if domain == "noisy":
        return np.clip(image + rng.normal(0.0, 4.0, image.shape), 0, 16)
    if domain == "inverted":
        return 16.0 - image
    raise ValueError(f"unknown digits domain {domain!r}; choose from {DOMAINS}")


def image_to_text(label: int, image: np.ndarray) -> str:
    """Serialises an 8×8 image on the 0–16 scale: 'label:row/row/...' with hex intensities 0–15."""
    levels = np.clip(np.rint(np.asarray(image, float) * LEVELS / 16.0), 0, LEVELS).astype(int)
    return f"{int(label)}:" + "/".join("".join(f"{v:x}" for v in row) for row in levels.reshape(SIDE, SIDE))


def text_to_image(text: str) -> tuple[int, np.ndarray]:
    """Parses `image_to_text`'s format; returns (label, (8, 8) int levels 0–15)."""
    label, sep, body = text.partition(":")
    rows = body.split("/")
    if (not sep or not label.isdigit() or not 0 <= int(label) < CLASSES or len(rows) != SIDE
            or any(len(r) != SIDE for r in rows)):
        raise ValueError(f"not a digits image row: {text[:40]!r}; expected 'label:' (0-9) then 8 rows of "
                         "8 hex digits separated by '/' (see grasp_pipeline/workloads/vision.py)")
    try:
        pixels = np.array([[int(c, 16) for c in row] for row in rows])
    except ValueError:
        raise ValueError(f"not a digits image row: {text[:40]!r}; pixels must be hex digits 0-f") from None
    return int(label), pixels


def build_digits_documents(seed: int = 0, domains: Sequence[str] = DOMAINS) -> list[dict]:
    """Returns the corpus records {id, domain, text}: every digits image under every shift."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    records = []
    for d, domain in enumerate(domains):
        for i in order:
            rng = np.random.default_rng([seed, d, int(i)])
            shifted = apply_shift(domain, digits.images[i], rng)
            records.append({"id": f"{domain}-{int(i):04d}", "domain": domain,
                            "text": image_to_text(digits.target[i], shifted)})
    return records


def write_digits_corpus(path: str | Path = DIGITS_CORPUS, seed: int = 0) -> Path:
    """Writes the gzipped JSONL corpus (byte-identical for the same seed and library versions)."""
    path = Path(path)
    lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in build_digits_documents(seed))
    with open(path, "wb") as out:  # mtime=0: the same records give the same file
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
            gz.write(lines.encode())
    return path


# ---------------------------------------------------------------- the models

@dataclass(frozen=True)
class VisionParams:
    vision_model: str = doc("vision: mlp (one tanh hidden layer of `hidden` units) or cnn (two 3×3 conv "
                            "layers; slower to train: raise the retrain lr).", "mlp",
                            choices=("mlp", "cnn"))
    vision_channels: int = doc("vision cnn: channels of the first convolution (the second has twice as many).",
                                 8, minimum=1)
    hidden: int = doc("Hidden units of the byte MLP and of the vision MLP.", 64, minimum=1)


class DigitsCNN(nn.Module):
    """Two 3×3 conv + ReLU + 2×2 max-pool stages (8×8 → 4×4 → 2×2), then a linear classifier."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.out = nn.Linear(2 * channels * 4, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(images)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.out(h.flatten(1))


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = nn.Linear(SIDE * SIDE, hidden)
        self.out = nn.Linear(hidden, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(images.flatten(1))))


class VisionWorkload:
    """Digits classification: one corpus row = one image; loss = cross-entropy of its label."""

    name = "vision"
    whole_documents = True  # a row is an image: never cut or merged
    default_corpus = DIGITS_CORPUS

    def __init__(self, params: VisionParams = VisionParams(), device: str = "cpu"):
        if params.vision_model not in ("cnn", "mlp"):
            raise ValueError(f"vision_model must be 'cnn' or 'mlp', got {params.vision_model!r}")
        self.params = params
        self.device = torch.device(device)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Returns (n, 65) float32 rows: the label, then the 64 pixels scaled to 0–1."""
        out = np.zeros((len(texts), 1 + SIDE * SIDE), dtype=np.float32)
        for row, text in enumerate(texts):
            label, pixels = text_to_image(text)
            out[row, 0] = label
            out[row, 1:] = pixels.reshape(-1) / LEVELS
        return torch.from_numpy(out).to(self.device)

    unit_vocabulary = CLASSES

    def predicted_units(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The label the loss predicts for each image."""
        return [np.array([text_to_image(t)[0]]) for t in texts]

    def example_labels(self, texts: Sequence[str]) -> list[str]:
        """The digit of each row (selections are balanced across them)."""
        return [str(text_to_image(text)[0]) for text in texts]

    def build_model(self, seed: int) -> nn.Module:
        if self.params.vision_model == "cnn":
            return seeded_build(seed, lambda: DigitsCNN(self.params.vision_channels)).to(self.device)
        return seeded_build(seed, lambda: DigitsMLP(self.params.hidden)).to(self.device)

    def example_losses(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        labels = batch[:, 0].long()
        images = batch[:, 1:].reshape(-1, 1, SIDE, SIDE)
        return F.cross_entropy(model(images), labels, reduction="none")

    def config(self) -> dict:
        return {"workload": self.name, **asdict(self.params)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grasp_pipeline.workloads.vision",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--write-corpus", metavar="PATH", nargs="?", const=str(DIGITS_CORPUS),
                        help=f"rebuild the digits corpus from scikit-learn (default: {DIGITS_CORPUS})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.write_corpus is None:
        parser.print_help()
        return 2
    print(write_digits_corpus(args.write_corpus, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
