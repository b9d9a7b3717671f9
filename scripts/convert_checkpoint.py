#!/usr/bin/env python3
"""Convert a released NOVUM, CAVE or NeMo checkpoint into a novum3d checkpoint (nothing is downloaded).

    python scripts/convert_checkpoint.py novum classification_saved_model_199.pth \\
        --pascal3d data/PASCAL3D+_release1.1 --out models/novum-authors.pt
    python scripts/convert_checkpoint.py nemo saved_model_car_799.pth --pascal3d data/PASCAL3D+_release1.1 \\
        --out models/nemo-car.pt [--mesh 1]
    python scripts/convert_checkpoint.py cave classification_saved_model_199.pth --pascal3d ... --out ...

The backbone (ResNet-50, the authors' U-Net decoder and 1x1 projection) is mapped key by key; the memory becomes
one Gaussian per vertex of each class's mesh, in the mesh's order, and the background bank. The meshes are
rebuilt from the CAD models under --pascal3d (the PASCAL3D+_release1.1 folder) by a port of the authors'
builder (cuboids; CAVE's ellipsoids), or read from the .off files their scripts wrote (--meshes, e.g.
PASCAL3D+_release1.1/CAD_single). A NeMo file holds one category (its own backbone): it becomes a one-class
model of its --mesh (1-based, default 1; NeMo's "single" meshes have one).

The result loads in scripts/evaluate.py and scripts/estimate_pose.py like a checkpoint trained here and records
where it came from (file, sha256, format, what was dropped) under "provenance". Where to download each release:
docs/reproduce-the-paper.md.
"""

from __future__ import annotations

import argparse
import sys

from novum3d.cli import command
from novum3d.errors import ConfigError
from novum3d.model.conversion import BANK_SIZE, FORMATS, convert_release, save_converted
from novum3d.model.conversion.meshes import NUMBER_VERTICES, SHAPES


def parse_size(text: str) -> tuple[int, int]:
    """``"640x800"`` -> (640, 800); anything else is a ConfigError naming --image-size."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size: expected HEIGHTxWIDTH such as 640x800, got {text!r}",
                          field="--image-size") from None  # fmt: skip
    if min(height, width) < 32:
        raise ConfigError(f"--image-size: at least 32x32, got {text!r}", field="--image-size")
    return height, width


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=FORMATS, help="whose checkpoint: GenIntel/NOVUM, Angtian/NeMo or CAVE")
    parser.add_argument("checkpoint", help="the released .pth file")
    parser.add_argument("--out", required=True, help="where to write the novum3d checkpoint")
    parser.add_argument("--pascal3d", default=None, help="PASCAL3D+_release1.1 (its CAD/ rebuilds the meshes)")
    parser.add_argument("--meshes", default=None, help="instead: the folder of <class>/NN.off the authors wrote")
    parser.add_argument("--classes", default=None, help="novum, cave: the memory's classes, in order (default: 12)")
    parser.add_argument("--class", dest="category", default=None, help="nemo: its class (default: from the name)")
    parser.add_argument("--mesh", type=int, default=1, help="nemo: which of its meshes (1-based, default 1)")
    parser.add_argument("--shape", choices=SHAPES, default=None, help="the meshes (default: ellipsoid for cave)")
    parser.add_argument(
        "--mesh-vertices", type=int, default=NUMBER_VERTICES, help="the builder's number_vertices (the authors' 1000)"
    )
    parser.add_argument("--bank-size", type=int, default=BANK_SIZE, help="clutter bank rows (the authors' 5 x 512)")
    parser.add_argument("--image-size", default="640x800", help="HEIGHTxWIDTH of the images it will evaluate")
    parser.add_argument(
        "--priors-from", default=None, help="a preprocessed PASCAL3D+ training root: pose priors from its annotations"
    )
    parser.add_argument(
        "--allow-pickle", action="store_true", help="unpickle any object in the file (only for files you trust)"
    )
    args = parser.parse_args(argv)
    if args.format == "nemo" and args.classes:
        parser.error("--classes: a NeMo checkpoint holds one class; give --class")
    if args.format != "nemo" and (args.category or args.mesh != 1):
        parser.error("--class and --mesh are for nemo checkpoints")
    if args.mesh_vertices < 1 or args.bank_size < 0:
        parser.error("--mesh-vertices must be >= 1 and --bank-size >= 0")
    classes = [args.category] if args.category else args.classes.split(",") if args.classes else None
    ckpt = convert_release(
        args.format, args.checkpoint, args.pascal3d, args.meshes, classes, args.shape, args.mesh_vertices,
        args.mesh, args.bank_size, parse_size(args.image_size), args.priors_from, args.allow_pickle,
    )  # fmt: skip
    out = save_converted(ckpt, args.out)
    made = ckpt["provenance"]
    counts = ", ".join(f"{c} {n}" for c, n in made["meshes"]["vertices"].items())
    print(f"{args.format} checkpoint {made['file']} (sha256 {made['sha256'][:12]}) -> {out}")
    print(f"  classes and vertices: {counts}; bank {made['memory']['bank']}")
    dropped = made["dropped"]
    names = (": " + ", ".join(dropped[:4]) + (" ..." if len(dropped) > 4 else "")) if dropped else ""
    print(f"  dropped {len(dropped)} tensor(s){names}; {len(made['folded'])} conv biases folded into BatchNorm")
    print(f"  pose priors: {'from ' + args.priors_from if args.priors_from else 'none (evaluation supplies them)'}")
    print(f"next: python scripts/evaluate.py --checkpoint {out} --data <preprocessed PASCAL3D+> --layout pascal3d")
    return 0


if __name__ == "__main__":
    sys.exit(main())
