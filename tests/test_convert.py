"""Converting the authors' released checkpoints (GenIntel/NOVUM, NeMo, CAVE): fixture files in each layout (their
key names and shapes, random values, meshes from a small fake CAD folder), the backbone against an independent
re-implementation of their forward in float64, the memory's rows, the mesh builders, and every bad input."""

from __future__ import annotations

import doctest
import json
import math
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import novum3d.model.conversion.meshes as meshes_module
from novum3d.config import ExperimentConfig, config_to_dict
from novum3d.errors import CheckpointError, ConfigError, DataError
from novum3d.inference.loading import load_model
from novum3d.inference.pose.config import PRESETS, pose_config
from novum3d.inference.pose.refinement import refinement_lr
from novum3d.model.backbone import FeatureBackbone, normalize_images
from novum3d.model.conversion import (
    SourceCheckpoint,
    authors_cuboid,
    authors_ellipsoid,
    convert,
    convert_release,
    map_backbone,
    mesh_from_cad,
    mesh_gaussians,
    read_off,
    read_source,
)
from novum3d.model.novum import NOVUM
from tests.convert_fixtures import Opaque, authors_state, fake_cad, reference_model, save_release, unit_rows

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["car", "bus", "sofa"]


@pytest.fixture(scope="module")
def cad(tmp_path_factory) -> Path:
    return fake_cad(tmp_path_factory.mktemp("pascal3d"), CLASSES)


def _source(state, memory, fmt="novum", path="classification_saved_model_199.pth") -> SourceCheckpoint:
    stripped = {k.removeprefix("module."): v for k, v in state.items()}
    return SourceCheckpoint(Path(path), fmt, stripped, memory, "0" * 64, 0, {"timestamp": 1})


def test_converted_backbone_equals_the_authors_forward_in_float64():
    state = authors_state(seed=0, heads=True)  # an older revision's state, with the classifier and pose heads
    mapped = map_backbone({k.removeprefix("module."): v for k, v in state.items()}, "fixture.pth")
    assert sorted(mapped.dropped) == sorted(k.removeprefix("module.") for k in state if ".classifier." in k
                                            or ".pose_estimator." in k or k.endswith("out_layer.bias"))  # fmt: skip
    assert len(mapped.folded) == 6  # the six decoder convolutions' biases
    with torch.device("meta"):
        ours = FeatureBackbone("resnet50", 128, decoder="unet")
    ours.load_state_dict({k: v.double() for k, v in mapped.state.items()}, assign=True)
    ours.eval()
    theirs = reference_model(state)
    # 80 is no multiple of 32: layer4's 3 columns upsample to 6 and the authors' Up crops one for layer3's 5
    images = torch.rand(2, 3, 64, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = theirs.forward_test(images)
        got = ours(normalize_images(images)).double()
    assert got.shape == expected.shape == (2, 128, 8, 10)
    torch.testing.assert_close(expected.norm(dim=1), torch.ones(2, 8, 10, dtype=torch.float64))  # not degenerate
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert expected[0].std(dim=(1, 2)).mean() > 0.01  # features vary over the map


def test_memory_rows_land_at_their_class_and_vertex(cad):
    meshes = {c: mesh_from_cad(cad, c, number_vertices=60) for c in CLASSES}
    counts = [len(m) for m in meshes.values()]
    max_n, bank = max(counts), 16
    memory = unit_rows(len(CLASSES) * max_n + bank)
    ckpt = convert(_source(authors_state(meta=True), memory), meshes, {"source": "test"}, (64, 64), bank)
    state = ckpt["model"]
    assert ckpt["classes"] == CLASSES and len(set(counts)) > 1  # classes of different sizes: padding is exercised
    for y, mesh in enumerate(meshes.values()):
        n = len(mesh)
        for k in (0, n // 2, n - 1):  # memory row y * max_n + k is vertex k of class y
            torch.testing.assert_close(state["volumes.features"][y, k], memory[y * max_n + k], rtol=0, atol=0)
        assert state["volumes.valid"][y].sum() == n and not state["volumes.valid"][y, n:].any()
        torch.testing.assert_close(state["volumes.means"][y, :n], torch.from_numpy(mesh.vertices), rtol=0, atol=0)
    torch.testing.assert_close(state["volumes.bank"], memory[len(CLASSES) * max_n :], rtol=0, atol=0)
    prov = ckpt["provenance"]
    assert (
        prov["source"] == "converted" and prov["format"] == "novum" and prov["meshes"]["vertices"]["car"] == counts[0]
    )
    # NeMo: one tensor per mesh, --mesh picks one; its vertex k is row k
    car = {"car": meshes["car"]}
    rows = [unit_rows(counts[0] + bank, seed=s) for s in (1, 2)]
    nemo = convert(_source(authors_state(meta=True), rows, "nemo"), car, {}, (64, 64), bank, mesh_index=2)
    torch.testing.assert_close(nemo["model"]["volumes.features"][0], rows[1][: counts[0]], rtol=0, atol=0)
    torch.testing.assert_close(nemo["model"]["volumes.bank"], rows[1][counts[0] :], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match=r"--mesh 3: its memory holds 2 mesh\(es\)"):
        convert(_source(authors_state(meta=True), rows, "nemo"), car, {}, (64, 64), bank, mesh_index=3)


def test_the_cuboid_port_reproduces_a_hand_computed_mesh(cad):
    one, half = (np.float32(-1), np.float32(1)), (np.float32(-0.5), np.float32(0.5))
    mesh = authors_cuboid([one, half, half], number_vertices=10)
    # area 10, step sqrt(10 / 20 * 2) = 1: x at -1, 0, 1; y and z at -0.5, 0.5. Faces z-, z+ (y-major, x inner),
    # y-, y+ (z-major, x inner), x-, x+ (z-major, y inner), each a grid of its own.
    xs, ys = [-1.0, 0.0, 1.0], [-0.5, 0.5]
    expected = [[x, y, -0.5] for y in ys for x in xs] + [[x, y, 0.5] for y in ys for x in xs]
    expected += [[x, -0.5, z] for z in ys for x in xs] + [[x, 0.5, z] for z in ys for x in xs]
    expected += [[-1.0, y, z] for z in ys for y in ys] + [[1.0, y, z] for z in ys for y in ys]
    assert mesh.vertices.dtype == np.float32 and mesh.vertices.tolist() == expected
    # two triangles a cell: 2 + 2 cells on each z face, 2 + 2 on each y face, 1 + 1 on each x face
    assert mesh.faces.shape == (20, 3) and mesh.faces[:2].tolist() == [[0, 1, 3], [4, 1, 3]]
    assert mesh.faces[-2:].tolist() == [[28, 29, 30], [31, 29, 30]]
    # From CAD/: the union of the category's NN.off boxes (01_old.off, a long name, is not read), 99% coverage
    car = mesh_from_cad(cad, "car", number_vertices=10)
    both = np.concatenate([read_off(cad / "CAD" / "car" / f"0{i}.off").vertices for i in (1, 2)])
    box = [(np.float32(both[:, a].min()), np.float32(both[:, a].max())) for a in range(3)]
    assert car.vertices.tolist() == authors_cuboid(box, number_vertices=10).vertices.tolist()
    assert abs(car.vertices).max() < 10  # the 50-unit box of 01_old.off stayed out
    assert len(mesh_from_cad(cad, "car")) > 1000 - 200  # the authors' 1000 vertices give about that many
    results = doctest.testmod(meshes_module, optionflags=doctest.ELLIPSIS)
    assert results.failed == 0 and results.attempted >= 4


def test_the_ellipsoid_port_follows_caves_grid_and_stays_at_the_origin():
    box = [(np.float32(1), np.float32(5)), (np.float32(-1), np.float32(1)), (np.float32(0), np.float32(1))]
    mesh = authors_ellipsoid(box, number_vertices=50)
    a, b, c = 2.0, 1.0, 0.5
    r = (a * b * c) ** (1 / 3)
    edge = math.sqrt(2 * (4 * math.pi * r * r / 50) / math.sqrt(3))
    n_theta, n_phi = int(math.pi * r / edge), int(2 * math.pi * r / edge)
    n_theta += n_theta % 2 == 0
    assert len(mesh) == n_theta * n_phi
    i, j = 2, 3  # row 2 (polar angle pi / 2 with 5 rows), column 3
    t, p = math.pi * i / (n_theta - 1), 2 * math.pi * j / n_phi
    expected = [a * math.sin(t) * math.cos(p), b * math.sin(t) * math.sin(p), c * math.cos(t)]
    np.testing.assert_allclose(mesh.vertices[i * n_phi + j], expected, rtol=1e-6, atol=1e-7)
    # centred at the origin, not at the box's centre (3, 0, 0.5), as CAVE's code builds it
    np.testing.assert_allclose(mesh.vertices.mean(0), [0, 0, 0], atol=1e-6)


def test_one_gaussian_per_vertex_at_sixty_percent_of_the_grid_step():
    # a 2 x 2 x 2 cube meshed at step 1 (area 24, number_vertices 24): 3 x 3 samples per face, 26 distinct of 54
    side = (np.float32(-1), np.float32(1))
    mesh = authors_cuboid([side, side, side], number_vertices=24)
    vol = mesh_gaussians(mesh)
    assert len(vol) == len(mesh) == 54
    assert vol.spacing == pytest.approx(math.sqrt(24 / 26))  # sqrt(area / distinct vertices): ~ the step
    torch.testing.assert_close(vol.scales, torch.full((54, 3), 0.6 * vol.spacing))
    torch.testing.assert_close(vol.means, torch.from_numpy(mesh.vertices))


def test_a_converted_model_keeps_its_gaussians_through_load_model(tmp_path, cad):
    meshes = {c: mesh_from_cad(cad, c, number_vertices=40) for c in ("car", "bus")}
    cfg = ExperimentConfig()
    cfg.model.backbone, cfg.model.feature_dim, cfg.volume.kind, cfg.bank.size = "resnet18", 16, "points", 8
    cfg.data.classes = list(meshes)
    model = NOVUM(cfg, list(meshes), {c: mesh_gaussians(m) for c, m in meshes.items()})
    path = tmp_path / "points.pt"
    torch.save({"kind": "novum", "model": model.state_dict(), "config": config_to_dict(cfg), "classes": list(meshes),
                "provenance": {"source": "converted"}}, path)  # fmt: skip
    loaded, loaded_cfg = load_model(path, compile="off")
    assert loaded_cfg.volume.kind == "points" and loaded.provenance == {"source": "converted"}
    for y, mesh in enumerate(meshes.values()):
        torch.testing.assert_close(loaded.volumes.volume(y).means, torch.from_numpy(mesh.vertices))
    with pytest.raises(ConfigError, match="'points' volumes hold their Gaussians in a checkpoint"):
        NOVUM(cfg, list(meshes))  # nothing to build them from


def test_read_off_splits_polygons_and_names_bad_files(tmp_path):
    quad = tmp_path / "quad.off"
    quad.write_text("OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    mesh = read_off(quad)
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3]] and mesh.vertices.dtype == np.float32
    (tmp_path / "short.off").write_text("OFF\n4 1 0\n0 0 0\n1 0 0\n")
    with pytest.raises(DataError, match=r"short.off: malformed OFF mesh \(4 vertices announced, 2 found\)"):
        read_off(tmp_path / "short.off")
    (tmp_path / "ply.off").write_text("ply\nformat ascii 1.0\n")
    with pytest.raises(DataError, match=r"ply.off: not an OFF mesh"):
        read_off(tmp_path / "ply.off")


def _small_release(path: Path, rows: int = 10, fmt: str = "novum") -> Path:
    state = {"module.out_layer.weight": torch.zeros(128, 256)}
    memory = [unit_rows(rows)] if fmt == "nemo" else unit_rows(rows)
    return save_release(path, state, memory)


def test_files_of_another_format_or_truncated_are_one_line_errors_with_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match=r"no such file; download it from https://github.com/GenIntel/NOVUM"):
        read_source(tmp_path / "missing.pth", "novum")
    novum = _small_release(tmp_path / "novum.pth")
    nemo = _small_release(tmp_path / "saved_model_car_799.pth", fmt="nemo")
    with pytest.raises(CheckpointError, match=r"memory is one tensor.*convert it with `convert_checkpoint.py novum`"):
        read_source(novum, "nemo")
    with pytest.raises(CheckpointError, match=r"a list of 1 tensors.*convert it with `convert_checkpoint.py nemo`"):
        read_source(nemo, "novum")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(novum.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match=r"truncated.pth: unreadable .*a truncated or corrupted download"):
        read_source(truncated, "novum")
    torch.save({"model": {}, "config": {}}, tmp_path / "ours.pt")
    with pytest.raises(CheckpointError, match="already a novum3d checkpoint: evaluate it as it is"):
        read_source(tmp_path / "ours.pt", "novum")
    torch.save({"net": {}, "epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(
        CheckpointError, match=r"not a cave checkpoint: expected 'state' .*found keys \['epoch', 'net'\]"
    ):
        read_source(tmp_path / "other.pt", "cave")
    torch.save({"state": {}, "memory": torch.zeros(2, 2), "args": Opaque()}, tmp_path / "pickle.pt")
    with pytest.raises(
        CheckpointError, match=r"holds a pickled tests.convert_fixtures.Opaque.*rerun with --allow-pickle"
    ):
        read_source(tmp_path / "pickle.pt", "novum")
    source = read_source(novum, "novum")  # the authors' argparse.Namespace is allowed
    assert source.extra["args"] == {"config": "config/defaults.yaml", "seed": "0"} and set(source.state) == {
        "out_layer.weight"
    }


def test_a_memory_that_does_not_fit_the_meshes_is_an_error_naming_the_options(cad, tmp_path):
    max_n = max(len(mesh_from_cad(cad, c, number_vertices=60)) for c in CLASSES)
    rows = 3 * max_n + 2560
    path = _small_release(tmp_path / "classification_saved_model_199.pth", rows=rows - 1)
    message = (
        rf"memory has {rows - 1} rows, the meshes give 3 classes x {max_n} \(the largest mesh, \w+\) \+ 2560 bank "
    )
    with pytest.raises(CheckpointError, match=message + rf"rows = {rows}: .*--mesh-vertices \(the authors': 1000\)"):
        convert_release("novum", path, cad, classes=CLASSES, number_vertices=60)
    path = _small_release(tmp_path / "classification_saved_model_199.pth", rows=rows)
    with pytest.raises(CheckpointError, match="state has nothing for novum3d's"):  # the rows fit: on to the state
        convert_release("novum", path, cad, classes=CLASSES, number_vertices=60)


def test_every_source_tensor_is_used_or_dropped_and_every_target_filled():
    state = {k.removeprefix("module."): v for k, v in authors_state(meta=True).items()}
    with pytest.raises(CheckpointError, match=r"state key 'net.extra.weight' has no place"):
        map_backbone(state | {"net.extra.weight": torch.empty(3, device="meta")}, "x.pth")
    gone = {k: v for k, v in state.items() if k != "net.extractor2.2.bn3.running_var"}
    with pytest.raises(CheckpointError, match=r"nothing for novum3d's 'layer4.2.bn3.running_var' \(expected "
                                              r"module.net.extractor2.2.bn3.running_var\)"):  # fmt: skip
        map_backbone(gone, "x.pth")
    bad = dict(state, **{"net.upsample1.doubleconv.doubleconv.3.weight": torch.empty(512, 1024, 1, 1, device="meta")})
    shape = r"'net.upsample1.doubleconv.doubleconv.3.weight' has shape \(512, 1024, 1, 1\), .* \(512, 1024, 3, 3\)"
    with pytest.raises(CheckpointError, match=shape):
        map_backbone(bad, "x.pth")
    with pytest.raises(CheckpointError, match=r"no out_layer.weight"):
        map_backbone({"net.extractor.0.weight": torch.empty(1)}, "x.pth")
    mapped = map_backbone(state, "x.pth")
    with torch.device("meta"):  # every target tensor is there, nothing else
        assert set(mapped.state) == set(FeatureBackbone("resnet50", 128, decoder="unet").state_dict())
    assert mapped.dropped == ["out_layer.bias"] and mapped.filled.keys() == {"head.bias"}


def test_the_script_reports_bad_input_in_one_line(tmp_path, cad, capsys):
    main = runpy.run_path(str(ROOT / "scripts" / "convert_checkpoint.py"), run_name="novum3d_test")["main"]
    novum = _small_release(tmp_path / "classification_saved_model_199.pth")
    out = ["--out", str(tmp_path / "x.pt")]
    cases = [
        (["novum", str(novum), *out], "give one of --pascal3d ROOT"),
        (["novum", str(novum), "--pascal3d", str(tmp_path), *out], "no CAD folder for 'aeroplane'"),
        (["nemo", str(novum), "--pascal3d", str(cad), *out], "memory is one tensor"),
        (["nemo", str(_small_release(tmp_path / "nemo.pth", fmt="nemo")), "--pascal3d", str(cad), *out],
         "cannot tell its class from the name"),
        (["novum", str(novum), "--pascal3d", str(cad), "--image-size", "64", *out], "--image-size: expected HEIGHTx"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_pose_presets_layer_under_explicit_fields_and_set_the_authors_protocol():
    authors = pose_config({"distance": 4.0}, ["preset=authors"])
    assert (authors.top_k, authors.prior_top_k, authors.prior_grid, authors.distance_factors) == (1, 0, False, [1.0])
    assert (authors.steps, authors.lr, authors.lr_final, authors.betas, authors.clutter) == (
        30, 0.05, 0.05, (0.4, 0.6), "none")  # fmt: skip
    assert (
        authors.distance == 4.0 and authors.hypotheses() == 1 and authors.renders_per_image()["forward_backward"] == 30
    )
    assert [refinement_lr(authors, s, 30) for s in (0, 29)] == [
        0.05,
        0.05,
    ]  # constant, as their never-stepped scheduler
    nemo = pose_config({}, ["preset=nemo", "steps=250"])
    assert nemo.steps == 250 and nemo.clutter == "mean"  # an explicit field wins over the preset
    assert [refinement_lr(nemo, s, 300) for s in (0, 99, 100, 299)] == pytest.approx([0.05, 0.05, 0.01, 0.002])
    assert pose_config({}, []) == pose_config({}, ["preset=novum3d"]) and PRESETS["novum3d"] == {}
    with pytest.raises(ConfigError, match=r"--pose: preset: one of \['novum3d', 'authors', 'nemo'\], got 'paper'"):
        pose_config({}, ["preset=paper"])
    with pytest.raises(ConfigError, match="lr_schedule: one of"):
        pose_config({}, ["lr_schedule=linear"])


@pytest.mark.slow
def test_fixtures_in_each_layout_convert_and_evaluate_and_estimate_poses(tmp_path, cad):
    """From a fixture file in each released layout to evaluate.py and estimate_pose.py, with and without the authors'
    pose preset (tiny synthetic images; small meshes and bank to keep the CPU time down)."""
    from novum3d.data.synthetic import generate

    data = tmp_path / "tiny"
    generate(data, "tiny", seed=0, categories=["car", "bus"])
    state = authors_state(seed=0, heads=True)
    small = {"--mesh-vertices": "80", "--bank-size": "32"}
    shapes = {"novum": "cuboid", "cave": "ellipsoid"}
    files = {}
    for fmt in ("novum", "cave"):
        meshes = [mesh_from_cad(cad, c, shapes[fmt], 80) for c in ("car", "bus")]
        rows = 2 * max(len(m) for m in meshes) + 32
        files[fmt] = save_release(tmp_path / f"{fmt}_saved_model_199.pth", state, unit_rows(rows))
    per_cad = [mesh_from_cad(cad, "car", "cuboid", 80, cad_index=i) for i in (1, 2)]
    plain = {k: v for k, v in state.items() if ".classifier." not in k and ".pose_estimator." not in k}
    files["nemo"] = save_release(tmp_path / "saved_model_car_799.pth", plain,
                                 [unit_rows(len(m) + 32, seed=i) for i, m in enumerate(per_cad)])  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

    def run(script, *argv):
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *argv], capture_output=True,
                                text=True, env=env, cwd=ROOT, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    image = sorted((data / "test-clean" / "images" / "car").glob("*.JPEG"))[0]
    for fmt, path in files.items():
        out = tmp_path / f"{fmt}.pt"
        extra = ["--mesh", "2"] if fmt == "nemo" else ["--classes", "car,bus"]
        run("convert_checkpoint.py", fmt, str(path), "--pascal3d", str(cad), "--out", str(out), "--image-size", "64x64",
            *extra, *[x for kv in small.items() for x in kv])  # fmt: skip
        ckpt = torch.load(out, weights_only=True)
        assert ckpt["provenance"]["format"] == fmt and ckpt["provenance"]["sha256"]
        for preset in ([], ["--pose", "preset=authors"]):
            evaluation = tmp_path / f"eval-{fmt}-{len(preset)}"
            run("evaluate.py", "--checkpoint", str(out), "--data", str(data), "--splits", "clean", "--out",
                str(evaluation), "--workers", "0", "--device", "cpu", "--steps", "2", *preset)  # fmt: skip
            report = json.loads((evaluation / "results.json").read_text())
            assert report["pose_preset"] == ("authors" if preset else "novum3d")
            assert list(report["by_protocol"]) == (["reference"] if preset else ["full", "reference"])
            assert report["provenance"]["format"] == fmt
            run("estimate_pose.py", str(image), "--checkpoint", str(out), "--out", str(tmp_path / "poses"),
                "--steps", "2", *preset)  # fmt: skip
            assert json.loads((tmp_path / "poses" / f"{image.stem}.json").read_text())["distance"] > 0
