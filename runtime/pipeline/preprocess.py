"""Pre-processing: decode a frame, crop a detection, turn an image into a model input tensor.

The trainer imports these very functions to build its training inputs, so what a model sees
in training is byte-for-byte what it sees on a device.

Frames are ``uint8`` arrays, ``H×W×3`` in BGR order (what cameras and OpenCV give). Grayscale
(``H×W`` or ``H×W×1``) and BGRA (``H×W×4``) frames are normalised to BGR by :func:`as_bgr`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from runtime.errors import FrameError, PipelineError
from runtime.pipeline.graph import CropSpec, PreSpec
from runtime.pipeline.imagesize import declared_size, image_format

__all__ = [
    "MAX_FRAME_PIXELS",
    "Letterbox",
    "Preprocessor",
    "as_bgr",
    "crop_box",
    "crop_region",
    "decode_image",
    "preprocess",
    "preprocess_batch",
]

MAX_FRAME_SIDE = 8192
MAX_FRAME_PIXELS = MAX_FRAME_SIDE * MAX_FRAME_SIDE
"""Default limit of the pixels a frame may declare (the device's ``inference.max_frame_pixels``)."""


def decode_image(data: bytes, max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/WebP/BMP bytes to a BGR uint8 frame. Raises FrameError.

    The size the header declares is read first (:func:`~runtime.pipeline.imagesize.
    declared_size`): a frame declaring more than ``max_pixels`` pixels, or whose size cannot
    be read, is refused before the decoder allocates anything. Whatever the decoder itself
    raises (e.g. ``cv2.error``) becomes a FrameError too.
    """
    if not data:
        raise FrameError("empty frame")
    size = declared_size(data)
    if size is None:
        if image_format(data) is None:
            raise FrameError("frame is not a PNG, JPEG, WebP or BMP image")
        raise FrameError(f"frame is not a decodable {image_format(data)} image (bad header)")
    w, h = size
    if w < 1 or h < 1:
        raise FrameError(f"frame declares {w}x{h} pixels")
    if w * h > max_pixels:
        raise FrameError(
            f"frame declares {w}x{h} pixels, more than the limit of {max_pixels} "
            "(inference.max_frame_pixels)"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        msg = str(e).strip().splitlines()
        raise FrameError(f"frame cannot be decoded: {msg[-1] if msg else 'cv2.error'}") from e
    if img is None:
        raise FrameError("frame is not a decodable image")
    if img.dtype != np.uint8:
        # 16-bit PNGs and the like: scale to 8 bits.
        top = 65535.0 if img.dtype == np.uint16 else 1.0  # imdecode gives uint16 or float32
        img = np.clip(img.astype(np.float32) / top * 255.0, 0, 255).astype(np.uint8)
    return as_bgr(img)


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Return a contiguous ``H×W×3`` uint8 BGR view of a gray, BGR or BGRA frame.

    Raises FrameError for anything else (wrong dtype, empty, absurd size).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise FrameError("frame must be a uint8 array")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise FrameError(f"frame has unsupported shape {tuple(image.shape)}")
    h, w = image.shape[:2]
    if h < 1 or w < 1:
        raise FrameError("frame is empty")
    if h > MAX_FRAME_SIDE or w > MAX_FRAME_SIDE:
        raise FrameError(f"frame is {w}x{h}, larger than {MAX_FRAME_SIDE} pixels a side")
    return np.ascontiguousarray(image)


def _nearest(v: float) -> int:
    return math.floor(v + 0.5)  # half up, the same for left and right edges


_ROUNDING: dict[str, tuple[Callable[[float], int], Callable[[float], int]]] = {
    "outward": (math.floor, math.ceil),
    "nearest": (_nearest, _nearest),
    "inward": (math.ceil, math.floor),
}
"""CropSpec.rounding -> how the (left/top, right/bottom) edges become whole pixels."""

_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def crop_region(
    image_size: tuple[int, int], box: tuple[float, float, float, float], spec: CropSpec
) -> tuple[int, int, int, int] | None:
    """The integer pixel region (x1, y1, x2, y2) that :func:`crop_box` cuts from a frame of
    ``image_size`` (width, height): ``box`` with margin (and squared), clamped to the frame.

    Edges are rounded to whole pixels as ``spec.rounding`` says. Returns None when the
    clamped region is smaller than ``spec.min_size`` on a side.
    """
    w, h = image_size
    x1, y1, x2, y2 = float(box[0]), float(box[1]), float(box[2]), float(box[3])
    bw, bh = x2 - x1, y2 - y1
    if spec.square:
        side = max(bw, bh)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        x1, x2, y1, y2 = cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2
        bw = bh = side
    mx, my = bw * spec.margin / 2, bh * spec.margin / 2
    low, high = _ROUNDING[spec.rounding]
    ix1 = max(0, low(x1 - mx))
    iy1 = max(0, low(y1 - my))
    ix2 = min(w, high(x2 + mx))
    iy2 = min(h, high(y2 + my))
    if ix2 - ix1 < spec.min_size or iy2 - iy1 < spec.min_size:
        return None
    return ix1, iy1, ix2, iy2


def crop_box(
    image: np.ndarray, box: tuple[float, float, float, float], spec: CropSpec
) -> np.ndarray | None:
    """Crop ``box`` (x1,y1,x2,y2 pixels) with margin, clamped to the frame.

    Returns None when the clamped crop is smaller than ``spec.min_size`` on a side.
    """
    h, w = image.shape[:2]
    region = crop_region((w, h), box, spec)
    if region is None:
        return None
    ix1, iy1, ix2, iy2 = region
    return image[iy1:iy2, ix1:ix2]


class Letterbox:
    """The affine map from model-input pixels back to source-image pixels."""

    __slots__ = ("pad_x", "pad_y", "scale_x", "scale_y")

    def __init__(self, scale_x: float, scale_y: float, pad_x: float, pad_y: float) -> None:
        self.scale_x, self.scale_y, self.pad_x, self.pad_y = scale_x, scale_y, pad_x, pad_y

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``N×4`` x1,y1,x2,y2 boxes in input pixels to source pixels."""
        out = boxes.astype(np.float32, copy=True)
        out[:, 0::2] = (out[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (out[:, 1::2] - self.pad_y) / self.scale_y
        return out


_SPLIT_MIN_PIXELS = 16 * 1024
"""Batches with fewer pixels (N×H×W) normalise from strided channel views, without a split."""


class Preprocessor:
    """A :class:`PreSpec` compiled once, so a frame pays only for the pixel work.

    Everything that depends on the spec alone — target size, interpolation rule, colour
    conversion, the float32 scale/mean/std constants per channel, the output shape and dtype —
    is decided here; :meth:`one` and :meth:`batch` then run a fixed, short list of OpenCV and
    numpy calls. Crops are resized straight into the batch buffer (no copy per crop), and
    scale/mean/std are applied while each channel plane is written into the output layout.
    The results are exactly those of the plain formula (``float32(pixel) * scale - mean[c]) /
    std[c]``, rounded and clipped for integer inputs); ``tests/runtime/pipeline`` holds them to
    it. Not for ``pre.plugin`` specs (see :func:`preprocess`). Stateless after construction, so
    one instance may serve several threads.
    """

    __slots__ = (
        "channels",
        "color",
        "div",
        "general",
        "gray_float",
        "int_dtype",
        "interp",
        "nchw",
        "pad_value",
        "passthrough",
        "planes",
        "quant_scale",
        "quant_zero_point",
        "scale",
        "spec",
        "stretch",
        "th",
        "tw",
    )

    def __init__(self, spec: PreSpec) -> None:
        self.spec = spec
        self.tw, self.th = spec.resize
        self.stretch = spec.mode == "stretch"
        self.interp = _INTERPOLATION.get(spec.interpolation)  # None: auto
        self.pad_value = spec.pad_value
        self.color = spec.color
        self.channels = 1 if spec.color == "gray" else 3
        self.nchw = spec.layout == "nchw"
        self.passthrough = (
            spec.dtype == "uint8" and spec.scale == 1.0 and spec.mean is None and spec.std is None
        )
        self.scale = np.float32(spec.scale) if spec.scale != 1.0 else None
        self.int_dtype = None if spec.dtype == "float32" else spec.dtype
        self.quant_scale = spec.quant_scale or 1.0
        self.quant_zero_point = spec.quant_zero_point or 0
        # One (mean, std) pair of float32 scalars (or None) per channel; None overall when
        # mean/std do not have one value per channel (an odd broadcast the general path does).
        per_channel: list[list[np.float32] | None] = []
        self.general = False
        for values in (spec.mean, spec.std):
            if values is None:
                per_channel.append(None)
            elif len(values) in (1, self.channels):
                v = np.asarray(values, dtype=np.float32)
                per_channel.append([v[0] if len(v) == 1 else v[c] for c in range(self.channels)])
            else:
                per_channel.append(None)
                self.general = True
        mean, std = per_channel
        self.gray_float = spec.color == "gray" and spec.dtype == "float32" and not self.general
        self.planes = [
            (None if mean is None else mean[c], None if std is None else std[c])
            for c in range(self.channels)
        ]
        self.div = std is not None

    # ---- geometry ---------------------------------------------------------------------------

    def resize(
        self, image: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, Letterbox]:
        """Resize (stretch or letterbox) one BGR image to the target size, into ``out`` when
        given (a ``th×tw×3`` uint8 buffer, e.g. one slot of a batch)."""
        tw, th = self.tw, self.th
        h, w = image.shape[:2]
        if self.stretch:
            interp = self.interp
            if interp is None:
                interp = cv2.INTER_AREA if (w > tw or h > th) else cv2.INTER_LINEAR
            if out is None:
                out = cv2.resize(image, (tw, th), interpolation=interp)
            else:
                cv2.resize(image, (tw, th), dst=out, interpolation=interp)
            return out, Letterbox(tw / w, th / h, 0.0, 0.0)
        s = min(tw / w, th / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        interp = self.interp
        if interp is None:
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (nw, nh), interpolation=interp)
        px, py = (tw - nw) // 2, (th - nh) // 2
        if out is None:
            out = np.full((th, tw, image.shape[2]), self.pad_value, dtype=np.uint8)
        else:
            out[...] = self.pad_value
        out[py : py + nh, px : px + nw] = resized
        return out, Letterbox(nw / w, nh / h, float(px), float(py))

    # ---- whole images -----------------------------------------------------------------------

    def one(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """One BGR uint8 ``H×W×3`` image -> a batch-of-one tensor and its letterbox."""
        resized, lb = self.resize(image)
        return self.tensor(resized[None]), lb

    def batch(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """BGR uint8 images (strided views are fine) -> one ``N×…`` tensor and letterboxes."""
        if len(images) == 1:
            tensor, lb = self.one(images[0])
            return tensor, [lb]
        stack = np.empty((len(images), self.th, self.tw, 3), dtype=np.uint8)
        resize = self.resize
        lbs = [resize(image, stack[i])[1] for i, image in enumerate(images)]
        return self.tensor(stack), lbs

    # ---- pixels -----------------------------------------------------------------------------

    def tensor(self, batch: np.ndarray) -> np.ndarray:
        """Colour, scale/normalise, quantise and lay out an ``N×H×W×3`` BGR uint8 batch."""
        n, th, tw = batch.shape[:3]
        if self.gray_float:
            return self._gray(batch, n, th, tw)
        if self.color == "gray":
            # BGR -> gray is per pixel, so one call over the N images stacked row-wise is the
            # same as one call per image.
            flat = cv2.cvtColor(batch.reshape(n * th, tw, 3), cv2.COLOR_BGR2GRAY)
            chw = flat.reshape(n, th, tw, 1)
        elif self.color == "rgb":
            chw = batch[..., ::-1]
        else:
            chw = batch
        if self.passthrough:
            arr = np.transpose(chw, (0, 3, 1, 2)) if self.nchw else chw
            return np.ascontiguousarray(arr)
        x = self._general(chw) if self.general else self._planes(batch, chw)
        if self.int_dtype is None:
            return x
        if self.int_dtype == "uint8":
            return np.ascontiguousarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
        q = np.clip(np.rint(x / self.quant_scale + self.quant_zero_point), -128, 127)
        return np.ascontiguousarray(q.astype(np.int8))

    def _gray(self, batch: np.ndarray, n: int, th: int, tw: int) -> np.ndarray:
        """The gray float32 case in five calls: the N images stacked row-wise go through one
        BGR -> gray conversion (it is per pixel), and the float32 arithmetic of
        :meth:`_planes` writes straight into the output, whose one channel makes either
        layout the same ``(N·H)×W`` block of memory."""
        x = np.empty((n, 1, th, tw) if self.nchw else (n, th, tw, 1), dtype=np.float32)
        flat = x.reshape(n * th, tw)
        gray = cv2.cvtColor(batch.reshape(n * th, tw, 3), cv2.COLOR_BGR2GRAY)
        if self.scale is not None:
            np.multiply(gray, self.scale, out=flat, dtype=np.float32)
        else:
            flat[...] = gray
        mean, std = self.planes[0]
        if mean is not None:
            flat -= mean
        if std is not None:
            flat /= std
        return x

    def _planes(self, batch: np.ndarray, chw: np.ndarray) -> np.ndarray:
        """``(float32(pixel) * scale - mean[c]) / std[c]`` one channel plane at a time, written
        straight into the output layout.

        Element for element the same float32 arithmetic as broadcasting over the channel axis,
        but numpy's broadcast over a last axis of 3 costs ~30x a plane-wise op: on a 224×224
        RGB image it is ~0.9 ms against ~0.05 ms. The colour planes are first split into
        contiguous arrays with one ``cv2.split`` over the whole batch (numpy's uint8 -> float32
        cast from a stride-3 view is slower than the split plus a contiguous cast: 3×224×224
        RGB ~0.37 -> ~0.28 ms; below :data:`_SPLIT_MIN_PIXELS` the extra call costs more than
        it saves, and the strided views are read directly). The cast and the scale are one
        ufunc call (``np.multiply(uint8, float32, dtype=float32)`` converts each pixel to
        float32 first, exactly like ``astype`` followed by ``*=``).
        """
        n, th, tw, channels = chw.shape
        if channels == 1:
            sources = [chw.reshape(n, th, tw)]
        elif n * th * tw < _SPLIT_MIN_PIXELS:
            sources = [chw[..., c] for c in range(channels)]
        else:
            b, g, r = cv2.split(np.ascontiguousarray(batch).reshape(n * th, tw, 3))
            ordered = (r, g, b) if self.color == "rgb" else (b, g, r)
            sources = [p.reshape(n, th, tw) for p in ordered]
        nchw = self.nchw
        x = np.empty((n, channels, th, tw) if nchw else (n, th, tw, channels), dtype=np.float32)
        scale = self.scale
        for c, (mean, std) in enumerate(self.planes):
            plane = x[:, c] if nchw else x[..., c]
            if scale is not None:
                np.multiply(sources[c], scale, out=plane, dtype=np.float32)
            else:
                plane[...] = sources[c]
            if mean is not None:
                plane -= mean
            if std is not None:
                plane /= std
        return x

    def _general(self, chw: np.ndarray) -> np.ndarray:
        """The plain broadcast, for mean/std lists that do not match the channel count."""
        spec = self.spec
        x = chw.astype(np.float32)
        if self.scale is not None:
            x *= self.scale
        if spec.mean is not None:
            x -= np.asarray(spec.mean, dtype=np.float32)
        if spec.std is not None:
            x /= np.asarray(spec.std, dtype=np.float32)
        if self.nchw:
            x = np.transpose(x, (0, 3, 1, 2))
        return np.ascontiguousarray(x)


def _resize(image: np.ndarray, spec: PreSpec) -> tuple[np.ndarray, Letterbox]:
    return Preprocessor(spec).resize(image)


def preprocess(image: np.ndarray, spec: PreSpec) -> tuple[np.ndarray, Letterbox]:
    """Turn one BGR uint8 image into a batch-of-one input tensor for ``spec``.

    Returns the tensor (``1×C×H×W`` or ``1×H×W×C``) and the map back to source pixels.
    (Builds a :class:`Preprocessor` per call; a hot loop should keep one.)
    """
    if spec.plugin:
        raise PipelineError("preprocess: a pre plug-in runs inside its bundle's pipeline only")
    return Preprocessor(spec).one(as_bgr(image))


def preprocess_batch(
    images: Sequence[np.ndarray], spec: PreSpec
) -> tuple[np.ndarray, list[Letterbox]]:
    """Turn BGR uint8 images (e.g. the crops of one frame) into one ``N×…`` input batch.

    The result is exactly ``np.concatenate([preprocess(i, spec)[0] for i in images])``: each
    image is resized on its own (straight into the batch buffer), then colour, scaling and
    layout run once over the whole batch (they are per pixel), which saves a round of numpy
    calls per image. Images must already be BGR (``H×W×3`` uint8; strided views such as crops
    of a frame are fine). Not for ``pre.plugin`` specs, which make their own tensors one image
    at a time.
    """
    if spec.plugin:
        raise PipelineError("preprocess_batch: a pre plug-in makes its tensors one at a time")
    if not images:
        raise PipelineError("preprocess_batch: no images")
    return Preprocessor(spec).batch(images)
