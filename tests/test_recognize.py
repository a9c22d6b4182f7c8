"""launch/recognize.py: videos -> glosses with times, offline and streaming, PyTorch and ONNX Runtime, and the
train/serve skew check (a converted video scored by cslr.eval.evaluate = the raw video recognised).

Checkpoints are tiny untrained students with randomised norms and a sharpened classifier, so that their hypotheses
are several glosses long and any difference in the input shows. Run: `pytest tests/test_recognize.py -q`
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, randomise_norms

pytest.importorskip("av", reason='PyAV not installed: pip install -e ".[landmarks]"')

from cslr.eval.evaluate import decode_split, load_for_eval  # noqa: E402
from cslr.eval.wer import read_ctm  # noqa: E402
from cslr.recipes.recognize import ctc_align  # noqa: E402
from video_fixtures import REAL_VIDEO, write_video  # noqa: E402

sys.path.insert(0, str(REPO / "launch"))
import export as export_cli  # noqa: E402  (launch/export.py)
import prepare  # noqa: E402  (launch/prepare.py)
import recognize as recognize_cli  # noqa: E402  (launch/recognize.py)

GLOSSES = [f"G{i:02d}" for i in range(24)]


def moving_frames(n: int, size=(96, 128), seed: int = 0) -> list[np.ndarray]:
    """Scenes of flat grey 16 x 16 blocks blending into each other every 7 frames (a random model's argmax moves).
    Grey, flat and block-aligned: what JPEG keeps almost exactly (no chroma to subsample, DC only), so that the
    converter's JPEG round trip changes next to nothing and the skew test sees the transforms alone."""
    rng = np.random.default_rng(seed)
    scenes = [rng.integers(0, 256, (size[0] // 16, size[1] // 16, 1)).repeat(16, 0).repeat(16, 1).repeat(3, 2)
              for _ in range(6)]
    out = []
    for i in range(n):
        a, b, w = scenes[(i // 7) % 6], scenes[(i // 7 + 1) % 6], (i % 7) / 7
        out.append(((1 - w) * a + w * b).astype(np.uint8))
    return out


def save_student(path, data, modality: str = "rgb", vocab: list[str] = GLOSSES, image_size: int = 32, seed: int = 0,
                 arch: str = "student_tiny"):
    """An untrained student_tiny written as a run's best_model.pth, config pointing at `data`. Its norms are
    randomised, their running variances x 0.3 and the classifier sharpened (x20, no bias): outputs that move with
    the frames (several glosses) yet do not flip on the converter's JPEG noise."""
    from cslr.models.checkpoint import build_model, save_portable
    from cslr.trainer.config import ModelConfig, TrainConfig, plain_dict

    torch.manual_seed(seed)
    model, meta = build_model(ModelConfig(arch=arch, modality=modality, dropout=0.1), len(vocab) + 1)
    randomise_norms(model, seed)
    with torch.no_grad():
        for name, p in model.classifier.named_parameters():
            p.mul_(0.0 if name.endswith("bias") else 20.0)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_var.mul_(0.3)
    config = plain_dict(TrainConfig())
    config["data"].update(data=str(data), image_size=image_size, modalities=modality.split("+"))
    save_portable(path, model.state_dict(), {"config": config, "vocab": list(vocab), **meta, "epoch": 1,
                                             "dev_wer": 100.0, "protocol": "plain"})
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two raw videos (30 fps, resampled to 25 by both paths), converted with `prepare.py videos --fps 25`."""
    root = tmp_path_factory.mktemp("rec")
    videos = root / "videos"
    write_video(videos / "a.mp4", moving_frames(70, seed=1), fps=30)
    write_video(videos / "b.mp4", moving_frames(45, seed=2), fps=30)
    (root / "ann.csv").write_text("id,path,split,signer,glosses\n"
                                  f"t1,a.mp4,train,s1,{' '.join(GLOSSES[:12])}\n"
                                  f"t2,b.mp4,train,s1,{' '.join(GLOSSES[12:])}\n"
                                  "a,a.mp4,dev,s1,G00 G01\nb,b.mp4,dev,s1,G02\n")
    data = root / "data"
    assert prepare.main(["videos", "--annotations", str(root / "ann.csv"), "--videos", str(videos), "--out",
                         str(data), "--workers", "1", "--fps", "25", "--no-progress"]) == 0
    ckpt = save_student(root / "best_model.pth", data)
    return root, videos, data, ckpt


def run(capsys, *argv) -> tuple[int, str, str]:
    code = recognize_cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ctc_align_matches_the_best_path():
    lp = torch.full((7, 4), -9.0)
    for t, c in enumerate([0, 1, 1, 0, 2, 2, 2]):  # frames of 1, then 2 after a blank
        lp[t, c] = -0.01
    assert ctc_align(lp.numpy(), [1, 2]) == [(1, 2), (4, 6)]
    lp = torch.full((5, 3), -9.0)
    for t, c in enumerate([1, 1, 0, 1, 0]):
        lp[t, c] = -0.01
    assert ctc_align(lp.numpy(), [1, 1]) == [(0, 1), (3, 3)]  # a repeated label needs the blank between
    assert ctc_align(lp.numpy(), []) == []


def test_skew_transform_is_the_pipelines(corpus):
    """The frames of a converted video as the evaluation loader yields them = the recognizer's transform of the raw
    video's frames after the converter's JPEG round trip, bit for bit: JPEG is the only difference left."""
    from cslr.datasets.collate import decode_jpegs
    from cslr.datasets.convert import DEFAULT_JPEG_QUALITY, encode_jpeg
    from cslr.datasets.pipeline import build_loader
    from cslr.recipes.recognize import Preprocess, load_model, open_source

    root, videos, data, ckpt = corpus
    model, vocab, ck, data_cfg, manifest = load_for_eval(ckpt, "", batch_size=1, num_workers=0, splits=("dev",))
    batches = {b["keys"][0]: b for b in build_loader(data_cfg, "dev", vocab, train=False)}
    dep = load_model(ckpt, threads=1)
    for key in ("a", "b"):
        _, _, frames = open_source(str(videos / f"{key}.mp4"), dep.fps)
        jpeg = [encode_jpeg(f, None, DEFAULT_JPEG_QUALITY) for f in frames]
        rgb, pose = Preprocess(dep)([t.numpy() for t in decode_jpegs(jpeg)])
        assert pose is None and torch.equal(rgb, batches[key]["rgb"][0])


def test_skew_converted_and_evaluated_equals_recognised(corpus, tmp_path, capsys):
    root, videos, data, ckpt = corpus
    model, vocab, ck, data_cfg, manifest = load_for_eval(ckpt, "", batch_size=1, num_workers=0, splits=("dev",))
    from cslr.trainer.runtime import make_accelerator

    hyps, _ = decode_split(make_accelerator(cpu=True), model, vocab, data_cfg, "dev", "plain", beam=1)
    assert len(hyps["a"]) >= 2 and len(set(hyps["a"] + hyps["b"])) >= 2, hyps  # a non-trivial hypothesis
    out_json = tmp_path / "r.json"
    code, out, err = run(capsys, "--checkpoint", ckpt, videos / "a.mp4", videos / "b.mp4", "--json", out_json,
                         "--threads", "1")
    assert code == 0, err
    got = {v["video"]: v["glosses"] for v in json.loads(out_json.read_text())["videos"]}
    assert got[str(videos / "a.mp4")] == hyps["a"] and got[str(videos / "b.mp4")] == hyps["b"]
    assert f"{videos / 'a.mp4'}: {' '.join(hyps['a'])}" in out
    assert "25 fps (model)" in err  # the manifest's rate, not the video's 30


def test_offline_outputs_ctm_json_and_stream_equals_offline(corpus, tmp_path, capsys):
    root, videos, data, ckpt = corpus
    video = videos / "a.mp4"
    code, out, err = run(capsys, "--checkpoint", ckpt, video, "--ctm", tmp_path / "o.ctm", "--json",
                         tmp_path / "o.json", "--beam", "4")
    assert code == 0, err
    rec = json.loads((tmp_path / "o.json").read_text())["videos"][0]
    assert rec["source_frames"] == 70 and rec["frames"] == math.ceil(70 * 25 / 30) and rec["fps"] == 25
    assert set(rec["seconds"]) == {"decode", "resize", "landmarks", "model", "ctc_decode"} and rec["end_to_end_fps"] > 0
    assert rec["seconds"]["landmarks"] == 0.0  # an RGB model: no landmarks
    times = [(t["start"], t["duration"]) for t in rec["times"]]
    assert len(times) == len(rec["glosses"]) >= 2
    assert all(d > 0 for _, d in times) and all(a[0] + a[1] <= b[0] + 1e-6 for a, b in zip(times, times[1:]))
    assert times[-1][0] + times[-1][1] <= rec["frames"] / 25 + 1e-6
    assert all(round(s * 25) % 4 == 0 for s, _ in times)  # output frames of 4 input frames
    assert read_ctm(tmp_path / "o.ctm") == {"a": rec["glosses"]}

    # One window over the whole video: exactly the offline glosses and times.
    code, out, err = run(capsys, "--checkpoint", ckpt, video, "--stream", "--window", "64", "--hop", "16",
                         "--json", tmp_path / "s.json", "--beam", "4")
    assert code == 0, err
    srec = json.loads((tmp_path / "s.json").read_text())["videos"][0]
    assert srec["glosses"] == rec["glosses"] and srec["times"] == rec["times"]

    # Short windows: glosses settle as the windows pass, each with a modelled latency, then the final line.
    code, out, err = run(capsys, "--checkpoint", ckpt, video, "--stream", "--window", "24", "--hop", "8",
                         "--json", tmp_path / "w.json")
    assert code == 0, err
    wrec = json.loads((tmp_path / "w.json").read_text())["videos"][0]
    events = wrec["stream"]["glosses"]
    assert [e["gloss"] for e in events] == wrec["glosses"] and len(events) >= 2
    assert all(e["latency_s"] > 0 for e in events) and len({e["window"][0] for e in events}) >= 2
    lines = out.strip().splitlines()
    assert lines[-1] == f"{video}: {' '.join(wrec['glosses'])}" and lines[0].startswith("[")


def test_url_source_gives_the_files_glosses(corpus, tmp_path, capsys):
    """An HTTP URL (a local server here) goes through PyAV's network input: the same glosses as the file.

    The served copy has its index at the front (`movflags=faststart`, as web video is published): Python's test
    server answers no range requests, so FFmpeg cannot fetch an index stored at the end."""
    import functools
    import http.server
    import threading

    root, videos, data, ckpt = corpus
    served = tmp_path / "served"
    write_video(served / "a.mp4", moving_frames(70, seed=1), fps=30, options={"movflags": "faststart"})
    raw = (served / "a.mp4").read_bytes()
    assert raw.index(b"moov") < raw.index(b"mdat")  # the index first
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/a.mp4"
        code, out, err = run(capsys, "--checkpoint", ckpt, url, "--json", tmp_path / "u.json", "--beam", "4")
        assert code == 0, err
        code, _, err = run(capsys, "--checkpoint", ckpt, served / "a.mp4", "--json", tmp_path / "f.json", "--beam", "4")
        assert code == 0, err
        by_url = json.loads((tmp_path / "u.json").read_text())["videos"][0]
        by_file = json.loads((tmp_path / "f.json").read_text())["videos"][0]
        assert by_url["glosses"] == by_file["glosses"] and by_url["times"] == by_file["times"]
        assert by_url["frames"] == by_file["frames"] and out.strip().splitlines()[-1].startswith(url)
        code, _, err = run(capsys, "--checkpoint", ckpt, url.replace("a.mp4", "missing.mp4"))
        assert code == 2 and "missing.mp4" in err
    finally:
        server.shutdown()


def test_onnx_fp32_and_int8_recognise(corpus, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    root, videos, data, ckpt = corpus
    onnx = tmp_path / "s.onnx"
    assert export_cli.main(["--checkpoint", str(ckpt), "--out", str(onnx), "--check_frames", "0"]) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "--checkpoint", ckpt, videos / "a.mp4")
    ref = out.strip().splitlines()[-1]
    code, out, err = run(capsys, "--checkpoint", onnx, videos / "a.mp4", "--threads", "1")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == ref and "onnxruntime" in err and "25 fps (model)" in err
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8 = tmp_path / "s_int8.onnx"
    quantize_dynamic(str(onnx), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm", "LSTM"])
    code, out, err = run(capsys, "--checkpoint", int8, videos / "a.mp4")
    assert code == 0 and out.strip().startswith(f"{videos / 'a.mp4'}: G"), err


def test_bad_inputs_exit_2_naming_the_file(corpus, tmp_path, capsys):
    root, videos, data, ckpt = corpus
    raw = (videos / "a.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.mp4").write_text("not a video\n")
    import av

    with av.open(str(tmp_path / "empty.mp4"), "w") as c:  # a video stream without a frame
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    for name in ("cut.mp4", "text.mp4", "empty.mp4", "missing.mp4"):
        code, out, err = run(capsys, "--checkpoint", ckpt, tmp_path / name)
        assert code == 2 and str(tmp_path / name) in err and "Traceback" not in err, (name, err)
    # one bad video among good ones: the others are still recognised, the status says 2
    code, out, err = run(capsys, "--checkpoint", ckpt, tmp_path / "text.mp4", videos / "b.mp4")
    assert code == 2 and f"{videos / 'b.mp4'}: G" in out

    # models: another vocabulary, another kind of file, an ONNX graph with other inputs
    other = save_student(tmp_path / "other.pth", data, vocab=GLOSSES[:10])
    code, out, err = run(capsys, "--checkpoint", ckpt, "--vocab", other, videos / "a.mp4")
    assert code == 2 and "another vocabulary" in err and str(ckpt) in err
    ck = torch.load(ckpt, weights_only=True)
    ck["vocab"] = GLOSSES[:10]
    torch.save(ck, tmp_path / "mixed.pth")
    code, out, err = run(capsys, "--checkpoint", tmp_path / "mixed.pth", videos / "a.mp4")
    assert code == 2 and "mixed.pth" in err and "do not belong together" in err
    torch.save({"step": 3, "optimizer": {}}, tmp_path / "state.pth")
    code, out, err = run(capsys, "--checkpoint", tmp_path / "state.pth", videos / "a.mp4")
    assert code == 2 and "state.pth" in err and "not a cslr model checkpoint" in err
    pytest.importorskip("onnxruntime")
    wrong = tmp_path / "wrong.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(wrong), input_names=["x"],
                      output_names=["y"], dynamo=False)
    code, out, err = run(capsys, "--checkpoint", wrong, videos / "a.mp4")
    assert code == 2 and "wrong.onnx" in err and "not a cslr graph" in err
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    code, out, err = run(capsys, "--checkpoint", tmp_path / "junk.onnx", videos / "a.mp4")
    assert code == 2 and "junk.onnx" in err


def test_pose_model_without_mediapipe_exits_2(corpus, tmp_path):
    from conftest import clean_env, run_cmd

    root, videos, data, ckpt = corpus
    pose_ckpt = save_student(tmp_path / "pose.pth", data, modality="rgb+pose")
    fake = tmp_path / "fake" / "mediapipe"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('mediapipe hidden by the test')\n")
    proc = run_cmd([sys.executable, str(REPO / "launch" / "recognize.py"), "--checkpoint", str(pose_ckpt),
                    str(videos / "a.mp4")], env=clean_env(PYTHONPATH=str(fake.parent)), timeout=300)
    assert proc.returncode == 2 and "pose.pth" in proc.stderr and "MediaPipe" in proc.stderr, proc.stderr


@pytest.mark.skipif(not REAL_VIDEO.is_file(), reason="../shared/reference/real is not beside this clone")
@pytest.mark.parametrize("modality", ["rgb", "rgb+pose"])
def test_real_signing_video_end_to_end(corpus, modality, tmp_path, capsys):
    if modality == "rgb+pose":
        pytest.importorskip("mediapipe")
    root, videos, data, ckpt = corpus
    model = save_student(tmp_path / "m.pth", data, modality=modality, image_size=64)
    extra = ["--pose_stride", "2"] if modality == "rgb+pose" else []
    code, out, err = run(capsys, "--checkpoint", model, REAL_VIDEO, "--ctm", tmp_path / "r.ctm", "--json",
                         tmp_path / "r.json", "--threads", "1", *extra)
    assert code == 0, err
    rec = json.loads((tmp_path / "r.json").read_text())["videos"][0]
    assert rec["source_frames"] == 58 and rec["frames"] == math.ceil(58 * 25 / 29.916666) and rec["glosses"]
    assert all(v >= 0 for v in rec["seconds"].values()) and rec["end_to_end_fps"] > 0
    assert (rec["seconds"]["landmarks"] > 0) == (modality == "rgb+pose")
    assert sum(rec["seconds"].values()) <= rec["wall_s"] + 1e-3
    ctm = [ln.split() for ln in (tmp_path / "r.ctm").read_text().splitlines()]
    assert [c[4] for c in ctm] == rec["glosses"] and all(c[0] == "signing_540x720" and c[1] == "1" for c in ctm)
    starts, durs = [float(c[2]) for c in ctm], [float(c[3]) for c in ctm]
    assert starts == sorted(starts) and min(durs) > 0 and starts[-1] + durs[-1] <= rec["frames"] / 25 + 1e-3


def test_pose_stride_keyframes_and_interpolation():
    """--pose_stride K: landmarks on frames 0, K, 2K, ... and the last; linear between; NaN where an end is NaN.
    The same interpolation serves the recognizer and `evaluate.py --pose_stride` (its WER cost)."""
    from cslr.datasets.augment import interpolate_keyframes, pose_keyframes, stride_pose

    assert pose_keyframes(10, 3) == [0, 3, 6, 9] and pose_keyframes(9, 3) == [0, 3, 6, 8]
    assert pose_keyframes(5, 1) == [0, 1, 2, 3, 4] and pose_keyframes(1, 4) == [0]
    with pytest.raises(ValueError, match="stride"):
        pose_keyframes(5, 0)
    v = np.array([[0.0, 1.0], [3.0, np.nan], [9.0, 2.0]], dtype=np.float32)
    got = interpolate_keyframes([0, 3, 5], v, 6)
    np.testing.assert_allclose(got[:, 0], [0, 1, 2, 3, 6, 9])
    assert np.isnan(got[1:5, 1]).all() and got[0, 1] == 1.0 and got[5, 1] == 2.0
    # a batch: each video's own length; keyframes kept, padding untouched, stride 1 is the identity
    rng = np.random.default_rng(0)
    pose = torch.from_numpy(rng.random((2, 7, 543, 3), dtype=np.float32))
    lengths = torch.tensor([7, 4])
    out = stride_pose(pose, lengths, 2)
    for i, n in enumerate(lengths.tolist()):
        keys = pose_keyframes(n, 2)
        assert torch.equal(out[i, keys], pose[i, keys])
        torch.testing.assert_close(out[i, 1], (pose[i, 0] + pose[i, 2]) / 2)
    assert torch.equal(out[1, 4:], pose[1, 4:]) and not torch.equal(out[0, 1], pose[0, 1])
    assert stride_pose(pose, lengths, 1) is pose


def test_evaluate_pose_stride_needs_a_pose_model(corpus, tmp_path, capsys):
    import importlib.util

    _, _, data, ckpt = corpus
    spec = importlib.util.spec_from_file_location("launch_evaluate", REPO / "launch" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--checkpoint", str(ckpt), "--data", str(data), "--pose_stride", "2",
                     "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "needs a model that takes pose" in err


def test_evaluate_stream_scores_streaming_beside_offline(corpus, tmp_path, capsys):
    """evaluate.py --stream: a window longer than every video gives exactly the offline hypotheses (cost 0); the
    offline side equals evaluate.py's own batched scoring; a short window runs the streamer over prepared data."""
    import importlib.util

    _, _, data, ckpt = corpus
    spec = importlib.util.spec_from_file_location("launch_evaluate", REPO / "launch" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = ["--checkpoint", str(ckpt), "--data", str(data), "--split", "dev", "--beam", "1", "--num_workers", "0"]
    assert mod.main(base + ["--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "dev_wer.json").read_text())
    assert mod.main(base + ["--stream", "--window", "128", "--hop", "8", "--out", str(tmp_path / "long")]) == 0
    long = json.loads((tmp_path / "long" / "dev_stream_wer.json").read_text())
    assert long["videos"] == 2 and long["identical_hypotheses"] == 2 and long["wer_cost_points"] == 0
    assert long["offline"]["wer"] == pytest.approx(plain["wer"]) and long["stream"] == long["offline"]
    assert mod.main(base + ["--stream", "--window", "16", "--hop", "8", "--out", str(tmp_path / "short")]) == 0
    short = json.loads((tmp_path / "short" / "dev_stream_wer.json").read_text())
    assert (short["window"], short["hop"]) == (16, 8) and short["offline"] == long["offline"]
    assert "streaming" in capsys.readouterr().out
    pose_only = save_student(tmp_path / "pose_only.pth", data, modality="pose", arch="teacher_tiny")
    assert mod.main(["--checkpoint", str(pose_only), "--data", str(data), "--split", "dev", "--stream",
                     "--out", str(tmp_path / "p")]) == 2
    assert "--stream measures models that take rgb" in capsys.readouterr().err
