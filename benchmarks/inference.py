"""Inference speed: geometry-free classification and render-and-compare pose estimation.

    python -m benchmarks.inference [--batch 64] [--size 640x800] [--classes 1000] [--compile]
                                  [--backbones resnet50,timm:<name>,...] [--train-batch 32]
                                  [--pose-images 64] [--pose-batch 64] [--classes-only]
                                  [--pose-only] [--pose key=value] [--pose-variant key=value[,key=value]]

Classification breakdown (ResNet-50 + heads with random weights: speed does not depend on them),
bf16 autocast and channels_last on CUDA, each stage timed with torch.utils.benchmark's
blocked_autorange: the trunk alone (ResNet-50 to stride 32), trunk + head (the whole feature
backbone: fusion, 1x1 head, unit norm), the matching alone on random unit feature maps against the
model's 12 x ~1100 Gaussians and 2560-vector bank (torch reference vs the fused Triton kernel),
and full classification (backbone + matching + argmax; eager, and with ``--compile`` the backbone
compiled by ``novum3d.model.backbone.compile_backbone``, as ``model.compile: auto`` does on CUDA).
``--stride 4`` gives the classification rows stride-4 features (``model.stride``), and ``--trunk-depths
4,3,2`` adds trunk + head rows for shallower trunks (``model.trunk_depth``), timed in the same run.
``--classes N`` adds N random classes x 1100 Gaussians (matching and full classification, Triton
only on CUDA: the torch path's chunks would need B x 2048 x N x 1100 bf16 scores). Peak memory is
torch.cuda.max_memory_allocated over each row.

``--backbones resnet50,timm:vit_small_patch14_dinov2,timm:vit_base_patch14_dinov2`` compares backbones
(``model.backbone`` names, decoder auto: the DPT head for a ViT) in one run: trunk, trunk + head and full
classification rows for each (the matching alone once: it reads maps only). Every backbone gives
ceil(H/8) x ceil(W/8) cells at stride 8, so one ``--size`` (640x800: ResNet-50's 80x100 cells) serves all;
a ViT-14 sees the image padded to 644x812 (46x58 patches). Pose with each backbone: the estimator's time
per image on the oracle maps (its first row: with the prior, at ``--pose-batch``) plus the backbone's
forward on ``--pose-batch`` images of ``--pose-size``, per image. Training rows (``--train-batch``, 0 for
none): a step of the backbone alone (forward, backward of a loss on its map, Adam over what trains) with
the trunk frozen (``model.freeze_trunk``), and ResNet-50 trained whole too; whole training steps on data
are ``benchmarks.train_throughput``'s (``model.backbone=... model.freeze_trunk=true`` overrides).

Pose: PoseConfig's defaults (the authors' 12 x 4 x 3 grid as the floor, a denser block over the class's
prior, distance search, 30 Adam steps; with and without the prior) on oracle feature maps (a 128-d
volume rendered at known poses, noised, 40% of the object replaced by background) of a
``--pose-size`` image at each of ``--pose-strides`` (default 640x800 at stride 8: 80x100 cells; the
object fills the same share of the map's width at any size), seen from elevations of -8..32 deg, the
oracle prior's (``--pose-elevations 45,75`` draws poses above it), batched against one image at a time,
with the accuracy of both so that speed is not bought with accuracy. ``--pose key=value`` changes the
estimator's fields; each ``--pose-variant key=value[,key=value]`` adds its rows in the same run, so
that settings compare as ratios of one run's times. Prints tables; ``--append FILE`` appends them to a Markdown file.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import math
import shlex
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.common import emit, rate, sync, time_call, time_once
from novum3d.config import BackboneName, ExperimentConfig
from novum3d.device import select_device
from novum3d.errors import ConfigError
from novum3d.evaluation.metrics import pose_errors
from novum3d.inference.pose import PoseEstimator, PoseResult, pose_config
from novum3d.model.backbone import (
    STRIDES,
    TRUNK_DEPTHS,
    FeatureBackbone,
    compile_backbone,
    map_size,
    normalize_images,
)
from novum3d.model.matching import class_scores
from novum3d.model.matching_triton import triton_available
from novum3d.model.novum import NOVUM
from novum3d.model.priors import ClassPosePrior, PosePriors
from rendering import Pose, cuboid_volume, pascal3d_intrinsics, rasterize_features


def measure(fn: Callable[[], object], device: torch.device, min_time: float) -> tuple[float, float | None]:
    """Seconds per call (median of blocked_autorange, after two warm-up calls) and peak GiB (CUDA)."""
    fn()
    fn()  # autotuning, torch.compile and caches happen in the warm-up calls
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = time_call(fn, min_time, warmup=0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return seconds, peak


def random_maps(batch: int, h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """Unit feature maps [B, D, h, w] laid out as the backbone gives them (channels_last, fp32)."""
    x = F.normalize(torch.randn(batch, h, w, dim, device=device), dim=-1)
    return x.permute(0, 3, 1, 2)


def backbone_model(name: str, device: torch.device, stride: int, freeze_trunk: bool = False) -> NOVUM:
    """NOVUM with backbone ``name`` (decoder auto: fpn, dpt for a ViT), random weights, 12 classes x ~1100
    Gaussians; channels_last on CUDA."""
    exp = ExperimentConfig()
    exp.model.backbone, exp.model.stride, exp.model.freeze_trunk = name, stride, freeze_trunk
    model = NOVUM(exp).to(device).eval()
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def backbone_label(model: NOVUM, name: str) -> str:
    """``ResNet-50`` for the paper's backbone, else the timm name and the decoder."""
    if name == "resnet50":
        return "ResNet-50"
    return f"{name} + {type(model.backbone.decoder).__name__.removesuffix('Decoder').upper()}"


def classification_rows(device: torch.device, args) -> list[str]:
    H, W = args.size
    B = args.batch
    cuda = device.type == "cuda"
    images = torch.rand(B, 3, H, W, device=device)
    backends = ["torch", "triton"] if cuda and triton_available() else ["torch"]

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    def prepared():
        return normalize_images(images).contiguous(memory_format=torch.channels_last)

    def trunk(net):
        def run():
            with torch.no_grad(), autocast():
                net.trunk(prepared())

        return run

    def trunk_and_head(net):
        def run():
            with torch.no_grad(), autocast():
                net(prepared())

        return run

    def full(net, features, valid, bank, backend):
        def run():
            with torch.no_grad(), autocast():
                f = net(prepared())
            return class_scores(f, features, valid, bank, backend=backend).argmax(1)

        return run

    def matching(maps, features, valid, bank, backend):
        return lambda: class_scores(maps, features, valid, bank, backend=backend)

    def flop(maps, valid, bank):  # useful products only (no padding): pixels x (Gaussians + bank) x 2D
        return B * maps.shape[2] * maps.shape[3] * (int(valid.sum()) + bank.shape[0]) * 2 * maps.shape[1]

    rows = []

    def add(stage, setting, fn, flops=None):
        sec, peak = measure(fn, device, args.min_time)
        tflops = f"{flops / sec / 1e12:.3g}" if flops else "-"
        gib = f"{peak:.1f}" if peak is not None else "-"
        rows.append(f"| {stage} | {setting} | {rate(B / sec)} | {1e3 * sec:.1f} | {tflops} | {gib} |")
        print(rows[-1], flush=True)

    setting = f"batch {B}, {H}x{W}" + (f", stride {args.stride}" if args.stride != 8 else "")
    first = None
    for name in args.backbones:
        model = backbone_model(name, device, args.stride)
        backbone, v = model.backbone, model.volumes
        first = first or (model, name)
        label = backbone_label(model, name)
        cells = "x".join(map(str, map_size(H, W, args.stride)))
        if name == "resnet50":  # the rows' names before other backbones existed
            add("trunk (ResNet-50 to stride 32)", setting, trunk(backbone))
            add("trunk + head (feature backbone)", setting, trunk_and_head(backbone))
        else:
            add(f"trunk ({label.split(' + ')[0]})", setting, trunk(backbone))
            add(f"trunk + head (feature backbone, {label}, {cells} cells)", setting, trunk_and_head(backbone))
        for depth in (d for d in args.trunk_depths if d != 4 and name == "resnet50"):
            shallow = FeatureBackbone("resnet50", backbone.feature_dim, stride=args.stride, trunk_depth=depth)
            shallow = shallow.to(device).eval()
            if cuda:
                shallow = shallow.to(memory_format=torch.channels_last)
            add(f"trunk + head (feature backbone), trunk to layer{depth}", setting, trunk_and_head(shallow))
            del shallow
        if name == args.backbones[0]:  # the matching alone does not depend on the backbone
            Y, K = v.features.shape[:2]
            cls = f"{Y} classes x <= {K} Gaussians, bank {v.bank.shape[0]}"
            maps = random_maps(B, *map_size(H, W, args.stride), v.features.shape[-1], device)
            for backend in backends:
                add(f"matching alone, {backend}", f"{setting}; {cls}", matching(maps, v.features, v.valid, v.bank,
                    backend), flop(maps, v.valid, v.bank))  # fmt: skip
        of = "" if name == "resnet50" else f", {label}"
        for backend in backends:
            add(f"full classification, eager, {backend} matching{of}", setting,
                full(backbone, v.features, v.valid, v.bank, backend))  # fmt: skip
        if args.compile:
            # The library's compile (compile_backbone: in place, its mode and static shapes), on a copy so the
            # eager rows keep an eager backbone: the rows measure what load_model and the trainer give.
            compiled = copy.deepcopy(backbone)
            compile_backbone(compiled, "on", device)
            add(f"full classification, compiled backbone, {backends[-1]} matching{of}", setting,
                full(compiled, v.features, v.valid, v.bank, backends[-1]))  # fmt: skip
            del compiled
        if name != args.backbones[0]:
            del model, backbone
    model, name = first
    backbone, v = model.backbone, model.volumes
    if args.classes:
        N, KN = args.classes, 1100
        g = torch.Generator(device=device).manual_seed(0)
        big = F.normalize(torch.randn(N, KN, v.features.shape[-1], device=device, generator=g), dim=-1)
        big_valid = torch.ones(N, KN, dtype=torch.bool, device=device)
        backend = backends[-1]
        many = f"{N} classes x {KN} Gaussians, bank {v.bank.shape[0]}"
        maps = random_maps(B, *map_size(H, W, args.stride), v.features.shape[-1], device)
        add(f"matching alone, {backend}", f"{setting}; {many}", matching(maps, big, big_valid, v.bank, backend),
            flop(maps, big_valid, v.bank))  # fmt: skip
        of = "" if name == "resnet50" else f", {backbone_label(model, name)}"
        add(f"full classification, eager, {backend} matching{of}", f"{setting}; {many}",
            full(backbone, big, big_valid, v.bank, backend))  # fmt: skip
        if args.compile:
            compiled = copy.deepcopy(backbone)
            compile_backbone(compiled, "on", device)
            add(f"full classification, compiled backbone, {backend} matching{of}", f"{setting}; {many}",
                full(compiled, big, big_valid, v.bank, backend))  # fmt: skip
        del big, big_valid
    return rows


def backbone_seconds(name: str, device: torch.device, batch: int, size: tuple[int, int], stride: int,
                     min_time: float) -> float:  # fmt: skip
    """Seconds per image of ``name``'s feature backbone (eager, bf16 on CUDA) on a batch of ``size`` images."""
    model = backbone_model(name, device, stride)
    images = normalize_images(torch.rand(batch, 3, *size, device=device)).contiguous(memory_format=torch.channels_last)

    def run():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model.backbone(images)

    return measure(run, device, min_time)[0] / batch


def backbone_step(net: torch.nn.Module, images: torch.Tensor, cuda: bool) -> Callable[[], None]:
    """One training step of ``net`` alone: forward (bf16 on CUDA), backward of a loss on the whole map, Adam
    over the parameters that train."""
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4, fused=cuda or None)
    with torch.no_grad():
        target = torch.randn_like(net(images[:1]).float()).expand(images.shape[0], -1, -1, -1)

    def step():
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=cuda):
            maps = net(images)
        loss = (maps.float() * target).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def training_rows(device: torch.device, args) -> list[str]:
    """Backbone training steps per backbone (``backbone_step``), the trunk frozen, and for ResNet-50 also trained
    whole as the paper trains it. The step's other parts (correspondences, contrastive loss, volumes) do not
    depend on the backbone: benchmarks.train_throughput times whole steps on data."""
    H, W = args.size
    B = args.train_batch
    rows = []
    for name, frozen in [(n, f) for n in args.backbones for f in ((False, True) if n == "resnet50" else (True,))]:
        model = backbone_model(name, device, args.stride, freeze_trunk=frozen).train()
        images = normalize_images(torch.rand(B, 3, H, W, device=device)).contiguous(memory_format=torch.channels_last)
        sec, peak = measure(backbone_step(model.backbone, images, device.type == "cuda"), device, args.min_time)
        trained = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad) / 1e6
        trunk = "trunk frozen" if frozen else "trunk trained"
        gib = f"{peak:.1f}" if peak is not None else "-"
        rows.append(f"| {backbone_label(model, name)}, {trunk} ({trained:.1f} M parameters trained) | batch {B}, "
                    f"{H}x{W} | {rate(B / sec)} | {1e3 * sec:.1f} | {gib} |")  # fmt: skip
        print(rows[-1], flush=True)
        del model, images
    return rows


ORACLE_ELEVATIONS = (-8.0, 32.0)  # degrees: the oracle's poses, and its prior's (oracle_prior)


def oracle(
    device,
    n: int,
    seed: int = 0,
    size: tuple[int, int] = (640, 800),
    stride: int = 8,
    gaussians: int = 1100,
    elevations: tuple[float, float] = ORACLE_ELEVATIONS,
):
    """Oracle maps [n, 128, H/stride, W/stride] of an HxW ``size`` image of a ``gaussians``-Gaussian cuboid,
    seen from elevations drawn uniformly in ``elevations`` (degrees); the viewport scales with the width,
    so that the object covers the same share of the map's width at every size and stride."""
    (H, W), g = size, torch.Generator().manual_seed(seed)
    h, w = H // stride, W // stride
    vol = cuboid_volume((0.8, 1.8, 0.6), gaussians).to(device)
    feats = F.normalize(torch.randn(len(vol), 128, generator=g), dim=-1).to(device)
    bank = F.normalize(torch.randn(2560, 128, generator=g), dim=-1).to(device)
    K = pascal3d_intrinsics(1.0, 3000.0 * W / 800, (W / 2, H / 2), downsample=stride).to(device)
    az = torch.rand(n, generator=g) * 2 * math.pi
    low, high = elevations
    el = torch.deg2rad(torch.rand(n, generator=g) * (high - low) + low)
    th = torch.deg2rad(torch.rand(n, generator=g) * 16 - 8)
    dist = 10.0 * (0.9 + 0.2 * torch.rand(n, generator=g))
    truth = Pose(az, el, th, dist)
    vm = truth.viewmat().to(device)
    out = rasterize_features(vol, feats, vm, K.expand(n, 3, 3), w, h, with_depth=False)
    maps = F.normalize(out.features + 0.1 * torch.randn(out.features.shape, generator=g).to(device), dim=-1)
    bg = bank[torch.randint(len(bank), (n, h, w), generator=g).to(device)]
    obj = out.alpha > 0.5
    hide = obj & (torch.rand(n, h, w, generator=g).to(device) < 0.4)
    maps = torch.where((~obj | hide)[..., None], bg, maps).permute(0, 3, 1, 2).contiguous()
    return vol, feats, bank, K, maps, truth


def oracle_prior(n: int = 2000, seed: int = 1) -> ClassPosePrior:
    """The prior training would give for the oracle's pose distribution (poses drawn apart from the test ones)."""
    g = torch.Generator().manual_seed(seed)
    low, high = ORACLE_ELEVATIONS
    records = [(0, 0.0, math.radians(float(e)), math.radians(float(t)), 10.0 * float(d))
               for e, t, d in zip(torch.rand(n, generator=g) * (high - low) + low, torch.rand(n, generator=g) * 16 - 8,
                                  0.9 + 0.2 * torch.rand(n, generator=g), strict=True)]  # fmt: skip
    return PosePriors.from_annotations(["car"], records).for_class(0)


def pose_run(estimator, vol, feats, bank, K, maps, truth, batch, prior=None):
    """(images/s, Acc@pi/6, median error in degrees) of one pass over the oracle images.

    One timed pass, not blocked_autorange's repeats: the accuracy is that of the timed estimates,
    and a pass at batch 1 takes seconds (the caller's warm-up call has cached the templates).
    """
    n = maps.shape[0]
    results = []

    def run():
        for s in range(0, n, batch):
            r = estimator.estimate(
                maps[s : s + batch], vol, feats, bank, K.expand(min(batch, n - s), 3, 3), class_key="car", prior=prior
            )
            results.append(r)

    per_s = n / time_once(run)
    err = pose_errors(PoseResult.cat(results).to("cpu"), truth)
    return per_s, float((err < math.pi / 6).float().mean()), float(torch.rad2deg(err).median())


def int_list(flag: str, accept: Callable[[int], bool], expected: str) -> Callable[[str], tuple[int, ...]]:
    """An argparse type for ``flag``: comma-separated integers, each passing ``accept``; otherwise a usage
    error saying ``expected``."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(x) for x in text.split(","))
        except ValueError:
            values = ()
        if not values or not all(accept(v) for v in values):
            raise argparse.ArgumentTypeError(f"{flag} {text}: expected {expected}, comma-separated")
        return values

    return parse


strides = int_list("--pose-strides", STRIDES.__contains__, f"some of {STRIDES}")
counts = int_list("--pose-gaussians", lambda v: v >= 1, "positive integers")
trunk_depths = int_list("--trunk-depths", TRUNK_DEPTHS.__contains__, f"some of {TRUNK_DEPTHS}")


def elevation_range(text: str) -> tuple[float, float]:
    """``LO,HI`` degrees, -90 <= LO <= HI <= 90."""
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        low, high = 1.0, 0.0
    if not -90 <= low <= high <= 90:
        raise argparse.ArgumentTypeError(f"--pose-elevations {text}: expected LO,HI degrees with -90 <= LO <= HI <= 90")
    return low, high


def backbone_names(text: str) -> tuple[str, ...]:
    """``--backbones``: comma-separated ``model.backbone`` names (resnet50, resnet18, timm:<model name>)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    try:
        for n in names:
            BackboneName(("resnet50", "resnet18")).check(n, "--backbones")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not names:
        raise argparse.ArgumentTypeError("--backbones: expected names, comma-separated")
    return names


def size(text: str) -> tuple[int, int]:
    h, w = (int(x) for x in text.lower().split("x"))
    if h % 8 or w % 8:
        raise argparse.ArgumentTypeError(f"--size {text}: height and width must be multiples of 8")
    return h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="classification batch")
    parser.add_argument("--size", type=size, default=(640, 800), help="classification image size HxW")
    parser.add_argument("--stride", type=int, choices=STRIDES, default=8, help="classification rows' feature stride")
    parser.add_argument(
        "--trunk-depths", type=trunk_depths, default=(4,), help="add trunk + head rows for these depths, e.g. 4,3,2"
    )
    parser.add_argument(
        "--backbones",
        type=backbone_names,
        default=None,
        help="classification rows for each of these model.backbone names, e.g. resnet50,timm:vit_small_patch14_dinov2"
        " (default resnet50); with it, pose rows with each backbone's forward and training rows (--train-batch)",
    )
    parser.add_argument("--train-batch", type=int, default=32, help="batch of the --backbones training rows (0: none)")
    parser.add_argument("--classes", type=int, default=0, help="add rows for this many random classes x 1100")
    parser.add_argument("--compile", action="store_true", help="add full classification with a compiled backbone")
    parser.add_argument("--min-time", type=float, default=1.0, help="blocked_autorange min_run_time per row, s")
    parser.add_argument("--classes-only", action="store_true", help="skip the pose rows")
    parser.add_argument("--pose-only", action="store_true", help="skip the classification rows")
    parser.add_argument("--pose-images", type=int, default=64)
    parser.add_argument("--pose-batch", type=int, default=64)
    parser.add_argument("--pose", action="append", default=[], help="key=value: a PoseConfig field (repeatable)")
    parser.add_argument(
        "--pose-variant",
        action="append",
        default=[],
        help="key=value[,key=value]: more pose rows with these fields on top of --pose, in the same run, so that "
        "their times compare as ratios (repeatable), e.g. ranking=inliers",
    )
    parser.add_argument("--pose-size", type=size, default=(640, 800), help="pose rows' image size HxW")
    parser.add_argument("--pose-strides", type=strides, default=(8,), help="feature strides of the pose rows, e.g. 8,4")
    parser.add_argument(
        "--pose-gaussians", type=counts, default=(1100,), help="Gaussians of the pose rows' cuboid, e.g. 1100,2000"
    )
    parser.add_argument(
        "--pose-elevations",
        type=elevation_range,
        default=ORACLE_ELEVATIONS,
        help="LO,HI: elevations (degrees) of the oracle's poses; the prior stays at -8,32, so e.g. 45,75 asks "
        "for poses above it, as the OOD-pose split does",
    )
    parser.add_argument("--append", default="", metavar="FILE", help="also append the table to this Markdown file")
    args = parser.parse_args(argv)
    compare = args.backbones is not None
    args.backbones = args.backbones or ("resnet50",)
    device = select_device()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    command = shlex.join(["python", "-m", "benchmarks.inference", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        f"### Inference speed, {name} ({datetime.date.today().isoformat()})",
        "",
        f"Command: `{command}`. torch {torch.__version__}.",
    ]
    if not args.pose_only:
        lines += ["", "| stage | setting | img/s | ms/batch | TFLOP/s | peak GiB |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    if not args.pose_only:
        lines += classification_rows(device, args)
    if not args.classes_only:
        base = {"distance": 10.0}
        settings = [("", PoseEstimator(pose_config(base, args.pose)))]
        for variant in args.pose_variant:
            cfg = pose_config(base, [*args.pose, *variant.split(",")], where="--pose-variant")
            settings.append((f" ({variant})", PoseEstimator(cfg)))
        prior = oracle_prior()
        head = ["", "| task | setting | img/s | Acc@pi/6 | median error deg |", "|---|---|---|---|---|"]
        print("\n".join(head), flush=True)
        lines += head
        estimator_s = estimator_stride = estimator_row = None
        runs = [("with the class's prior", prior, args.pose_batch), ("with the class's prior", prior, 1),
                ("without a prior (the authors' grid alone)", None, args.pose_batch)]  # fmt: skip
        for stride, gaussians in itertools.product(args.pose_strides, args.pose_gaussians):
            vol, feats, bank, K, maps, truth = oracle(
                device, args.pose_images, size=args.pose_size, stride=stride, gaussians=gaussians,
                elevations=args.pose_elevations,
            )  # fmt: skip
            cells = "x".join(str(n) for n in maps.shape[-2:])
            low, high = args.pose_elevations
            seen = "" if args.pose_elevations == ORACLE_ELEVATIONS else f", poses at elevations {low:g}..{high:g} deg"
            for (label, pr, batch), (variant, est) in itertools.product(runs, settings):
                pose_run(est, vol, feats, bank, K, maps[:2], truth[:2], 2, pr)  # warm-up, templates
                per_s, acc, median = pose_run(est, vol, feats, bank, K, maps, truth, batch, pr)
                if estimator_s is None:  # the first row: with the prior, at the pose batch
                    estimator_s, estimator_stride, estimator_row = 1 / per_s, stride, f"{label}, {est.cfg.steps} steps"
                steps = est.cfg.steps
                lines.append(f"| pose{variant}, {label}, {steps} steps, {cells} (stride {stride}), "
                             f"{len(vol)} Gaussians{seen} | batch {batch} | {rate(per_s)} | {100 * acc:.1f}% | "
                             f"{median:.2f} |")  # fmt: skip
                print(lines[-1], flush=True)
        if compare:
            # The estimator reads feature maps only: its time on the oracle's maps plus each backbone's forward
            # at the pose batch and size is the pose pipeline's time per image with that backbone.
            H, W = args.pose_size
            head = ["", f"| pose with the backbone (estimator: {estimator_row}, oracle maps) | setting | img/s | "
                    "backbone ms/img | estimator ms/img |", "|---|---|---|---|---|"]  # fmt: skip
            print("\n".join(head), flush=True)
            lines += head
            for backbone in args.backbones:
                b_s = backbone_seconds(backbone, device, args.pose_batch, args.pose_size, estimator_stride,
                                       args.min_time)  # fmt: skip
                lines.append(f"| {backbone} forward + pose | batch {args.pose_batch}, {H}x{W}, stride "
                             f"{estimator_stride} | {rate(1 / (b_s + estimator_s))} | {1e3 * b_s:.2f} | "
                             f"{1e3 * estimator_s:.2f} |")  # fmt: skip
                print(lines[-1], flush=True)
    if compare and args.train_batch > 0 and not args.pose_only:
        head = ["", "| training step of the backbone (forward, backward, Adam) | setting | img/s | ms/step | "
                "peak GiB |", "|---|---|---|---|---|"]  # fmt: skip
        print("\n".join(head), flush=True)
        lines += head + training_rows(device, args)
    if not args.pose_only:
        lines += [
            "",
            "TFLOP/s counts the useful products of the matching rows (pixels x (valid Gaussians + bank) x 2D).",
        ]
    emit("\n".join(lines), args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
