"""A small CPU z-buffer mesh rasterizer for the synthetic images.

Deliberately not the Gaussian renderer: the model must not be tested on its own rendering.
Triangles are scanned one at a time over their pixel bounding box (vectorised with numpy);
the z-buffer keeps, per pixel, the nearest face id and its barycentric coordinates, from
which shading and object-space texture coordinates are interpolated afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Fragments:
    face: np.ndarray  # [H, W] int64, -1 where no face
    bary: np.ndarray  # [H, W, 3] barycentric coordinates of the pixel centre in its face
    depth: np.ndarray  # [H, W] camera-space z, inf where empty

    @property
    def mask(self) -> np.ndarray:
        return self.face >= 0


def rasterize_mesh(
    vertices: np.ndarray, faces: np.ndarray, viewmat: np.ndarray, K: np.ndarray, width: int, height: int
) -> Fragments:
    """Z-buffer rasterization of a triangle mesh with an OpenCV pinhole camera.

    Args:
        vertices: [V, 3] object-frame positions.
        faces: [F, 3] vertex indices.
        viewmat: [4, 4] world-to-camera (OpenCV); K: [3, 3].

    Returns:
        :class:`Fragments` with pixel centres at (j + 0.5, i + 0.5).
    """
    cam = vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    uv = (cam @ K.T)[:, :2] / np.maximum(z, 1e-9)[:, None]
    face_ids = np.full((height, width), -1, dtype=np.int64)
    bary = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    tri_uv, tri_z = uv[faces], z[faces]  # [F, 3, 2], [F, 3]
    lo = np.floor(tri_uv.min(axis=1) - 0.5).astype(np.int64)
    hi = np.ceil(tri_uv.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    in_front = (tri_z > 1e-6).all(axis=1)
    for f in np.nonzero(in_front & (hi >= lo).all(axis=1))[0]:
        (x0, y0), (x1, y1) = lo[f], hi[f]
        # Broadcast row and column (same arithmetic as a full meshgrid, a quarter faster).
        xs, ys = (np.arange(x0, x1 + 1) + 0.5)[None, :], (np.arange(y0, y1 + 1) + 0.5)[:, None]
        a, b, c = tri_uv[f]
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(area) < 1e-12:
            continue
        w0 = ((b[0] - xs) * (c[1] - ys) - (b[1] - ys) * (c[0] - xs)) / area
        w1 = ((c[0] - xs) * (a[1] - ys) - (c[1] - ys) * (a[0] - xs)) / area
        w2 = 1.0 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        if not inside.any():
            continue
        # Perspective-correct depth: 1/z is linear in screen space.
        inv_z = w0 / tri_z[f, 0] + w1 / tri_z[f, 1] + w2 / tri_z[f, 2]
        zf = 1.0 / inv_z
        region = depth[y0 : y1 + 1, x0 : x1 + 1]
        closer = inside & (zf < region)
        if not closer.any():
            continue
        region[closer] = zf[closer]
        face_ids[y0 : y1 + 1, x0 : x1 + 1][closer] = f
        # Perspective-correct barycentrics for interpolating object-space attributes.
        pc = np.stack([w0 / tri_z[f, 0], w1 / tri_z[f, 1], w2 / tri_z[f, 2]], axis=-1) * zf[..., None]
        bary[y0 : y1 + 1, x0 : x1 + 1][closer] = pc[closer]
    return Fragments(face_ids, bary, depth)


# Triangles whose pixel box is larger than this go through the loop (one broadcast per row and column
# beats per-candidate index arithmetic there); the rest are rasterized together.
LOOP_BOX_PIXELS = 1024


def rasterize_mesh_vectorized(
    vertices: np.ndarray, faces: np.ndarray, viewmat: np.ndarray, K: np.ndarray, width: int, height: int
) -> Fragments:
    """:func:`rasterize_mesh`, the same fragments bit for bit, with the small triangles rasterized all at once.

    Small triangles (pixel box up to :data:`LOOP_BOX_PIXELS`) become (face, pixel) candidates evaluated
    with the loop's arithmetic and resolved per pixel by depth, ties to the lower face id (the loop's
    strict ``<`` keeps the first face); large ones go through the loop; the two z-buffers merge by the
    same rule. 2.7-6.5x faster than the loop on the benchmark's 500-face meshes filling 40% of a 160x160
    image; 6.2 against 18.3 ms of CPU on the pretraining corpus's meshes (median 318 faces).
    """
    cam = vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    uv = (cam @ K.T)[:, :2] / np.maximum(z, 1e-9)[:, None]
    tri_uv, tri_z = uv[faces], z[faces]
    lo = np.maximum(np.floor(tri_uv.min(axis=1) - 0.5).astype(np.int64), 0)
    hi = np.minimum(np.ceil(tri_uv.max(axis=1) - 0.5).astype(np.int64), [width - 1, height - 1])
    a, b, c = tri_uv[:, 0], tri_uv[:, 1], tri_uv[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = (tri_z > 1e-6).all(axis=1) & (hi >= lo).all(axis=1) & (np.abs(area) >= 1e-12)
    box = (hi - lo + 1).prod(axis=1)
    large = np.nonzero(keep & (box > LOOP_BOX_PIXELS))[0]
    out = rasterize_mesh(vertices, faces[large], viewmat, K, width, height)
    out.face[out.mask] = large[out.face[out.mask]]
    f = np.nonzero(keep & (box <= LOOP_BOX_PIXELS))[0]
    if len(f) == 0:
        return out
    nx, ny = hi[f, 0] - lo[f, 0] + 1, hi[f, 1] - lo[f, 1] + 1
    counts = nx * ny
    cand = np.repeat(f, counts)  # the face of each (face, pixel) candidate, in face order
    local = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    row_len = np.repeat(nx, counts)
    px, py = lo[cand, 0] + local % row_len, lo[cand, 1] + local // row_len
    xs, ys = px + 0.5, py + 0.5
    # One gather per coordinate (contiguous columns gather faster than [N, 2] rows).
    ax, ay, bx, by, cx, cy = (np.ascontiguousarray(v[:, k])[cand] for v in (a, b, c) for k in (0, 1))
    w0 = ((bx - xs) * (cy - ys) - (by - ys) * (cx - xs)) / area[cand]
    w1 = ((cx - xs) * (ay - ys) - (cy - ys) * (ax - xs)) / area[cand]
    w2 = 1.0 - w0 - w1
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    cand, px, py, w0, w1, w2 = cand[inside], px[inside], py[inside], w0[inside], w1[inside], w2[inside]
    tz = tri_z[cand]
    zf = 1.0 / (w0 / tz[:, 0] + w1 / tz[:, 1] + w2 / tz[:, 2])
    pixel = py * width + px
    order = np.lexsort((cand, zf, pixel))  # per pixel: nearest first, then the lowest face id
    first = order[np.r_[True, pixel[order][1:] != pixel[order][:-1]]] if len(order) else order
    ys_, xs_, fid, zf_ = py[first], px[first], cand[first], zf[first]
    held, held_z = out.face[ys_, xs_], out.depth[ys_, xs_]
    wins = (zf_ < held_z) | ((zf_ == held_z) & (fid < held))  # the merged z-buffer: the loop's rule
    ys_, xs_, first = ys_[wins], xs_[wins], first[wins]
    out.face[ys_, xs_] = cand[first]
    out.depth[ys_, xs_] = zf[first]
    pc = np.stack([w0[first] / tz[first, 0], w1[first] / tz[first, 1], w2[first] / tz[first, 2]], axis=-1)
    out.bary[ys_, xs_] = pc * zf[first][:, None]
    return out


def interpolate(fragments: Fragments, faces: np.ndarray, attribute: np.ndarray) -> np.ndarray:
    """Per-pixel interpolation of a per-vertex attribute [V, C] -> [H, W, C] (zeros off the mesh)."""
    out = np.zeros((*fragments.face.shape, attribute.shape[1]))
    m = fragments.mask
    tri = attribute[faces[fragments.face[m]]]  # [P, 3, C]
    out[m] = (tri * fragments.bary[m][..., None]).sum(axis=1)
    return out
