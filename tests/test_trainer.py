import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from novum3d.config import load_experiment
from novum3d.data.batch import collate
from novum3d.data.synthetic import generate
from novum3d.model.backbone import is_compiled
from novum3d.train.trainer import CheckpointError, Trainer

CLASSES = ["car", "bus"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "tiny"
    generate(root, "tiny", seed=0, categories=CLASSES)
    return root


def tiny_config(data_root, out, **extra):
    overrides = [
        f"data.root={data_root}", "data.image_size=[64, 64]", "data.num_workers=0", f"data.classes={CLASSES}",
        "model.backbone=resnet18", "model.feature_dim=16", "volume.num_gaussians=120", "bank.size=64",
        "bank.per_image=4", "optim.batch_size=4", "optim.epochs=3", f"train.out_dir={out}", "train.device=cpu",
    ] + [f"{k}={v}" for k, v in extra.items()]  # fmt: skip
    return load_experiment("configs/synthetic-small.yaml", overrides)


def test_resume_gives_the_identical_next_step(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path / "run")
    a = Trainer(cfg, quiet=True)
    a.fit(until_epoch=1)
    batch = next(iter(a.train_loader(1)))
    loss_a = a.train_step(batch).loss
    b = Trainer(tiny_config(data_root, tmp_path / "run"), resume=True, quiet=True)
    assert b.epoch == 1 and b.global_step == a.global_step - 1
    batch_b = next(iter(b.train_loader(1)))
    assert torch.equal(batch_b["image"], batch["image"])  # same data order after resume
    loss_b = b.train_step(batch_b).loss
    assert loss_a == pytest.approx(loss_b, rel=1e-6, abs=1e-7)
    torch.testing.assert_close(a.model.volumes.features, b.model.volumes.features)
    torch.testing.assert_close(a.model.volumes.bank, b.model.volumes.bank)


def test_trainer_compiles_the_backbone_as_model_compile_says(data_root, tmp_path):
    # No step runs (the compile is lazy): the wiring, the checkpoint keys and the run identity only.
    on = Trainer(tiny_config(data_root, tmp_path / "on", **{"model.compile": "on"}), quiet=True)
    auto = Trainer(tiny_config(data_root, tmp_path / "auto"), quiet=True)
    assert on.compiled and is_compiled(on.model.backbone)
    assert not auto.compiled and not is_compiled(auto.model.backbone)  # auto on a CPU: eager
    assert on.identity() == auto.identity()  # same inputs, same run: a finished checkpoint is reused
    on.save()
    auto.resume(tmp_path / "on" / "last.pt")  # a compiled run's checkpoint resumes an eager one


def test_truncated_checkpoint_is_a_clear_error_and_the_previous_survives(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path / "run", **{"train.max_steps_per_epoch": 1})
    t = Trainer(cfg, quiet=True)
    t.fit(until_epoch=2)
    last, previous = tmp_path / "run" / "last.pt", tmp_path / "run" / "previous.pt"
    assert last.is_file() and previous.is_file()
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"last\.pt: unreadable checkpoint.*previous\.pt"):
        Trainer(cfg, resume=True, quiet=True)
    shutil.copy(previous, last)
    assert Trainer(cfg, resume=True, quiet=True).epoch == 1


def _ddp_worker(rank, world, data_root, out, batch, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", LOCAL_RANK=str(rank))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg = tiny_config(data_root, out, **{"model.freeze_batchnorm": "true"})
    t = Trainer(cfg, quiet=True)
    per = batch["image"].shape[0] // world
    part = {k: (v[rank * per : (rank + 1) * per] if torch.is_tensor(v) else v) for k, v in batch.items()}
    loss = t.train_step(part).loss
    if rank == 0:
        torch.save({"features": t.model.volumes.features, "bank": t.model.volumes.bank, "loss": loss}, result_path)
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path / "one", **{"model.freeze_batchnorm": "true"})
    single = Trainer(cfg, quiet=True)
    samples = [single.train_set[i] for i in range(4)]
    batch = collate(samples, (64, 64))
    loss = single.train_step(batch).loss
    result = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, data_root, tmp_path / "two", batch, result), nprocs=2, join=True)
    ddp = torch.load(result)
    torch.testing.assert_close(ddp["features"], single.model.volumes.features, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ddp["bank"], single.model.volumes.bank, atol=1e-5, rtol=1e-5)
    assert ddp["loss"] == pytest.approx(loss, rel=1e-4)


def run_script(*args):
    return subprocess.run([sys.executable, "scripts/train.py", *args], capture_output=True, text=True, check=False)


def test_train_script_without_data_says_how_to_get_it(tmp_path):
    run = run_script("configs/cube.yaml", f"data.root={tmp_path / 'nothing'}")
    assert run.returncode == 2
    assert "make_synthetic.py" in run.stderr and "prepare_pascal3d.py" in run.stderr


def test_train_script_names_bad_config_keys(tmp_path):
    run = run_script("configs/cube.yaml", "optim.lr=fast")
    assert run.returncode == 2 and "optim.lr: expected a number" in run.stderr
    run = run_script("configs/cube.yaml", "optim.learning_rate=1")
    assert run.returncode == 2 and "unknown key(s) ['learning_rate']" in run.stderr


def test_train_script_runs_and_resumes(data_root, tmp_path):
    common = [
        f"data.root={data_root}", "data.image_size=[64,64]", "data.num_workers=0", "model.feature_dim=16",
        "volume.num_gaussians=120", "optim.batch_size=8", f"train.out_dir={tmp_path}", "train.device=cpu",
    ]  # fmt: skip
    run = run_script("configs/synthetic-small.yaml", *common, "optim.epochs=1")
    assert run.returncode == 0, run.stderr
    assert "val accuracy" in run.stdout and (tmp_path / "last.pt").is_file()
    run = run_script("configs/synthetic-small.yaml", *common, "optim.epochs=2", "--resume")
    assert run.returncode == 0, run.stderr
    assert "done: 2 epochs" in run.stdout
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) >= 2


@pytest.mark.gpu
def test_resume_on_cuda_continues_from_the_checkpoint(data_root, tmp_path):
    # The checkpoint is mapped to the GPU on resume; its RNG states must still load.
    cfg = tiny_config(data_root, tmp_path / "run", **{"train.device": "cuda", "train.max_steps_per_epoch": 1})
    Trainer(cfg, quiet=True).fit(until_epoch=1)
    resumed = Trainer(cfg, resume=True, quiet=True)
    assert resumed.epoch == 1
    assert len(resumed.fit()) == 3


def test_epoch_batches_on_the_cpu_are_the_loaders(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, tmp_path / "run", **{"optim.batch_size": 2}), quiet=True)
    plain = list(trainer.train_loader(0))
    prefetched = list(trainer.epoch_batches(0))
    assert len(plain) == len(prefetched) > 1
    for a, b in zip(plain, prefetched, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


@pytest.mark.gpu
def test_prefetched_batches_equal_the_loaders_and_train_alike(data_root, tmp_path):
    cfg = tiny_config(
        data_root, tmp_path / "run", **{"train.device": "cuda", "model.compile": "off", "optim.batch_size": 2}
    )
    trainer = Trainer(cfg, quiet=True)
    plain = list(trainer.train_loader(0))
    prefetched = list(trainer.epoch_batches(0))
    assert len(plain) == len(prefetched) > 1
    for a, b in zip(plain, prefetched, strict=True):
        for key in ("image", "label", "bbox"):
            assert b[key].is_cuda and torch.equal(a[key].cuda(), b[key])
        assert b["mask"] is None or torch.equal(a["mask"].cuda(), b["mask"])
        assert not b["azimuth"].is_cuda  # pose fields stay on the host
    # A step on a prefetched batch equals a step on the host batch from the same state.
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    opt = trainer.optimizer.state_dict()
    first = trainer.train_step(plain[0]).loss
    trainer.model.load_state_dict(state)
    trainer.optimizer.load_state_dict(opt)
    trainer.global_step -= 1
    assert trainer.train_step(prefetched[0]).loss == pytest.approx(first, rel=1e-5)


def test_training_process_threads_leave_the_cores_to_loader_workers(monkeypatch, data_root, tmp_path):
    from novum3d.device import main_process_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert main_process_threads(None, cuda, 14) == 2
    assert main_process_threads(None, cuda, 20) == 1
    assert main_process_threads(3, cuda, 14) == 3  # the setting wins
    assert main_process_threads(None, cpu, 14) == torch.get_num_threads()  # the CPU computes itself
    assert main_process_threads(None, cuda, 0) == torch.get_num_threads()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks share the 16 cores
    assert main_process_threads(None, cuda, 6) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # set by the user or torchrun: left alone
    assert main_process_threads(None, cuda, 6) == torch.get_num_threads()
    before = torch.get_num_threads()
    try:
        Trainer(tiny_config(data_root, tmp_path / "run", **{"train.cpu_threads": 1}), quiet=True)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(Exception, match="cpu_threads"):
        tiny_config(data_root, tmp_path / "run", **{"train.cpu_threads": 0})


@pytest.mark.gpu
def test_cuda_flags_hold_inside_a_step_only(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path / "run", **{"train.device": "cuda", "model.compile": "off"})
    trainer = Trainer(cfg, quiet=True)
    before = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    seen = []
    original = trainer._train_step

    def spy(batch):
        seen.append((torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32))
        return original(batch)

    trainer._train_step = spy
    trainer.train_step(next(iter(trainer.train_loader(0))))
    assert seen == [(True, True)]
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32) == before
