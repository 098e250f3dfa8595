"""Top-down crops and decoding, as the SpinePose package (2.1.0) and mmpose do them.

Boxes are padded by 1.25 and widened to the model's aspect ratio; the crop is an affine warp
(``cv2.getAffineTransform`` of float32 points, ``cv2.warpAffine`` bilinear, black border) and is
normalised with the ImageNet mean/std applied in the image's channel order (the package reads BGR and
does not swap; ``rgb=True`` swaps to RGB first, as training with ``bgr_to_rgb`` saw it).
"""

from __future__ import annotations

import cv2
import numpy as np

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def box_center_scale(boxes_xywh: np.ndarray, input_wh: tuple[int, int],
                     padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Centres [N, 2] and scales [N, 2] of padded boxes widened to the model's aspect ratio."""
    b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    center = b[:, :2] + b[:, 2:] * 0.5
    scale = b[:, 2:] * padding
    aspect = input_wh[0] / input_wh[1]
    w, h = scale[:, :1], scale[:, 1:]
    scale = np.where(w > h * aspect, np.hstack([w, w / aspect]), np.hstack([h * aspect, h]))
    return center, scale


def warp_matrix(center: np.ndarray, scale: np.ndarray, input_wh: tuple[int, int], rot: float = 0.0) -> np.ndarray:
    """The 2x3 affine map from the image to the crop (three float32 point pairs, as the package builds
    it); ``rot`` turns the crop by that many degrees (training augmentation)."""
    w, h = input_wh
    sn, cs = np.sin(np.deg2rad(rot)), np.cos(np.deg2rad(rot))
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([[cs, -sn], [sn, cs]]) @ np.array([0.0, scale[0] * -0.5])
    d = src[0] - src[1]
    src[2] = src[1] + np.array([-d[1], d[0]])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [w * 0.5, h * 0.5]
    dst[1] = dst[0] + np.array([0.0, w * -0.5])
    d = dst[0] - dst[1]
    dst[2] = dst[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(src, dst)


def crop(image: np.ndarray, center: np.ndarray, scale: np.ndarray, input_wh: tuple[int, int]) -> np.ndarray:
    """One H x W x 3 uint8 crop of ``image`` (H x W x 3)."""
    m = warp_matrix(center, scale, input_wh)
    return cv2.warpAffine(image, m, (int(input_wh[0]), int(input_wh[1])), flags=cv2.INTER_LINEAR)


# (v - mean) / std for every uint8 value and channel, computed in float64 and rounded to float32 exactly
# as the package's float64 arithmetic followed by a float32 cast: a table lookup instead of arithmetic
_LUT = ((np.arange(256, dtype=np.float64)[None] - MEAN[:, None]) / STD[:, None]).astype(np.float32)


def normalize(crops: np.ndarray, rgb: bool = False, layout: str = "nchw") -> np.ndarray:
    """[N, H, W, 3] uint8 crops -> float32 network input (mean/std in the crops' channel order)."""
    x = crops[..., ::-1] if rgb else crops
    n, h, w, _ = x.shape
    if layout == "nchw":
        out = np.empty((n, 3, h, w), dtype=np.float32)
        for c in range(3):
            np.take(_LUT[c], x[..., c], out=out[:, c])
    else:
        out = np.empty((n, h, w, 3), dtype=np.float32)
        for c in range(3):
            np.take(_LUT[c], x[..., c], out=out[..., c])
    return out


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float,
                 score: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Locations [N, K, 2] in crop pixels and confidences [N, K] from SimCC logits.

    ``score``: "mean" of the two maxima (SpinePose) or "min" (mmpose). Non-positive confidences mark the
    location invalid (-1), as both do.
    """
    x_locs = simcc_x.argmax(axis=2)
    y_locs = simcc_y.argmax(axis=2)
    locs = np.stack([x_locs, y_locs], axis=-1).astype(np.float32)
    mx, my = simcc_x.max(axis=2), simcc_y.max(axis=2)
    vals = 0.5 * (mx + my) if score == "mean" else np.minimum(mx, my)
    locs[vals <= 0.0] = -1
    return locs / split_ratio, vals


def decode_heatmap(heatmaps: np.ndarray, dark: bool = True, kernel: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Locations [N, K, 2] in heatmap pixels and confidences [N, K] from heatmaps [N, K, h, w].

    Argmax with DARK sub-pixel refinement (Zhang et al. 2020: Gaussian-smoothed log heatmap, one Newton
    step with the local gradient and Hessian), as mmpose's ``refine_keypoints_dark`` does.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = flat.argmax(axis=2)
    vals = flat.max(axis=2)
    locs = np.stack([idx % w, idx // w], axis=-1).astype(np.float64)
    locs[vals <= 0] = -1
    if not dark:
        return locs, vals
    # smooth every map (as channels of one image, 512 at a time), keep each map's maximum, take logs
    maps = heatmaps.reshape(n * k, h, w).astype(np.float64)
    border = (kernel - 1) // 2
    padded = np.pad(maps, ((0, 0), (border, border), (border, border)))
    smooth = np.concatenate([
        cv2.GaussianBlur(np.ascontiguousarray(padded[i:i + 512].transpose(1, 2, 0)), (kernel, kernel), 0)
        .reshape(h + 2 * border, w + 2 * border, -1).transpose(2, 0, 1)
        for i in range(0, n * k, 512)])[:, border:-border, border:-border]
    peak = smooth.reshape(n * k, -1).max(axis=1)
    smooth *= np.where(peak > 0, maps.reshape(n * k, -1).max(axis=1) / np.where(peak > 0, peak, 1), 1)[:, None, None]
    m = np.log(np.clip(smooth, 1e-3, 50.0))
    p = locs.reshape(-1, 2).astype(np.int64)
    x, y = p[:, 0], p[:, 1]
    ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    r = np.flatnonzero(ok)
    x, y = x[r], y[r]

    def at(dy: int, dx: int) -> np.ndarray:
        return m[r, y + dy, x + dx]

    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    det = dxx * dyy - dxy * dxy
    good = np.abs(det) > 1e-12
    inv_det = np.where(good, 1 / np.where(good, det, 1), 0)
    step = np.stack([(dyy * dx - dxy * dy) * inv_det, (dxx * dy - dxy * dx) * inv_det], axis=1)
    flat_locs = locs.reshape(-1, 2)
    flat_locs[r] -= step
    return flat_locs.reshape(n, k, 2), vals


def to_image(locs: np.ndarray, center: np.ndarray, scale: np.ndarray, grid_wh: tuple[float, float]) -> np.ndarray:
    """Map locations in a ``grid_wh`` frame covering the crop back to image pixels (invalid stay -1 mapped)."""
    return locs / np.asarray(grid_wh, dtype=np.float64) * scale[:, None] + center[:, None] - scale[:, None] / 2


def smooth_chain(keypoints: np.ndarray, chain: tuple[int, ...] | list[int]) -> np.ndarray:
    """The spinepose package's (2.1.0) v1 "smooth spine": along ``chain`` (bottom-up), each inner point in turn
    becomes the mean of its already smoothed predecessor and its successor; the ends stay. [N, K, 2] -> copy."""
    out = np.array(keypoints, dtype=np.float64, copy=True)
    pts = out[:, list(chain)]
    for i in range(1, len(chain) - 1):
        pts[:, i] = (pts[:, i - 1] + pts[:, i + 1]) / 2
    out[:, list(chain)] = pts
    return out
