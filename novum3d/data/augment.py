"""Training-time augmentations, on the device: random occluders pasted over each image's object
(:func:`occlude_objects`), rotations about the principal point (:func:`rotate_about_principal`) and
rows stretched about it (:func:`warp_about_principal`).

Each occluded image gets one to ``max_shapes`` shapes (ellipses or convex polygons of 3-6 sides),
each centred on a still-visible object pixel and grown until its share of the drawn hidden fraction
of the object is covered. The fill is the background of another image of the batch (image b + 1),
read at a random offset, so occluders look like the clutter of the training distribution; where
that read would land on the source image's own object, a flat random colour with smooth noise
is used instead, so no object appearance is ever pasted onto another image.

Every random number is drawn from a CPU ``torch.Generator`` seeded by the image's seed and then
moved to the images' device, so a seed list gives the same draws on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .batch import box_cells, host_to_device

MAX_SIDES = 6  # polygons have 3 to MAX_SIDES sides
MAX_ASPECT = 2.5  # shapes are up to this many times longer than wide
NOISE_CELL = 4  # pixels per cell of the fallback fill's noise (bilinearly upsampled)
NOISE_STD = 0.08  # of the fallback fill's noise, on [0, 1] intensities


def _draw(seed: int, probability: float, fraction: tuple[float, float], max_shapes: int, size: tuple[int, int]):
    """One image's random numbers, all from a CPU generator seeded with ``seed`` (None: no occluder)."""
    H, W = size
    g = torch.Generator().manual_seed(int(seed))
    if not float(torch.rand((), generator=g)) < probability:
        return None
    low, high = fraction
    hidden = low + (high - low) * float(torch.rand((), generator=g))
    count = int(torch.randint(1, max_shapes + 1, (), generator=g))
    weights = (0.2 + torch.rand(max_shapes, generator=g)) * (torch.arange(max_shapes) < count)
    share = torch.cumsum(weights, 0) / weights.sum()  # [K] cumulative share of the hidden pixels
    ellipse = torch.rand(max_shapes, generator=g) < 0.5
    angle = torch.rand(max_shapes, generator=g) * math.pi
    aspect = torch.exp((2 * torch.rand(max_shapes, generator=g) - 1) * math.log(MAX_ASPECT))
    centre = torch.rand(max_shapes, generator=g)  # which still-visible object pixel each shape is centred on
    sides = torch.randint(3, MAX_SIDES + 1, (max_shapes,), generator=g)
    jitter = torch.rand(max_shapes, MAX_SIDES, generator=g) * 0.4 - 0.2  # of the vertex spacing
    offset = torch.stack([torch.randint(0, H, (), generator=g), torch.randint(0, W, (), generator=g)])
    colour = torch.rand(3, generator=g)
    noise = torch.randn(3, -(-H // NOISE_CELL), -(-W // NOISE_CELL), generator=g) * NOISE_STD
    polygon = _polygon_edges(sides, jitter)
    return hidden, share, ellipse, angle, aspect, centre, polygon, offset, colour, noise


def _polygon_edges(sides: Tensor, jitter: Tensor) -> Tensor:
    """[K, MAX_SIDES, 3]: each convex polygon's edges as (normal x, normal y, offset), n . q <= offset inside.

    Args:
        sides: [K] side counts in 3..MAX_SIDES; jitter: [K, MAX_SIDES] vertex shifts, in (-0.2, 0.2) spacings.

    Vertices lie on the unit circle at evenly spaced angles shifted by under 0.2 of the spacing, so
    every gap is below pi and the centre lies strictly inside. Slots past a polygon's last edge
    repeat its first edge (a repeated edge changes no gauge).
    """
    i = torch.arange(MAX_SIDES)[None]  # [1, E]
    m = sides[:, None]  # [K, 1]
    theta = (i + jitter) * (2 * math.pi / m)  # [K, E] vertex angles (slots i >= m unused)
    start = theta
    end = theta.gather(1, (i + 1) % m) + 2 * math.pi * (i + 1 == m)
    start = torch.where(i < m, start, start[:, :1])
    end = torch.where(i < m, end, end[:, :1])
    mid, half = (start + end) / 2, (end - start) / 2
    return torch.stack([torch.cos(mid), torch.sin(mid), torch.cos(half)], dim=-1)


def occlude_objects(
    images: Tensor,
    masks: Tensor | None,
    boxes: Tensor,
    seeds: Sequence[int],
    probability: float = 1.0,
    fraction: tuple[float, float] = (0.2, 0.7),
    max_shapes: int = 3,
) -> tuple[Tensor, Tensor]:
    """Paste occluders over the object of each image whose seed draws one (with ``probability``).

    Args:
        images: [B, 3, H, W] uint8, or float in [0, 1], on any device.
        masks: [B, H, W] bool object masks, or None to use ``boxes``.
        boxes: [B, 4] object boxes x0, y0, x1, y1 in pixels (used only when ``masks`` is None).
        seeds: B integers, one per image; the same seeds give the same occluders on any device.
        probability: share of images that get occluders (the draw is the seed's first number).
        fraction: (low, high): the hidden share of the object's pixels is drawn uniformly from it.
        max_shapes: each occluded image gets 1 to ``max_shapes`` shapes.

    Returns:
        (images [B, 3, H, W] of the input's dtype, occluder mask [B, H, W] bool). Pixels outside the
        mask are the input's, bit for bit. Of an object's A pixels, round(f * A) are hidden (f the drawn
        fraction), give or take the few pixels that tie with a shape's boundary.
    """
    B, _, H, W = images.shape
    if len(seeds) != B:
        raise ValueError(f"seeds: expected {B} (one per image), got {len(seeds)}")
    device = images.device
    draws = [_draw(s, probability, fraction, max_shapes, (H, W)) for s in seeds]
    occluder = torch.zeros(B, H, W, dtype=torch.bool, device=device)
    if all(d is None for d in draws):
        return images, occluder
    objects = (masks.bool() if masks is not None else box_cells(boxes, (H, W), (H, W))).to(device)
    on = [d is not None for d in draws]
    placeholder = next(d for d in draws if d is not None)  # for images without occluders: hides nothing
    draws = [d if d is not None else placeholder for d in draws]
    hidden, share, ellipse, angle, aspect, centre, polygon, offset, colour, noise = (
        torch.stack([torch.as_tensor(d[i]) for d in draws]).to(device) for i in range(10)
    )
    active = torch.tensor(on, device=device)

    # Shapes: shape k is grown over the still-visible object pixels until cumulative target k is hidden.
    area = objects.flatten(1).sum(1)  # [B]
    targets = torch.round(hidden[:, None] * area[:, None] * share).long() * active[:, None]  # [B, K]
    ys, xs = torch.meshgrid(torch.arange(H, device=device), torch.arange(W, device=device), indexing="ij")
    pixels = torch.stack([xs.flatten(), ys.flatten()], -1).float() + 0.5  # [N, 2] pixel centres
    obj = objects.flatten(1)
    covered = occluder.flatten(1)
    for k in range(max_shapes):
        visible = obj & ~covered  # [B, N]
        need = targets[:, k] - (obj & covered).sum(1)  # [B]
        # The shape's centre: the centre[k]-quantile of the still-visible object pixels, in raster order.
        left = visible.sum(1)
        rank = torch.minimum((centre[:, k] * left).long(), (left - 1).clamp(min=0)) + 1
        at = torch.searchsorted(torch.cumsum(visible, 1), rank[:, None]).clamp(max=H * W - 1)[:, 0]
        d = pixels[None] - pixels[at][:, None]  # [B, N, 2]
        cos, sin = torch.cos(angle[:, k, None]), torch.sin(angle[:, k, None])
        stretch = aspect[:, k, None].sqrt()
        q = torch.stack(
            [(d[..., 0] * cos + d[..., 1] * sin) / stretch, (d[..., 1] * cos - d[..., 0] * sin) * stretch], -1
        )
        # Gauge: the smallest scale at which the shape (centred, scaled) contains the pixel; it is
        # positively homogeneous, so "gauge <= s" is the shape grown by s.
        edges = polygon[:, k]  # [B, MAX_SIDES, 3]
        gauge_polygon = (torch.einsum("bnc,bec->bne", q, edges[..., :2]) / edges[:, None, :, 2]).amax(-1)
        gauge = torch.where(ellipse[:, k, None], q.norm(dim=-1), gauge_polygon)  # [B, N]
        ranked = torch.where(visible, gauge, torch.inf).sort(1).values
        scale = ranked.gather(1, (need - 1).clamp(0, H * W - 1)[:, None])[:, 0]
        scale = torch.where(need > 0, scale, -1.0)
        covered = covered | (gauge <= scale[:, None])
    occluder = covered.view(B, H, W)

    # Fill: image b + 1 read at a random offset; where that lands on its object, a noisy flat colour.
    source = (torch.arange(B, device=device) + 1) % B
    rows = (torch.arange(H, device=device)[None] + offset[:, :1]) % H  # [B, H]
    cols = (torch.arange(W, device=device)[None] + offset[:, 1:]) % W  # [B, W]
    pasted = images[source[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    leak = objects[source[:, None, None], rows[:, :, None], cols[:, None, :]]  # [B, H, W]
    flat = colour[:, :, None, None] + F.interpolate(noise, size=(H, W), mode="bilinear", align_corners=False)
    flat = flat.clamp(0, 1)
    if images.dtype == torch.uint8:
        flat = flat.mul(255).round().to(torch.uint8)
    fill = torch.where(leak[:, None], flat.to(images.dtype), pasted)
    out = torch.where(occluder[:, None], fill, images)
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out, occluder


def symmetric_draws(seeds: Sequence[int]) -> Tensor:
    """[B] float64 draws uniform in [-1, 1), one per seed, each from a CPU generator seeded with it
    (the same seeds give the same draws on any device)."""
    draws = [float(torch.rand((), generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)) for s in seeds]
    return torch.tensor(draws, dtype=torch.float64).mul(2).sub(1)


def rotation_angles(seeds: Sequence[int], max_degrees: float) -> Tensor:
    """[B] float64 angles in radians, uniform in [-max_degrees, max_degrees] degrees, one per seed
    (:func:`symmetric_draws`)."""
    return symmetric_draws(seeds).mul(math.radians(max_degrees))


def stretch_factors(seeds: Sequence[int], max_factor: float) -> Tensor:
    """[B] float64 factors, log-uniform in [1 / max_factor, max_factor], one per seed (:func:`symmetric_draws`)."""
    return symmetric_draws(seeds).mul(math.log(max_factor)).exp()


def roll_and_stretch(angles: Tensor, stretch: Tensor) -> Tensor:
    """[B, 2, 2] float64 maps of offsets from the principal point (x right, y down): the camera's roll by
    ``angles`` [B] (theta increments, radians) first, then rows stretched by ``stretch`` [B].

    Raising theta by a turns image points about the principal point by -a. The roll must come first:
    a rolled camera with square pixels sees exactly the rotated image, and stretching its rows after
    is exactly that camera with fy scaled (:func:`warp_about_principal`); the other order is no
    camera without skew.
    """
    a, s = angles.to(torch.float64), stretch.to(device=angles.device, dtype=torch.float64)
    cos, sin = torch.cos(a), torch.sin(a)
    return torch.stack([torch.stack([cos, sin], -1), torch.stack([-s * sin, s * cos], -1)], -2)


def rotate_about_principal(
    images: Tensor, masks: Tensor | None, boxes: Tensor, principal: Tensor, angles: Tensor
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Rotate each image about its principal point as a camera rolled by ``angles`` about its axis sees it.

    A pinhole camera with square pixels that rolls about its optical axis sees the image rotate
    exactly about the principal point; nothing else about the view changes. So the rotated image
    is the same scene with its PASCAL3D+ in-plane rotation ``theta`` increased by the angle
    (rendering.cameras: ``R = Rz(theta) ...``), which the caller adds to the pose; azimuth,
    elevation, distance and principal point stay. Where the rotated frame reaches past the
    original image, the image is mirrored at its border (``grid_sample``'s reflection padding); the
    mask is not, so object pixels mirrored into a corner count as background there (harmless for
    objects well inside the frame, as the synthetic data's are; with crops the object fills, keep
    the angle small).

    Args:
        images: [B, 3, H, W] uint8, or float in [0, 1], on any device.
        masks: [B, H, W] bool object masks, or None.
        boxes: [B, 4] object boxes x0, y0, x1, y1 in pixels.
        principal: [B, 2] principal points (x, y) in pixels, pixel centres at +0.5.
        angles: [B] theta increments in radians (0 leaves an image as it is, up to bilinear resampling).

    Returns:
        (images of the input's dtype, masks [B, H, W] bool or None, boxes [B, 4]), as
        :func:`warp_about_principal`.
    """
    B = images.shape[0]
    if principal.shape != (B, 2) or angles.shape != (B,) or boxes.shape != (B, 4):
        raise ValueError(
            f"expected principal [{B}, 2], angles [{B}], boxes [{B}, 4]; got {list(principal.shape)}, "
            f"{list(angles.shape)}, {list(boxes.shape)}"
        )
    turn = roll_and_stretch(angles, torch.ones_like(angles, dtype=torch.float64))
    return warp_about_principal(images, masks, boxes, principal, turn)


def warp_about_principal(
    images: Tensor, masks: Tensor | None, boxes: Tensor, principal: Tensor, linear: Tensor, padding: str = "reflection"
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Move each image's points about its principal point ``c`` by a linear map: a point q lands at
    ``c + A (q - c)``.

    A roll of the camera is a rotation (:func:`rotate_about_principal`). Rows stretched by s about
    ``c`` are exactly the image of the same camera with its focal length along y scaled by s (the
    camera's ``fy``; ``cy`` stays), which the caller applies to the intrinsics.

    Args:
        images: [B, 3, H, W] uint8, or float in [0, 1], on any device.
        masks: [B, H, W] bool object masks, or None.
        boxes: [B, 4] object boxes x0, y0, x1, y1 in pixels.
        principal: [B, 2] principal points (x, y) in pixels, pixel centres at +0.5.
        linear: [B, 2, 2] invertible maps A of offsets (x right, y down), e.g. :func:`roll_and_stretch`.
        padding: ``grid_sample`` padding of the image where the warped frame reaches past it
            ("reflection" mirrors the image; the mask is never padded, so mirrored object pixels
            count as background: a shrinking map mirrors the object itself into the frame, so use
            "border" there).

    Returns:
        (images of the input's dtype, masks [B, H, W] bool or None, boxes [B, 4]). The boxes bound
        the warped masks where there are masks (the warped box's corners where a mask is empty or
        missing), clipped to the image.
    """
    B, _, H, W = images.shape
    if principal.shape != (B, 2) or linear.shape != (B, 2, 2) or boxes.shape != (B, 4):
        raise ValueError(
            f"expected principal [{B}, 2], linear [{B}, 2, 2], boxes [{B}, 4]; got {list(principal.shape)}, "
            f"{list(linear.shape)}, {list(boxes.shape)}"
        )
    device = images.device

    c = host_to_device(principal.to(torch.float32), device)
    forward = linear.to(torch.float64)
    (a, b), (d, e) = forward[:, 0].unbind(-1), forward[:, 1].unbind(-1)
    det = a * e - b * d
    if not bool((det.abs() > 1e-9).all()):
        raise ValueError("linear: every map must be invertible")
    inverse = torch.stack([torch.stack([e, -b], -1), torch.stack([-d, a], -1)], -2) / det[:, None, None]
    maps = host_to_device(torch.cat([forward, inverse], dim=1).to(torch.float32), device)  # [B, 4, 2]
    fwd, inv = maps[:, :2], maps[:, 2:]
    # The output pixel p reads the input at c + A^-1 (p - c).
    ys, xs = torch.meshgrid(
        torch.arange(H, device=device, dtype=torch.float32) + 0.5,
        torch.arange(W, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    dx, dy = xs[None] - c[:, 0, None, None], ys[None] - c[:, 1, None, None]  # [B, H, W]
    i00, i01, i10, i11 = (inv[:, r, k, None, None] for r in range(2) for k in range(2))
    sx, sy = c[:, 0, None, None] + i00 * dx + i01 * dy, c[:, 1, None, None] + i10 * dx + i11 * dy
    grid = torch.stack([sx / W * 2 - 1, sy / H * 2 - 1], dim=-1)  # [B, H, W, 2]
    source = images.float() if images.dtype == torch.uint8 else images
    out = F.grid_sample(source, grid.to(source.dtype), mode="bilinear", padding_mode=padding, align_corners=False)
    if images.dtype == torch.uint8:
        out = out.round().clamp(0, 255).to(torch.uint8)
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)

    # The box's corners land at c + A (q - c).
    bx = boxes.to(device, torch.float32)
    corners = torch.stack([bx[:, [0, 1]], bx[:, [2, 1]], bx[:, [0, 3]], bx[:, [2, 3]]], dim=1) - c[:, None]  # [B, 4, 2]
    cx = c[:, None, 0] + fwd[:, None, 0, 0] * corners[..., 0] + fwd[:, None, 0, 1] * corners[..., 1]
    cy = c[:, None, 1] + fwd[:, None, 1, 0] * corners[..., 0] + fwd[:, None, 1, 1] * corners[..., 1]
    new_boxes = torch.stack([cx.amin(1), cy.amin(1), cx.amax(1), cy.amax(1)], dim=1)
    new_masks = None
    if masks is not None:
        # Zeros outside: the object is not mirrored into the frame's borders in the mask.
        turned = F.grid_sample(masks[:, None].to(device, torch.float32), grid, mode="bilinear", align_corners=False)
        new_masks = turned[:, 0] >= 0.5
        rows, cols = new_masks.any(2), new_masks.any(1)  # [B, H], [B, W]
        found = rows.any(1)
        idx_y, idx_x = torch.arange(H, device=device), torch.arange(W, device=device)
        y0 = torch.where(rows, idx_y, H).amin(1).float()
        y1 = torch.where(rows, idx_y + 1, 0).amax(1).float()
        x0 = torch.where(cols, idx_x, W).amin(1).float()
        x1 = torch.where(cols, idx_x + 1, 0).amax(1).float()
        from_mask = torch.stack([x0, y0, x1, y1], dim=1)
        new_boxes = torch.where(found[:, None], from_mask, new_boxes)
    x0, y0, x1, y1 = new_boxes.unbind(1)
    new_boxes = torch.stack([x0.clamp(0, W), y0.clamp(0, H), x1.clamp(0, W), y1.clamp(0, H)], dim=1)
    return out, new_masks, new_boxes.to(boxes.dtype)
