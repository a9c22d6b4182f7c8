"""Glosses out of a video: PyAV decoding -> the training pipeline's evaluation transform -> MediaPipe landmarks (only
for a model that takes pose) -> the model (PyTorch or ONNX Runtime) -> CTC decoding -> glosses with their times.

    python launch/recognize.py --checkpoint runs/student/best_model.pth clip.mp4 [more.webm ...]
    python launch/recognize.py --checkpoint student.onnx clip.mp4 --ctm out.ctm --json out.json --threads 2
    python launch/recognize.py --checkpoint best_model.pth clip.mp4 --stream [--window 32 --hop 8]
    python launch/recognize.py --checkpoint best_model.pth clip.mp4 --beam 10 --lm glosses.arpa  # LM fusion

Input: a video file or a URL PyAV opens. Frames are resampled to the model's frame rate (the manifest "fps" of
its training data, stored in an exported .onnx; 25, PHOENIX's, when unknown; --fps overrides) and go through the
evaluation transform of `cslr.datasets.pipeline` with `cslr.datasets.augment`'s own functions (the eval
`draw_params`: centre square of the mean `crop_scale` area; `crop_box`; `crop_resize_hwc`: antialiased resize
to `image_size`), on the decoded frame at its own size. The converters store JPEGs (q90, optionally resized to
--frame-size); the recognizer skips that lossy round trip (tests/test_recognize.py checks that a converted video
scored by cslr.eval.evaluate and the raw video recognised here give the same hypothesis). Landmarks come from
`cslr.datasets.landmarks` on the full frame, rounded to float16 as shards store them, then mapped into the crop by
`augment.transform_pose`; `--pose_stride K` extracts them every K frames of a chunk (and on its last frame) and
interpolates linearly between.

Output: one line per video on stdout (`VIDEO: GLOSS GLOSS ...`), optionally a CTM (`--ctm`: `VIDEO 1 START DUR
GLOSS`, start and duration in seconds from the CTC alignment: the Viterbi path of the hypothesis through the
log-probabilities, whose output frames each cover 4 input frames) and JSON (`--json`: glosses, times, seconds per
stage -- decode, resize, landmarks, model, ctc_decode -- and `end_to_end_fps` = the video's frames / wall time from
opening it to its last gloss). Exit status 2, with a message naming the file, for an unreadable video, a checkpoint
of another kind or vocabulary, an ONNX file with other inputs, or a pose model without MediaPipe.

Streaming (`--stream`): windows of W frames every H frames (at the model's rate; multiples of 4), each run as a
whole clip. Window k = [kH, kH + W) settles the glosses whose CTC spike lies in its zone [kH + (W - H) / 2,
(k + 1)H + (W - H) / 2) (the first zone starts at 0, the last one, of a final window on the video's last W frames,
ends at the end), i.e. the middle of each window, where both sides have context. Settled glosses are printed as
they come; a window covering the whole video gives exactly the offline result. Latency is modelled as if the
video arrived live: frame f exists at (f + 1) / fps, each chunk of gcd(W, H) frames is decoded and preprocessed
once it has arrived and the previous work is done, a gloss is printed when its window's model and decoding are done; its
latency is that time minus the arrival of its last frame. Defaults W = 32, H = 8 (1.28 s and 0.32 s at 25 fps), from
a measurement on the real signing video (student_small, 112 crop, 1 thread; max / mean latency): (24, 8) 0.92 / 0.41 s,
(32, 8) 1.30 / 0.57 s, (40, 16) 1.62 / 0.98 s, (48, 16) 2.0 / 1.2 s: the widest window within 1.5 s. A gloss waits
at most (W + H) / 2 frames (W in the first window) plus one window's compute; the model runs W / H = 4 times per
frame.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from cslr.datasets import augment
from cslr.datasets.landmarks import Holistic, LandmarkError, holistic_module
from cslr.datasets.video import VideoError, open_frames, upright_rgb
from cslr.datasets.vocab import Vocabulary
from cslr.eval.decode import beam_search, ctc_align, greedy_decode
from cslr.eval.lm import add_lm_args, lm_from_args
from cslr.io import atomic_write_bytes, atomic_write_json
from cslr.models.checkpoint import model_from_checkpoint
from cslr.models.export import LogProbs, checkpoint_metadata, onnx_session, run_onnx, session_metadata
from cslr.trainer.runtime import set_cpu_threads

DEFAULT_FPS = 25.0  # PHOENIX's, when neither the model nor --fps says
OUTPUT_STRIDE = 4  # input frames per output frame: every cslr model gives T' = ceil(T / 4)
CHUNK = 32  # frames decoded and preprocessed together offline
WINDOW, HOP = 32, 8
STAGES = ("decode", "resize", "landmarks", "model", "ctc_decode")


class RecognizeError(ValueError):
    """Input the recognizer refuses; the message names the file and the problem."""


# ------------------------------------------------------------------------------------------------ the model


@dataclass
class Deployed:
    """A model ready to run on one clip, and the facts of its inputs (`checkpoint_metadata`)."""

    path: Path
    runtime: str  # "pytorch" or "onnxruntime"
    meta: dict
    vocab: Vocabulary
    run: Callable[[torch.Tensor, torch.Tensor | None], np.ndarray]  # rgb (1, T, 3, S, S), pose -> (T', V)
    fps_source: str = "model"

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self.meta["streams"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])


def _vocab_file(path: str) -> Vocabulary:
    """A vocabulary from a vocab.txt, or from a best_model.pth's "vocab"."""
    return model_from_checkpoint(path)[1] if path.endswith((".pth", ".pt")) else Vocabulary.load(path)


def _torch_runner(model: torch.nn.Module) -> Callable:
    wrapper = LogProbs(model).eval()

    def run(rgb, pose):
        inputs = {"rgb": rgb, "pose": pose}
        with torch.inference_mode():
            return wrapper(*(inputs[n] for n in wrapper.inputs))[0].float().numpy()  # (T', V)
    return run


def _load_pytorch(path: Path) -> tuple[Callable, dict]:
    try:
        model, vocab, ck = model_from_checkpoint(path)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        raise RecognizeError(f"{path}: not a cslr model checkpoint (best_model.pth) ({e})") from e
    return _pytorch_parts(path, model, vocab, ck)


def _pytorch_parts(path: Path, model: torch.nn.Module, vocab: Vocabulary, ck: dict) -> tuple[Callable, dict]:
    if ck["num_classes"] != len(vocab):
        raise RecognizeError(f"{path}: its vocabulary has {len(vocab)} classes but the model {ck['num_classes']}: "
                             "the checkpoint's vocabulary and weights do not belong together")
    return _torch_runner(model), checkpoint_metadata(ck, LogProbs(model).inputs)


def _load_onnx(path: Path, threads: int, vocab: Vocabulary | None) -> tuple[Callable, dict]:
    try:
        session = onnx_session(path, threads)
    except Exception as e:  # noqa: BLE001  onnxruntime raises its own exception types for a bad file
        raise RecognizeError(f"{path}: not a loadable ONNX model ({type(e).__name__}: {str(e)[:200]})") from e
    inputs = {i.name: len(i.shape) for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if not inputs or set(inputs) - {"rgb", "pose"} or inputs.get("rgb", 5) != 5 or inputs.get("pose", 4) != 4 \
            or "log_probs" not in outputs or len(outputs["log_probs"]) != 3:
        raise RecognizeError(f"{path}: not a cslr graph: inputs {inputs} (name: rank), outputs {list(outputs)}; "
                             "expected rgb (B, T, 3, H, W) and/or pose (B, T, 543, 3) -> log_probs (B, T', V), "
                             "as launch/export.py writes")
    names = tuple(n for n in ("rgb", "pose") if n in inputs)
    meta = session_metadata(session)
    if meta is None:
        if vocab is None:
            raise RecognizeError(f"{path}: the graph carries no cslr metadata (vocabulary, frame rate, crop): "
                                 "export it with launch/export.py, or pass --vocab and --image_size")
        meta = {"vocab": list(vocab.glosses), "num_classes": len(vocab), "fps": None, "crop_scale": [0.7, 1.0],
                "image_size": 0, "protocol": "phoenix2014", "model_name": "?"}
    meta["streams"] = list(names)
    num_classes = outputs["log_probs"][2]
    if isinstance(num_classes, int) and num_classes != len(meta["vocab"]) + 1:
        raise RecognizeError(f"{path}: the graph gives {num_classes} classes, its vocabulary has "
                             f"{len(meta['vocab']) + 1} (with the blank)")

    def run(rgb, pose):
        given = {"rgb": rgb, "pose": pose}
        return run_onnx(session, *(given[n] for n in names))[0]  # (T', V)
    return run, meta


def load_model(path: str | Path, threads: int = 0, vocab_path: str = "", fps: float = 0.0,
               image_size: int = 0) -> Deployed:
    """A `best_model.pth` (PyTorch) or an exported `.onnx` (ONNX Runtime) ready to run. Raises RecognizeError.

    Args:
        path: the model file.
        threads: CPU threads for the model (0: this process's share, `cslr.trainer.runtime.set_cpu_threads`).
        vocab_path: a vocab.txt or .pth whose vocabulary must equal the model's (needed for an .onnx without
            metadata); a different one is an error.
        fps, image_size: override the model's frame rate and crop size (0: the model's).
    """
    path = Path(path)
    if not path.is_file():
        raise RecognizeError(f"{path}: model file not found")
    if threads:
        torch.set_num_threads(threads)
    threads = threads or set_cpu_threads()
    try:
        vocab = _vocab_file(vocab_path) if vocab_path else None
    except (FileNotFoundError, ValueError) as e:
        raise RecognizeError(f"--vocab {vocab_path}: {e}") from e
    run, meta = _load_onnx(path, threads, vocab) if path.suffix == ".onnx" else _load_pytorch(path)
    return _deployed(path, run, meta, vocab, vocab_path, fps, image_size)


def deploy_loaded(path: str | Path, model: torch.nn.Module, vocab: Vocabulary, ck: dict) -> Deployed:
    """A checkpoint's model already in memory (`model_from_checkpoint`, `load_for_eval`) as a Deployed, as
    `load_model(path)` would give it without reading the file again. Raises RecognizeError."""
    set_cpu_threads()
    path = Path(path)
    return _deployed(path, *_pytorch_parts(path, model, vocab, ck))


def _deployed(path: Path, run: Callable, meta: dict, vocab: Vocabulary | None = None, vocab_path: str = "",
              fps: float = 0.0, image_size: int = 0) -> Deployed:
    if vocab is not None and list(vocab.glosses) != list(meta["vocab"]):
        raise RecognizeError(f"{path}: its vocabulary ({len(meta['vocab'])} glosses) is not the one of --vocab "
                             f"{vocab_path} ({len(vocab.glosses)} glosses): a model of another vocabulary")
    meta["image_size"] = int(image_size or meta["image_size"])
    if not meta["image_size"]:
        raise RecognizeError(f"{path}: no crop size known: pass --image_size")
    source = "model"
    if fps:
        meta["fps"], source = float(fps), "--fps"
    elif not meta.get("fps"):
        meta["fps"], source = DEFAULT_FPS, "default (PHOENIX)"
    return Deployed(path, "onnxruntime" if path.suffix == ".onnx" else "pytorch", meta, Vocabulary(meta["vocab"]),
                    run, source)


def check_pose_support(dep: Deployed) -> None:
    """A model that takes pose needs MediaPipe: say so before any video is opened."""
    if "pose" not in dep.streams:
        return
    try:
        holistic_module()
    except LandmarkError as e:
        raise RecognizeError(f"{dep.path}: this model takes pose landmarks ({'+'.join(dep.streams)}), which need "
                             f"MediaPipe: {e}") from e


# ------------------------------------------------------------------------------------------------ frames


def _is_url(source: str) -> bool:  # a stream or device: no frame count up front
    return "://" in source or source.startswith("/dev/")


def _iter_url(url: str, fps: float) -> Iterator[np.ndarray]:
    """Frames of a stream or device PyAV opens (no frame count known up front), resampled to `fps` by the rule of
    `cslr.datasets.video.iter_frames` (output frame k is source frame floor(k * src_fps / fps))."""
    import av

    try:
        container = av.open(url, timeout=10)
        stream = container.streams.video[0]
    except (av.FFmpegError, OSError, IndexError) as e:
        raise VideoError(f"{url}: cannot open a video stream ({e})") from e
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    step = float(rate) / fps if rate else 1.0
    k = 0
    try:
        for i, frame in enumerate(container.decode(stream)):
            rgb = None
            while math.floor(k * step + 1e-9) <= i:
                rgb = upright_rgb(frame) if rgb is None else rgb
                k += 1
                yield rgb
    except av.FFmpegError as e:
        raise VideoError(f"{url}: decoding failed after {k} frames ({e})") from e
    finally:
        container.close()
    if k == 0:
        raise VideoError(f"{url}: no frame could be decoded")


def open_source(source: str, fps: float) -> tuple[int | None, float | None, Iterator[np.ndarray]]:
    """(source frames or None, source fps or None, frames at `fps`). Raises VideoError naming the file."""
    if _is_url(source):
        return None, None, _iter_url(source, fps)
    info, frames = open_frames(source, fps=fps)  # raises for a missing, non-video, stream-less or zero-frame file
    return info.frames, info.fps, frames


def timed_chunks(frames: Iterator[np.ndarray], size: int) -> Iterator[tuple[list[np.ndarray], float]]:
    """Groups of `size` frames (the last may be shorter) and the seconds spent decoding them."""
    while True:
        t0 = time.perf_counter()
        chunk = [f for _, f in zip(range(size), frames)]
        if not chunk:
            return
        yield chunk, time.perf_counter() - t0


class Preprocess:
    """The evaluation transform of one video's frames, chunk by chunk, with one Holistic tracker for the video."""

    def __init__(self, dep: Deployed, pose_stride: int = 1):
        cs = dep.meta.get("crop_scale") or (0.7, 1.0)
        self.params = augment.draw_params(None, 1, train=False, crop_scale=tuple(cs))  # eval: no randomness drawn
        self.size, self.pose_stride = int(dep.meta["image_size"]), pose_stride
        self.holistic = Holistic() if "pose" in dep.streams else None
        self.box = self.hw = None
        self.seconds = dict.fromkeys(("resize", "landmarks"), 0.0)

    def __call__(self, chunk: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """U x uint8 (H, W, 3) -> rgb uint8 (U, 3, S, S), pose float32 (U, 543, 3) in crop coordinates or None."""
        if self.box is None:
            self.hw = chunk[0].shape[:2]
            self.box = augment.crop_box(*self.hw, self.params)
        t0 = time.perf_counter()
        rgb = augment.crop_resize_hwc([torch.from_numpy(f) for f in chunk], self.box, self.size).contiguous()
        t1 = time.perf_counter()
        self.seconds["resize"] += t1 - t0
        if self.holistic is None:
            return rgb, None
        keys = augment.pose_keyframes(len(chunk), self.pose_stride)
        found = [self.holistic(chunk[i]).astype(np.float16).astype(np.float32) for i in keys]  # as shards store
        rows = augment.interpolate_keyframes(keys, np.stack(found), len(chunk))  # NaN where an end is undetected
        pose = augment.transform_pose(torch.from_numpy(rows), *self.hw, self.box, self.params)
        self.seconds["landmarks"] += time.perf_counter() - t1
        return rgb, pose

    def close(self) -> None:
        if self.holistic is not None:
            self.holistic.close()


# ------------------------------------------------------------------------------------------------ decoding


@dataclass
class Decoder:
    """CTC decoding: greedy for beam 1 without fusion, else prefix beam search with optional LM fusion."""

    beam: int = 1
    lm: object = None  # a VocabLM (NGramLM bound to the model's vocabulary)
    lm_weight: float = 0.0
    word_bonus: float = 0.0

    def __call__(self, log_probs: np.ndarray) -> list[int]:
        lp = torch.from_numpy(np.ascontiguousarray(log_probs, dtype=np.float32))[None]  # (1, T', V)
        lengths = torch.tensor([lp.shape[1]])
        if self.lm is None and self.word_bonus == 0.0:
            return (greedy_decode(lp, lengths) if self.beam <= 1 else beam_search(lp, lengths, self.beam))[0]
        return beam_search(lp, lengths, max(1, self.beam), lm=self.lm, lm_weight=self.lm_weight,
                           word_bonus=self.word_bonus)[0]


# ------------------------------------------------------------------------------------------------ recognition


@dataclass
class Result:
    video: str
    glosses: list[str]
    times: list[tuple[float, float]]  # (start, duration) seconds per gloss
    source_frames: int
    frames: int  # at the model's rate
    fps: float
    seconds: dict  # per stage
    wall_s: float  # opening the video -> last gloss
    stream: dict | None = None  # --stream: window, hop, settled glosses with their modelled latency
    source_fps: float | None = None

    @property
    def end_to_end_fps(self) -> float:
        return self.source_frames / self.wall_s if self.wall_s > 0 else float("inf")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["times"] = [{"gloss": g, "start": round(s, 3), "duration": round(u, 3)}
                      for g, (s, u) in zip(self.glosses, self.times)]
        d["end_to_end_fps"] = self.end_to_end_fps
        d["realtime_factor"] = (self.frames / self.fps) / self.wall_s if self.wall_s > 0 else None
        d["ms_per_frame"] = {k: 1000 * v / max(1, self.frames) for k, v in self.seconds.items()}
        return d


@dataclass
class Options:
    decoder: Decoder = field(default_factory=Decoder)
    pose_stride: int = 1
    window: int = WINDOW
    hop: int = HOP


def _clip_output(dep: Deployed, rgb: torch.Tensor, pose: torch.Tensor | None, seconds: dict,
                 decoder: Decoder) -> tuple[list[int], list[tuple[int, int]]]:
    """One clip (T frames) through the model and the decoder -> (labels, (first, last) input frame per label)."""
    t0 = time.perf_counter()
    lp = dep.run(rgb[None], None if pose is None else pose[None])  # (T', V)
    t1 = time.perf_counter()
    if lp.shape[0] != math.ceil(rgb.shape[0] / OUTPUT_STRIDE):
        raise RecognizeError(f"{dep.path}: {lp.shape[0]} output frames for {rgb.shape[0]} input frames; the "
                             f"recognizer expects ceil(T / {OUTPUT_STRIDE})")
    labels = decoder(lp)
    spans = [(a * OUTPUT_STRIDE, min(rgb.shape[0], (b + 1) * OUTPUT_STRIDE) - 1) for a, b in ctc_align(lp, labels)]
    seconds["model"] += t1 - t0
    seconds["ctc_decode"] += time.perf_counter() - t1
    return labels, spans


def recognize(source: str, dep: Deployed, opts: Options, on_gloss: Callable | None = None) -> Result:
    """Recognise one video (offline, or `--stream` when `on_gloss` is given). Raises VideoError, RecognizeError."""
    t_open = time.perf_counter()
    src_frames, src_fps, frames = open_source(str(source), dep.fps)
    pre = Preprocess(dep, opts.pose_stride)
    seconds = dict.fromkeys(STAGES, 0.0)
    rgb, pose = [], []
    streamer = _Streamer(dep, opts, seconds, on_gloss) if on_gloss is not None else None
    decoded = 0
    try:
        # streaming: chunks end where windows end (every gcd(W, H) frames), so that no window waits for more frames
        for chunk, dt in timed_chunks(frames, math.gcd(opts.window, opts.hop) if streamer else CHUNK):
            decoded += len(chunk)
            seconds["decode"] += dt
            before = sum(pre.seconds.values())
            r, p = pre(chunk)
            if streamer is not None:
                streamer.arrived(r, p, dt + sum(pre.seconds.values()) - before)
            else:
                rgb.append(r)
                pose.append(p)
    finally:
        pre.close()
    seconds.update(pre.seconds)
    if not decoded:
        raise VideoError(f"{source}: no frame could be decoded")
    if streamer is not None:
        labels, spans = streamer.finish()
    else:
        x, q = torch.cat(rgb), (torch.cat(pose) if pose[0] is not None else None)
        labels, spans = _clip_output(dep, x, q, seconds, opts.decoder)
    wall = time.perf_counter() - t_open
    times = [(a / dep.fps, (b - a + 1) / dep.fps) for a, b in spans]
    return Result(str(source), dep.vocab.decode(labels), times, src_frames or decoded, decoded, dep.fps, seconds,
                  wall, streamer.report() if streamer else None, src_fps)


class _Streamer:
    """Windows over the frames as they arrive, settling the glosses of each window's zone (module docstring).
    Frames arrive in chunks of gcd(W, H) frames; only those a later window still needs are kept."""

    def __init__(self, dep: Deployed, opts: Options, seconds: dict, on_gloss: Callable):
        self.dep, self.W, self.H, self.seconds, self.on_gloss = dep, opts.window, opts.hop, seconds, on_gloss
        self.decoder = opts.decoder
        self.k = 0  # next window to run
        self.n = 0  # frames arrived
        self.base = 0  # frame index of the first kept frame
        self.rgb, self.pose = [], []  # kept chunks
        self.clock = 0.0  # modelled wall time of the live run (s)
        self.labels, self.spans, self.events = [], [], []

    def zone_start(self, k: int) -> int:
        return 0 if k == 0 else k * self.H + (self.W - self.H) // 2

    def arrived(self, rgb: torch.Tensor, pose: torch.Tensor | None, cost: float) -> None:
        """A chunk of preprocessed frames, which cost `cost` s to decode and preprocess."""
        self.rgb.append(rgb)
        self.pose.append(pose)
        self.n += len(rgb)
        self.clock = max(self.clock, self.n / self.dep.fps) + cost
        while self.k * self.H + self.W <= self.n:
            s = self.k * self.H
            self.run_window(s, s + self.W, self.zone_start(self.k), self.zone_start(self.k + 1))
            self.k += 1
        keep_from = min(self.k * self.H, max(0, self.n - self.W))  # the next window, or a final one on the last W
        while self.rgb and self.base + len(self.rgb[0]) <= keep_from:
            self.base += len(self.rgb.pop(0))
            self.pose.pop(0)

    def finish(self) -> tuple[list[int], list[tuple[int, int]]]:
        z = self.zone_start(self.k)
        if z < self.n:  # the tail: a final window on the last W frames settles the rest
            self.run_window(max(0, self.n - self.W), self.n, z, self.n)
        return self.labels, self.spans

    def run_window(self, a: int, b: int, z0: int, z1: int) -> None:
        x = torch.cat(self.rgb)[a - self.base:b - self.base]
        q = torch.cat(self.pose)[a - self.base:b - self.base] if self.pose[0] is not None else None
        before = self.seconds["model"] + self.seconds["ctc_decode"]
        labels, spans = _clip_output(self.dep, x, q, self.seconds, self.decoder)
        self.clock += self.seconds["model"] + self.seconds["ctc_decode"] - before
        new = 0
        for lab, (s0, s1) in zip(labels, spans):
            span = (s0 + a, s1 + a)
            if not z0 <= span[0] < z1:
                continue
            if self.labels and lab == self.labels[-1] and span[0] <= self.spans[-1][1] + OUTPUT_STRIDE:
                self.spans[-1] = (self.spans[-1][0], max(span[1], self.spans[-1][1]))  # one run seen by two windows
                continue
            self.labels.append(lab)
            self.spans.append(span)
            new += 1
            self.events.append({"gloss": self.dep.vocab.decode([lab])[0], "end_frame": span[1], "window": [a, b],
                                "printed_at_s": self.clock, "latency_s": self.clock - (span[1] + 1) / self.dep.fps})
        if new:
            self.on_gloss(self.dep.vocab.decode(self.labels), self.clock, self.events[-new:])

    def report(self) -> dict:
        lat = [e["latency_s"] for e in self.events]
        return {"window": self.W, "hop": self.H, "glosses": self.events, "modelled_end_s": self.clock,
                "latency_max_s": max(lat) if lat else None, "latency_mean_s": float(np.mean(lat)) if lat else None}


# ------------------------------------------------------------------------------------------------ outputs


def write_ctm(path: str | Path, results: list[Result]) -> None:
    """`VIDEO 1 START DUR GLOSS` per gloss (seconds), videos in the order given, times increasing within one."""
    lines = []
    for r in results:
        utt = Path(r.video).stem if not _is_url(r.video) else r.video.rstrip("/").rsplit("/", 1)[-1]
        utt = "_".join(utt.split()) or "video"
        lines += [f"{utt} 1 {s:.3f} {d:.3f} {g}\n" for g, (s, d) in zip(r.glosses, r.times)]
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", help="video files or URLs PyAV opens")
    p.add_argument("--checkpoint", required=True, help="best_model.pth (PyTorch) or an .onnx from launch/export.py")
    p.add_argument("--stream", action="store_true", help="live captions: windows of --window frames every --hop")
    p.add_argument("--window", type=int, default=WINDOW, help=f"frames per window (multiple of 4; {WINDOW})")
    p.add_argument("--hop", type=int, default=HOP, help=f"frames between windows (multiple of 4; {HOP})")
    p.add_argument("--ctm", default="", help="write the glosses with CTC-aligned times here")
    p.add_argument("--json", default="", help="write glosses, times and per-stage timings here")
    p.add_argument("--beam", type=int, default=1, help="beam width (1: greedy unless --lm or --word_bonus)")
    add_lm_args(p)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: CSLR_CPU_THREADS or all cores)")
    p.add_argument("--pose_stride", type=int, default=1, help="pose models: landmarks every K frames, interpolated")
    p.add_argument("--fps", type=float, default=0.0, help="override the model's frame rate")
    p.add_argument("--image_size", type=int, default=0, help="override the model's crop size")
    p.add_argument("--vocab", default="", help="vocab.txt or .pth: must equal the model's (needed for a bare .onnx)")


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag, ok in (("--beam", args.beam >= 1), ("--threads", args.threads >= 0),
                     ("--pose_stride", args.pose_stride >= 1), ("--fps", args.fps >= 0),
                     ("--image_size", args.image_size >= 0),
                     ("--window", args.window >= 4 and args.window % 4 == 0),
                     ("--hop", 4 <= args.hop <= args.window and args.hop % 4 == 0)):
        if not ok:
            p.error(f"{flag} {getattr(args, flag[2:])}: out of range (--window, --hop: multiples of 4, hop <= window)")


def _print_settled(video: str) -> Callable:
    def show(glosses: list[str], clock: float, fresh: list[dict]) -> None:
        lat = ", ".join(f"{e['gloss']} {e['latency_s']:.2f}s" for e in fresh)
        print(f"[{clock:7.2f}s] {video}: {' '.join(glosses)}   (settled: {lat})", flush=True)
    return show


def main(args: argparse.Namespace) -> int:
    """The CLI (launch/recognize.py): 0, or 2 when the model or any video could not be used (named on stderr)."""
    try:
        dep = load_model(args.checkpoint, args.threads, args.vocab, args.fps, args.image_size)
        check_pose_support(dep)
        lm, weight, bonus = lm_from_args(args)
        fusion = lm.bind(dep.vocab, dep.meta.get("protocol", "phoenix2014")) if lm is not None else None
    except (RecognizeError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opts = Options(Decoder(args.beam, fusion, weight, bonus), args.pose_stride, args.window, args.hop)
    print(f"# {dep.path.name}: {dep.runtime}, {'+'.join(dep.streams)}, {len(dep.vocab) - 1} glosses, "
          f"{dep.meta['image_size']}x{dep.meta['image_size']} crop, {dep.fps:g} fps ({dep.fps_source}), "
          f"{torch.get_num_threads()} threads", file=sys.stderr)
    results, status = [], 0
    for video in args.videos:
        try:
            r = recognize(video, dep, opts, _print_settled(video) if args.stream else None)
        except (VideoError, LandmarkError, RecognizeError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        results.append(r)
        print(f"{video}: {' '.join(r.glosses)}", flush=True)
        stages = ", ".join(f"{k} {1000 * v / max(1, r.frames):.1f}" for k, v in r.seconds.items())
        extra = ""
        if r.stream is not None and r.stream["latency_max_s"] is not None:
            extra = f"; stream latency max {r.stream['latency_max_s']:.2f} s, mean {r.stream['latency_mean_s']:.2f} s"
        print(f"# {r.frames} frames at {r.fps:g} fps ({r.source_frames} in the file), {r.wall_s:.2f} s, "
              f"{r.end_to_end_fps:.1f} frames/s end to end; ms/frame: {stages}{extra}", file=sys.stderr)
    if args.ctm:
        write_ctm(args.ctm, results)
    if args.json:
        atomic_write_json(args.json, {"checkpoint": str(dep.path), "runtime": dep.runtime, "streams": list(dep.streams),
                                      "image_size": dep.meta["image_size"], "fps": dep.fps,
                                      "fps_source": dep.fps_source,
                                      "threads": torch.get_num_threads(), "beam": args.beam, "lm": args.lm or None,
                                      "pose_stride": args.pose_stride, "stream": args.stream,
                                      "videos": [r.as_dict() for r in results]})
    return status
