"""The soft-target storage layouts (cslr/datasets/soft_targets.py) and the `softtargets` benchmark suite.

    /work/venv/bin/pytest tests/test_bench_softtargets.py -q
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cslr.datasets import soft_targets as st
from cslr.datasets.writer import load_manifest, write_shard
from cslr.trainer.kd import soft_target_kl, soft_targets_from_log_probs

from conftest import save_untrained

T = 3.0


def teacher_log_probs(frames: int, classes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(frames, classes, generator=g) * 4).log_softmax(-1)  # (T', V) peaked, like a trained teacher


def record(key: str, lp: torch.Tensor, topk: int, dtype: str) -> dict:
    """One key's sidecar members through the generator's own select -> pack path."""
    layout = st.SoftLayout.of(topk, lp.shape[-1], dtype)
    logp, idx = st.select_soft(lp, T, topk, dtype)
    return st.sample_members(key, layout, logp.numpy(), None if idx is None else idx.numpy())


def npy_dtype(members: dict) -> np.dtype:
    return np.load(io.BytesIO(members[st.SOFT_NPY]), allow_pickle=False).dtype


def test_dense_fp32_round_trips_exactly_through_a_shard(tmp_path):
    lps = [teacher_log_probs(n, 11, seed=n) for n in (5, 1, 9)]
    write_shard(tmp_path / "train-000000.tar", [record(f"k{i}", lp, 0, "float32") for i, lp in enumerate(lps)])
    back = st.read_sidecar(tmp_path / "train-000000.tar")
    assert [r[0] for r in back] == ["k0", "k1", "k2"]
    for lp, (_, logp, _, info) in zip(lps, back):
        ref = torch.log_softmax(lp / T, -1)  # the contract's targets, computed here independently
        assert logp.dtype == np.float32 and info["frames"] == lp.shape[0]
        assert torch.equal(torch.from_numpy(np.array(logp)), ref)  # bit for bit


def test_dense_stores_no_indices_and_decodes_to_arange():
    lp = teacher_log_probs(6, 40)
    members = record("k", lp, 0, "float16")
    assert npy_dtype(members).names == ("logp", "hyp")  # no id field on disk, the hypothesis beside the values
    assert list(members) == ["__key__", st.SOFT_NPY]  # one tar member per key
    assert len(members[st.SOFT_NPY]) < 6 * (40 * 2 + 1) + 256  # values + hypothesis ids + one npy header
    logp, idx = st.decode_soft(members)
    assert logp.dtype == torch.float32 and idx.dtype == torch.int64 and logp.shape == idx.shape == (6, 40)
    assert torch.equal(idx, torch.arange(40).expand(6, 40))
    torch.testing.assert_close(logp, torch.log_softmax(lp / T, -1), atol=4e-3, rtol=1e-3)  # fp16 rounding


@pytest.mark.parametrize("classes, expected", [(2, "uint8"), (256, "uint8"), (257, "uint16"), (65536, "uint16"),
                                               (65537, "int32")])
def test_index_dtype_is_the_smallest_that_holds_v(classes, expected):
    assert st.index_dtype(classes) == expected
    layout = st.SoftLayout.of(3, classes)
    top = np.array([[classes - 1, 0, classes // 2]])  # the largest id must survive the narrow type
    arr = layout.pack(np.zeros((1, 3), np.float32), top)
    assert arr.dtype["idx"].base == np.dtype(expected) and np.array_equal(arr["idx"], top)


def test_topk_ids_are_stored_narrow_and_decoded_as_the_teachers_labels():
    lp = teacher_log_probs(7, 300)  # V > 256: uint16
    members = record("k", lp, 5, "float16")
    assert npy_dtype(members)["idx"].base == np.uint16
    logp, idx = st.decode_soft(members)
    ref = torch.log_softmax(lp / T, -1).topk(5, -1)
    assert torch.equal(idx, ref.indices) and idx.dtype == torch.int64
    torch.testing.assert_close(logp, ref.values, atol=4e-3, rtol=1e-3)
    with pytest.raises(st.SoftTargetError, match="do not fit uint8"):
        st.SoftLayout(2, "float16", "uint8").pack(np.zeros((1, 2)), np.array([[0, 256]]))


def test_format_1_records_are_still_read():
    """A key written by the earlier format (soft_logp.npy float16 + soft_idx.npy int32 + soft.json)."""
    lp = torch.log_softmax(teacher_log_probs(4, 9) / T, -1).topk(3, -1)

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    members = {st.SOFT_LOGP: npy(lp.values.half().numpy()), st.SOFT_IDX: npy(lp.indices.int().numpy()),
               st.SOFT_JSON: json.dumps({"frames": 4, "hyp": "", "temperature": T, "topk": 3}).encode()}
    logp, idx = st.decode_soft(members)
    assert torch.equal(idx, lp.indices) and torch.equal(logp, lp.values.half().float())
    assert st.payload_bytes(members) == 4 * 3 * (2 + 4)


def test_a_pickled_or_malformed_record_is_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(st.SoftTargetError, match="unreadable"):
        st.decode_soft({st.SOFT_NPY: buf.getvalue()})
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 4), np.float64))  # not a record array
    with pytest.raises(st.SoftTargetError, match="record array"):
        st.decode_soft({st.SOFT_NPY: buf.getvalue()})


def test_kd_loss_from_dense_fp16_equals_dense_fp32_within_fp16_rounding():
    """The KD loss (unchanged) on fp16 targets read back from sidecars vs fp32 ones vs the online teacher."""
    b, frames, classes = 3, 12, 20
    lps = [teacher_log_probs(frames, classes, seed=i) for i in range(b)]
    student = torch.randn(b, 16, classes, generator=torch.Generator().manual_seed(1)).log_softmax(-1)
    s_len, t_len = torch.tensor([16, 13, 9]), torch.full((b,), frames)

    def loss_from(dtype):
        rows = [st.decode_soft(record(f"k{i}", lp, 0, dtype)) for i, lp in enumerate(lps)]
        return soft_target_kl(student, s_len, torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]),
                              t_len, T)

    online = soft_targets_from_log_probs(torch.stack(lps), t_len, T)
    ref = soft_target_kl(student, s_len, online["soft_logp"], online["soft_idx"], t_len, T)
    fp32, fp16 = loss_from("float32"), loss_from("float16")
    assert torch.equal(fp32, ref)  # fp32 sidecars change nothing
    # fp16 keeps 11 significant bits: |log p| * 2^-11 per value, i.e. relative changes of p of that order.
    assert abs(float(fp16 - fp32)) <= 2 ** -10 * float(fp32) + 1e-5 and float(fp32) > 0.1


# ---------------------------------------------------------------------------------------------- the suite
def test_writer_sizes_equal_the_bytes_of_the_real_writer(tmp_path):
    from cslr.bench import softtargets as bench

    v = bench.VARIANTS[2]
    frames = [3, 8, 5]
    got = bench.writer_sizes(frames, 300, v, videos_per_shard=2)
    written = [write_shard(tmp_path / f"s{i}.tar", [record(f"video{j:06d}", teacher_log_probs(frames[j], 300), v.topk,
                                                            v.dtype) for j in range(i, min(i + 2, 3))])
               for i in (0, 2)]
    assert got["disk_per_video"] * 3 == sum(w["bytes"] for w in written)
    assert got["payload_per_video"] * 3 == sum(frames) * (v.topk * (2 + 2) + 2) and got["index_dtype"] == "uint16"


def test_quick_run_reports_the_summary_and_sizes_equal_the_files(tiny_data, tmp_path, monkeypatch):
    from cslr.bench import softtargets as bench
    from cslr.bench.context import BenchContext

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "synthetic-tiny-seed0").symlink_to(tiny_data)  # small_corpus(quick) finds the session's corpus
    monkeypatch.setenv("CSLR_CACHE", str(cache))
    teacher = save_untrained(tiny_data, tmp_path)
    ctx = BenchContext(out=tmp_path / "out", work=tmp_path / "work", quick=True, repeats=1, teacher=str(teacher))
    res = bench.run(ctx)

    for key in ("topk_size_ratio", "topk_wer_delta", "topk_size_ratio_phoenix_vocab"):
        assert isinstance(res.summary[key], float), key
    assert res.summary["topk_size_ratio_phoenix_vocab"] > res.summary["topk_size_ratio"] > 1
    assert res.markdown.startswith("## softtargets") and "| top-8 fp16 |" in res.markdown
    assert res.plots == ["softtargets.png"] and (ctx.out / "softtargets.png").stat().st_size > 0
    videos = load_manifest(tiny_data)["splits"]["train"]["num_samples"]
    for slug, row in res.figures["variants"].items():
        soft_dir = ctx.work / "softtargets-quick" / slug
        files = sorted(soft_dir.glob("*.tar"))
        size = row["size"]
        assert size["videos"] == videos == row["generation"]["videos"]
        assert size["disk_bytes"] == sum(f.stat().st_size for f in files)  # equals the files on disk
        stored = 0
        for f in files:
            for _, logp, idx, info in st.read_sidecar(f):
                stored += logp.nbytes + (idx.nbytes if row["topk"] else 0)  # dense: ids rebuilt, not stored
                stored += info["frames"] * np.dtype(st.index_dtype(size["vocab_size"])).itemsize  # hypothesis ids
        assert size["payload_bytes"] == stored
        assert row["student"]["steps"] == bench.QUICK_STEPS and 0 <= row["student"]["dev_wer"]
    dense, half = (res.figures["variants"][v.slug]["size"] for v in bench.VARIANTS[:2])
    hyp_bytes = dense["frames"] * np.dtype(st.index_dtype(dense["vocab_size"])).itemsize  # the same in both
    assert dense["payload_bytes"] - hyp_bytes == 2 * (half["payload_bytes"] - hyp_bytes)  # fp32 values: twice fp16


def assert_same_shard(new: Path, old: Path) -> None:
    """The same tar members, headers and bytes, except that float arrays may differ in their last bits: the seeded
    inputs go through torch's log_softmax, whose vectorised CPU kernels round differently on another instruction set
    (the fixture was written on an Intel Xeon; an AMD EPYC differs in 24 of 10,240 bytes, by up to 3 fp32 ulp). Allowed:
    8 ulp in fp32 (5e-7 relative), 1 in fp16 (a rounding flip); a temperature of 2.99 instead of 3 moves both far more."""
    with tarfile.open(new) as a, tarfile.open(old) as b:
        ma, mb = a.getmembers(), b.getmembers()
        assert [m.name for m in ma] == [m.name for m in mb]
        for x, y in zip(ma, mb):
            assert (x.size, x.mode, x.mtime, x.uid, x.gid, x.uname, x.gname) == \
                (y.size, y.mode, y.mtime, y.uid, y.gid, y.uname, y.gname), x.name
            bx, by = a.extractfile(x).read(), b.extractfile(y).read()
            if bx == by:
                continue
            assert x.name.endswith(".npy"), f"{x.name}: bytes differ"
            ax, ay = np.load(io.BytesIO(bx), allow_pickle=False), np.load(io.BytesIO(by), allow_pickle=False)
            assert ax.dtype == ay.dtype and ax.shape == ay.shape, x.name
            assert bx[:len(bx) - ax.nbytes] == by[:len(by) - ay.nbytes], f"{x.name}: .npy header differs"
            for field in ax.dtype.names or (None,):  # a record array (log-probs beside the hypothesis) field by field
                fx, fy = (ax, ay) if field is None else (ax[field], ay[field])
                if fx.dtype.kind == "f":
                    np.testing.assert_array_max_ulp(fx, fy, maxulp=1 if fx.dtype == np.float16 else 8)
                else:
                    assert np.array_equal(fx, fy), f"{x.name}: {field} differs"


def test_sidecar_bytes_unchanged_since_the_layering_move(tmp_path):
    """tests/data/sidecar-cslr-soft2-before-layers.tar was written by the code before the layering move (03fb1ff:
    select_soft and soft_targets_from_log_probs were two functions) from the seeded inputs below. The one function
    now writes the same bytes, reads that file back to the same targets, and the online KD targets agree with it."""
    fixture = Path(__file__).parent / "data" / "sidecar-cslr-soft2-before-layers.tar"
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(2, 6, 9, generator=g) * 3, -1)
    lens, hyps = [6, 4], [[1, 3], [2]]
    members = []
    for topk, dtype in ((4, "float16"), (0, "float32")):
        layout = st.SoftLayout.of(topk, 9, dtype)
        logp, idx = st.select_soft(lp, 3.0, topk, dtype)
        for i in range(2):
            members.append(st.sample_members(f"k{topk}-{i}", layout, logp[i, :lens[i]].numpy(),
                                             None if idx is None else idx[i, :lens[i]].numpy(), hyps[i]))
    write_shard(tmp_path / "new.tar", members)
    assert_same_shard(tmp_path / "new.tar", fixture)
    records = {key: (logp, idx, info) for key, logp, idx, info in st.read_sidecar(fixture)}
    for topk in (4, 0):
        online = soft_targets_from_log_probs(lp, torch.tensor(lens), 3.0, topk=topk)
        for i in range(2):
            logp, idx, info = records[f"k{topk}-{i}"]
            assert info["hyp"] == hyps[i] and info["frames"] == lens[i]
            assert np.array_equal(idx, online["soft_idx"][i, :lens[i]].numpy())
            tol = 1e-3 if topk else 1e-6  # fp16 storage vs the fp32 online targets; fp32: last-bit differences (above)
            assert np.allclose(logp.astype(np.float32), online["soft_logp"][i, :lens[i]].numpy(), atol=tol, rtol=tol)
