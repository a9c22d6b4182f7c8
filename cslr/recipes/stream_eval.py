"""The WER cost of live captions: every video of a prepared split recognised as `recognize.py --stream` does and as
one clip, with the same model and decoder (`launch/evaluate.py --stream [--window W --hop H]`).

The frames come from the evaluation loader, i.e. the recognizer's own preprocessing (the skew test in
tests/test_recognize.py shows the two agree); the streamer is the recognizer's `_Streamer`, fed chunks of
gcd(W, H) frames as they would arrive. One process.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from cslr.datasets.pipeline import build_loader
from cslr.eval.wer import reference_from_annotation, score
from cslr.io import Progress, atomic_write_json

from .recognize import HOP, WINDOW  # noqa: F401  (the defaults, for evaluate.py's flags)
from .recognize import STAGES, Decoder, Deployed, Options, RecognizeError, _clip_output, _Streamer, deploy_loaded


def stream_loader(dep: Deployed, loader, opts: Options, protocol: str, progress=None) -> tuple[dict, dict, dict]:
    """The videos of an evaluation loader (prepared data: the recognizer's own preprocessing, see the skew test)
    recognised offline (one clip) and streaming (`opts.window`/`opts.hop`, chunks of gcd(W, H) frames as they would
    arrive) with the same model and decoder -> (offline hyps, streaming hyps, refs) for `cslr.eval.wer.score`: the
    WER cost of live captions (`evaluate.py --stream`). `progress` (a cslr.io.Progress) counts batches."""
    offline, streamed, refs = {}, {}, {}
    step = math.gcd(opts.window, opts.hop)
    for batch in loader:
        for i, key in enumerate(batch["keys"]):
            if "valid" in batch and not bool(batch["valid"][i]):
                continue
            n = int(batch["lengths"][i])
            x = batch["rgb"][i, :n]
            q = batch["pose"][i, :n] if "pose" in dep.streams else None
            seconds = dict.fromkeys(STAGES, 0.0)
            offline[key] = dep.vocab.decode(_clip_output(dep, x, q, seconds, opts.decoder)[0])
            st = _Streamer(dep, opts, seconds, on_gloss=lambda *_: None)
            for s in range(0, n, step):
                st.arrived(x[s:s + step], None if q is None else q[s:s + step], 0.0)
            streamed[key] = dep.vocab.decode(st.finish()[0])
            refs[key] = (batch["signers"][i], reference_from_annotation(batch["glosses"][i], protocol))
        if progress is not None:
            progress.update(1)
    return offline, streamed, refs


def stream_main(args, model, ck: dict, data_cfg, vocab, protocol: str, lm, lm_weight: float,
                word_bonus: float) -> int:
    """--stream: offline and streaming hypotheses of every video of the split, scored side by side."""
    if args.pose_stride > 1:
        print("error: --stream with --pose_stride: measure them one at a time", file=sys.stderr)
        return 2
    try:
        dep = deploy_loaded(args.checkpoint, model, vocab, ck)
        if "rgb" not in dep.streams:
            raise RecognizeError(f"{args.checkpoint}: --stream measures models that take rgb (this one takes "
                                 f"{'+'.join(dep.streams)})")
    except RecognizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fusion = lm.bind(vocab, protocol) if lm is not None else None
    opts = Options(Decoder(args.beam, fusion, lm_weight, word_bonus), window=args.window, hop=args.hop)
    loader = build_loader(data_cfg, args.split, vocab, train=False)
    bar = Progress(len(loader), desc=f"{args.split} stream", unit="batches")
    offline, streamed, refs = stream_loader(dep, loader, opts, protocol, progress=bar)
    bar.close()
    res = {name: score(h, refs, protocol=protocol).as_dict() for name, h in (("offline", offline),
                                                                            ("stream", streamed))}
    same = sum(offline[k] == streamed[k] for k in refs)
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    summary = {"split": args.split, "videos": len(refs), "window": args.window, "hop": args.hop, "beam": args.beam,
               "offline": res["offline"], "stream": res["stream"], "identical_hypotheses": same,
               "wer_cost_points": res["stream"]["wer"] - res["offline"]["wer"], "checkpoint": str(args.checkpoint),
               "lm": args.lm or None}
    atomic_write_json(out / f"{args.split}_stream_wer.json", summary)
    print(f"{args.split} WER offline {res['offline']['wer']:.2f}%, streaming {res['stream']['wer']:.2f}% "
          f"(window {args.window}, hop {args.hop}, beam {args.beam}): {summary['wer_cost_points']:+.2f} points; "
          f"{same} of {len(refs)} hypotheses identical -> {out / f'{args.split}_stream_wer.json'}")
    return 0
