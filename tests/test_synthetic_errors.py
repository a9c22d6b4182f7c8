"""The synthetic corpus's error breakdown (`cslr/eval/synthetic_errors.py`, `launch/score.py --synthetic`):
substitutions classified by what separates the two glosses in the generator's inventory.

Run: `/work/venv/bin/pytest tests/test_synthetic_errors.py -q`
"""

from __future__ import annotations

import json
import sys

from conftest import REPO, run_cmd
from cslr.datasets.synthetic import PRESETS, plan_corpus
from cslr.eval.synthetic_errors import synthetic_references, synthetic_score
from cslr.eval.wer import write_ctm


def _edits():
    """References of the small preset's dev split, and hypotheses with one substitution of each kind."""
    corpus = plan_corpus(PRESETS["small"], 0)
    refs = {k: glosses for k, (_, glosses) in synthetic_references("small", "dev").items()}
    plain = [s for n, s in corpus.signs.items() if not n.startswith("__") and "-" not in n and "RAUM" not in n]

    def partner(sign, same_trajectory: bool, same_shape: bool):
        return next(s for s in plain if s.name != sign.name and (s.trajectory == sign.trajectory) == same_trajectory
                    and (s.shape == sign.shape) == same_shape)

    hyps = {k: list(v) for k, v in refs.items()}
    targets = [(k, i) for k, v in refs.items() for i, g in enumerate(v) if corpus.signs.get(g) in plain]
    for (vid, i), (same_t, same_s) in zip(targets[::7], ((True, False), (False, True), (False, False))):
        hyps[vid][i] = partner(corpus.signs[refs[vid][i]], same_t, same_s).name  # shape, trajectory, both
    vid, i = targets[40]
    del hyps[vid][i]  # one deletion
    return refs, hyps


def test_each_kind_of_substitution_is_counted_as_such():
    refs, hyps = _edits()
    res, by = synthetic_score(hyps, "small", "dev")
    assert (res.sub, res.dele, res.ins) == (3, 1, 0)
    assert by == {"shape": 1, "trajectory": 1, "both": 1, "special": 0}
    assert res.num_ref_words == sum(map(len, refs.values())) and res.missing_hyps == []
    assert res.wer == 100.0 * 4 / res.num_ref_words
    perfect, by = synthetic_score(refs, "small", "dev")
    assert perfect.wer == 0 and perfect.sub == 0 and sum(by.values()) == 0


def test_score_cli_reads_a_ctm_against_the_built_in_references(tmp_path):
    refs, hyps = _edits()
    missing = sorted(hyps)[-1]
    ctm = tmp_path / "dev.ctm"
    write_ctm(ctm, {k: v for k, v in hyps.items() if k != missing})
    out = tmp_path / "errors.json"
    proc = run_cmd([sys.executable, str(REPO / "launch" / "score.py"), "--hyp", str(ctm), "--synthetic", "small",
                    "--split", "dev", "--json", str(out)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "shape 1" in proc.stdout and "trajectory 1" in proc.stdout
    assert "1 references have no hypothesis" in proc.stderr
    res = json.loads(out.read_text())
    assert res["missing_hyps"] == [missing] and res["dele"] == 1 + len(refs[missing])
    assert res["substitutions_by"] == {"shape": 1, "trajectory": 1, "both": 1, "special": 0}
    bad = run_cmd([sys.executable, str(REPO / "launch" / "score.py"), "--hyp", str(ctm), "--synthetic", "big"],
                  timeout=120)
    assert bad.returncode == 2 and "unknown synthetic preset 'big'" in bad.stderr
