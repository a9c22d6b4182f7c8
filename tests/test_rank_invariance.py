"""The same result at any world size (issue #16 section 2).

- `SyncBatchNormAnyDevice` (`--sync_bn` on CPU) over 2 gloo ranks equals `nn.BatchNorm3d` on the whole batch:
  output, input gradient, parameter gradients (summed over the ranks, as DDP's mean of the mean losses does),
  running statistics.
- One optimizer step of the teacher trainer with the global batch held: 2 ranks x 4 videos with --sync_bn equal
  1 rank x 8 videos (the update to 1e-5 of its size); without --sync_bn they do not (each rank's BatchNorm sees
  4 videos), which shows what the comparison can catch.
- The tiny teacher recipe, 1 rank x batch 8 against 2 ranks x batch 4: the same optimizer steps, and loss curves
  within a stated tolerance (the two runs see the data in another order: the loader splits shards over ranks).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import REPO, accelerate_cmd, check_ok, clean_env, free_port, run_cmd

STEP = str(REPO / "tests" / "rank_step.py")
TEACHER = str(REPO / "launch" / "teacher.py")


def _bn_rank(rank: int, port: int, out: str) -> None:
    from cslr.trainer.syncbn import SyncBatchNormAnyDevice

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    x = torch.randn(6, 4, 3, 5, 5) * 3 + 2  # an offset mean: E[x^2] - E[x]^2 must not lose the variance
    g = torch.randn_like(x)
    ref = torch.nn.BatchNorm3d(4, eps=1e-3, momentum=0.1)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5), ref.bias.uniform_(-0.5, 0.5)
    ours = SyncBatchNormAnyDevice(4, eps=1e-3, momentum=0.1)
    ours.load_state_dict(ref.state_dict())
    xr = x.clone().requires_grad_()
    yr = ref(xr)
    (yr * g).sum().backward()
    part = slice(rank * 3, rank * 3 + 3)
    xo = x[part].clone().requires_grad_()
    yo = ours(xo)
    (yo * g[part]).sum().backward()
    wg = torch.stack([ours.weight.grad, ours.bias.grad])
    dist.all_reduce(wg)
    if rank == 0:
        torch.save({"y": yo.detach(), "y_ref": yr[part].detach(), "dx": xo.grad, "dx_ref": xr.grad[part],
                    "wg": wg, "wg_ref": torch.stack([ref.weight.grad, ref.bias.grad]),
                    "stats": (ours.running_mean, ours.running_var, ours.num_batches_tracked),
                    "stats_ref": (ref.running_mean, ref.running_var, ref.num_batches_tracked)}, out)
    dist.destroy_process_group()


def test_sync_batchnorm_equals_batchnorm_on_the_whole_batch(tmp_path):
    out = str(tmp_path / "bn.pt")
    mp.start_processes(_bn_rank, args=(free_port(), out), nprocs=2, start_method="spawn")
    r = torch.load(out)
    torch.testing.assert_close(r["y"], r["y_ref"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r["dx"], r["dx_ref"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r["wg"], r["wg_ref"], rtol=1e-4, atol=1e-4)
    for a, b in zip(r["stats"], r["stats_ref"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _launch(tiny_data: Path, out: Path, ranks: int, *flags: str):
    dist_args = ["--multi_gpu", "--main_process_port", str(free_port())] if ranks > 1 else []
    return run_cmd(accelerate_cmd(*dist_args, "--num_processes", str(ranks), "--num_machines", "1",
                                  "--mixed_precision", "no", "--dynamo_backend", "no", *flags),
                   env=clean_env(ACCELERATE_USE_CPU="true"), timeout=600)


def _update_gap(a: dict, b: dict) -> float:
    """|update_a - update_b| / |update_a| over every weight and buffer (one global norm)."""
    num = den = 0.0
    for k, after in a["state"].items():
        if not after.is_floating_point():
            continue
        da = after.double() - a["before"][k].double()
        db = b["state"][k].double() - b["before"][k].double()
        num += float((da - db).pow(2).sum())
        den += float(da.pow(2).sum())
    return (num / den) ** 0.5


@pytest.mark.slow
def test_one_step_is_rank_invariant_with_sync_bn(tiny_data, tmp_path):
    runs = {"one": (1, "--sync_bn"), "two_sync": (2, "--sync_bn"), "two": (2,)}
    res = {}
    for name, (ranks, *flags) in runs.items():
        (tmp_path / name).mkdir()
        check_ok(_launch(tiny_data, tmp_path / name, ranks, STEP, str(tiny_data), str(tmp_path / name / "w.pt"),
                         *flags))
        res[name] = torch.load(tmp_path / name / "w.pt")
        assert res[name]["world_size"] == ranks
    for a, b in zip(res["one"]["before"].values(), res["two"]["before"].values()):
        assert torch.equal(a, b)  # the same starting point
    assert res["two_sync"]["grad_norm"] == pytest.approx(res["one"]["grad_norm"], rel=1e-5)
    assert _update_gap(res["one"], res["two_sync"]) < 1e-5
    assert _update_gap(res["one"], res["two"]) > 1e-2  # per-rank BatchNorm: another step


@pytest.mark.slow
def test_tiny_recipe_one_rank_and_two_ranks_agree(tiny_data, tmp_path):
    """Global batch 8 both ways. Tolerance: each epoch's mean train loss within 15 % (the data order differs),
    the same number of optimizer steps, both curves falling."""
    common = ["--data", str(tiny_data), "--arch", "teacher_tiny", "--image_size", "32", "--num_workers", "0",
              "--epochs", "3", "--learning_rate", "0.003", "--warmup_epochs", "0.5", "--report_to", "none",
              "--beam_width", "2", "--seed", "1"]
    res = {}
    for ranks, batch in ((1, 8), (2, 4)):
        out = tmp_path / f"r{ranks}"
        check_ok(_launch(tiny_data, out, ranks, TEACHER, *common, "--batch_size", str(batch),
                         "--output_dir", str(out)))
        res[ranks] = json.loads((out / "results.json").read_text())
        assert res[ranks]["world_size"] == ranks
        state = json.loads(sorted((out / "checkpoints").iterdir())[-1].joinpath("trainer_state.json").read_text())
        assert state["batch"]["global"] == 8
    assert res[1]["global_steps"] == res[2]["global_steps"]
    curves = {r: [h["train_loss"] for h in res[r]["history"]] for r in res}
    print("train loss per epoch, 1 rank:", curves[1], "2 ranks:", curves[2])
    for r in curves:
        assert curves[r][-1] < curves[r][0]
    for a, b in zip(curves[1], curves[2]):
        assert abs(a - b) <= 0.15 * a, (curves[1], curves[2])


@pytest.mark.slow
def test_sync_bn_recipe_end_to_end(tiny_data, tmp_path):
    """`--sync_bn` on 2 ranks: every BatchNorm converted (logged), training, evaluation and the test of the best
    model run, and best_model.pth holds plain BatchNorm keys that load into the model without the flag."""
    from cslr.models.checkpoint import model_from_checkpoint

    out = tmp_path / "sb"
    check_ok(_launch(tiny_data, out, 2, TEACHER, "--data", str(tiny_data), "--arch", "teacher_tiny",
                     "--image_size", "32", "--num_workers", "0", "--epochs", "1", "--batch_size", "4",
                     "--report_to", "none", "--beam_width", "2", "--output_dir", str(out), "--sync_bn"))
    log = (out / "training.log").read_text()
    model, _, _ = model_from_checkpoint(out / "best_model.pth")  # strict about anything but old aux heads
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert f"--sync_bn: {n_bn} BatchNorm layers synchronised over 2 ranks" in log
    assert json.loads((out / "results.json").read_text())["test_wer"] is not None
