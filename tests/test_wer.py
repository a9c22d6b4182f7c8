"""Tests of cslr.eval.wer: every normalisation rule, CTM/STM files, the reference STM derivation
from the real corpus rows, and agreement with the real sclite (skipped where sclite is absent).

    pytest tests/test_wer.py -q
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from cslr.eval.wer import (
    EMPTY,
    align_counts,
    normalize_hypothesis,
    normalize_reference,
    read_ctm,
    read_stm,
    reference_from_annotation,
    score,
    stm_signer,
    write_ctm,
    write_stm,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "phoenix2014"
REPO = Path(__file__).resolve().parents[1]
SCLITE = shutil.which("sclite") or "/usr/lib/sctk/bin/sclite"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/reference/phoenix2014 not present")
needs_sclite = pytest.mark.skipif(not Path(SCLITE).is_file(), reason="sclite (sctk) not installed")

# Used when the reference folder is absent: real PHOENIX glosses, quirks included.
BUILTIN_GLOSSES = (
    "REGEN SONNE WOLKE NORD SUED WEST OST NORDWEST SUEDOST MORGEN HEUTE NACHT TAG GRAD MINUS WIND "
    "SCHNEE GEWITTER TEMPERATUR KALT WARM AUCH BISSCHEN IX REGION KOMMEN HABEN ZEIGEN-BILDSCHIRM "
    "WIE-AUSSEHEN NICHT-KEIN S+H loc-REGION cl-KOMMEN poss-EUCH qu-DU lh-HOCH S0NNE HABEN2 "
    "NORDRAUM SUEDOSTRAUM RAUM TRAUM REGEN-PLUSPLUS loc-NORD-PLUSPLUS ZEIGEN loc-ZEIGEN __ON__ __OFF__"
).split()


def _corpus_rows(split: str) -> dict[str, tuple[str, str]]:
    """id -> (signer, raw annotation) of a reference corpus.csv (header id|folder|signer|annotation)."""
    rows = {}
    lines = (REFERENCE / f"{split}.corpus.csv").read_text("utf-8").splitlines()
    assert lines[0] == "id|folder|signer|annotation"
    for line in lines[1:]:
        utt, _, signer, annotation = line.split("|")
        rows[utt] = (signer, annotation)
    return rows


def _vocabulary() -> list[str]:
    if not REFERENCE.is_dir():
        return list(BUILTIN_GLOSSES)
    return sorted({g for split in ("train", "dev", "test") for _, a in _corpus_rows(split).values() for g in a.split()})


# ------------------------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    "gloss, expected",
    [
        ("loc-REGION", "REGION"),
        ("cl-KOMMEN", "KOMMEN"),
        ("NICHT-cl-KOMMEN", "NICHT-KOMMEN"),  # substrings, not only prefixes
        ("qu-DU", "DU"),
        ("poss-EUCH", "EUCH"),
        ("lh-HOCH", "HOCH"),
        ("S0NNE", "SONNE"),
        ("HABEN2", "HABEN"),
        ("loc-HABEN2-PLUSPLUS", "HABEN"),
        ("ZEIGEN", "ZEIGEN-BILDSCHIRM"),
        ("loc-ZEIGEN", "ZEIGEN-BILDSCHIRM"),
        ("ZEIGEN-BILDSCHIRM", "ZEIGEN-BILDSCHIRM"),
        ("NORDRAUM", "NORD"),
        ("SUEDOSTRAUM", "SUEDOST"),
        ("loc-SUEDRAUM", "SUED"),
        ("RAUM", "RAUM"),  # needs two capitals before RAUM
        ("TRAUM", "TRAUM"),
        ("REGEN-PLUSPLUS", "REGEN"),
        ("__ON__", "__ON__"),
        ("__OFF__", "__OFF__"),
        ("WIE-AUSSEHEN", "WIE-AUSSEHEN"),
        ("S+H", "S+H"),
    ],
)
def test_phoenix2014_gloss_rules(gloss, expected):
    assert normalize_hypothesis([gloss, "X"], "phoenix2014") == [expected, "X"]


@pytest.mark.parametrize("token", ["__EMOTION__", "__PU__", "__LEFTHAND__", "__EPENTHESIS__", "lh-__LEFTHAND__"])
def test_phoenix2014_drops_special_tokens(token):
    assert normalize_hypothesis(["A", token, "B"], "phoenix2014") == ["A", "B"]


def test_phoenix2014_drops_glosses_containing_special_tokens():
    # grep -v drops the whole CTM line; sed already deleted __EMOTION__/__PU__/__LEFTHAND__ inside words.
    assert normalize_hypothesis(["A__EPENTHESIS__B", "C__PU__"], "phoenix2014") == ["C"]


@pytest.mark.parametrize("protocol", ["phoenix2014", "phoenix2014T"])
def test_emptied_hypothesis_is_scored_as_empty_token(protocol):
    assert normalize_hypothesis([], protocol) == [EMPTY]
    assert normalize_hypothesis(["__EMOTION__", "__PU__", "__LEFTHAND__", "__EPENTHESIS__"], protocol) == [EMPTY]


def test_phoenix2014T_removes_every_special_token_both_sides():
    hyp = ["__ON__", "loc-REGION", "__OFF__", "__SOMETHING_NEW__", "NORDRAUM", "__PU__"]
    assert normalize_hypothesis(hyp, "phoenix2014T") == ["loc-REGION", "NORDRAUM"]
    assert normalize_reference(["__ON__", "A", "__OFF__"], "phoenix2014T") == ["A"]
    assert normalize_reference(["__ON__", "A"], "phoenix2014") == ["__ON__", "A"]


def test_plain_protocol_is_identity():
    glosses = ["loc-REGION", "__ON__", "ZEIGEN"]
    assert normalize_hypothesis(glosses, "plain") == glosses
    assert normalize_hypothesis([], "plain") == []
    assert reference_from_annotation(" loc-REGION  __ON__ ", "plain") == ["loc-REGION", "__ON__"]


def test_unknown_protocol_is_rejected():
    with pytest.raises(ValueError, match="unknown scoring protocol"):
        normalize_hypothesis(["A"], "phoenix2015")


def test_normalisation_is_idempotent_on_the_vocabulary():
    for gloss in _vocabulary():
        once = normalize_hypothesis([gloss], "phoenix2014")
        assert normalize_hypothesis(once, "phoenix2014") == once, gloss


# ---------------------------------------------------------------------------- reference derivation


@needs_reference
@pytest.mark.parametrize("split", ["dev", "test"])
def test_reference_stm_is_derived_from_the_corpus_rows(split):
    rows = _corpus_rows(split)
    stm = read_stm(REFERENCE / f"phoenix2014-groundtruth-{split}.stm")
    common = sorted(set(rows) & set(stm))
    assert len(common) == len(stm) == len(rows)
    exact = [u for u in common if (stm_signer(rows[u][0]), reference_from_annotation(rows[u][1])) == stm[u]]
    mismatched = sorted(set(common) - set(exact))
    print(f"{split}: {len(exact)}/{len(common)} STM lines reproduced exactly")
    assert not mismatched, f"{len(mismatched)} rows differ, e.g. {mismatched[:3]}"
    # The rules change no official row: the STM is the annotation split on white space.
    assert all(reference_from_annotation(rows[u][1]) == rows[u][1].split() for u in common)


@needs_reference
def test_raw_output_scores_zero_against_a_reference_built_from_the_same_annotation():
    # Train rows carry every quirk (loc-, NORDRAUM, __EMOTION__, ...): hypothesis and reference rules agree.
    rows = [r for r in _corpus_rows("train").values() if reference_from_annotation(r[1])][:1000]
    refs = {f"u{k}": (signer, reference_from_annotation(a)) for k, (signer, a) in enumerate(rows)}
    hyps = {f"u{k}": a.split() for k, (_, a) in enumerate(rows)}
    assert score(hyps, refs).wer == 0.0


# ------------------------------------------------------------------------------------------- files


def test_ctm_stm_round_trip(tmp_path):
    hyps = {"b-2": ["X", "Y", "Z"], "a-1": ["A"], "c-3": []}
    refs = {"b-2": ("signer01", ["X", "Q"]), "a-1": ("signer05", []), "c-3": ("signer05", ["A", "B"])}
    write_ctm(tmp_path / "h.ctm", hyps)
    write_stm(tmp_path / "r.stm", refs)
    assert read_ctm(tmp_path / "h.ctm") == {k: v for k, v in hyps.items() if v}
    assert read_stm(tmp_path / "r.stm") == refs
    ctm_lines = (tmp_path / "h.ctm").read_text().splitlines()
    assert [ln.split()[0] for ln in ctm_lines] == ["a-1", "b-2", "b-2", "b-2"]
    starts = [float(ln.split()[2]) for ln in ctm_lines[1:]]
    assert starts == sorted(starts) and len(set(starts)) == 3
    assert (tmp_path / "r.stm").read_text().splitlines()[1] == "b-2 1 signer01 0.0 1.79769e+308 X Q"


def test_read_ctm_orders_by_time_and_skips_comments(tmp_path):
    (tmp_path / "h.ctm").write_text(";; comment\nu 1 0.20 0.1 B\n\nu 1 0.10 0.1 A 0.9\n")
    assert read_ctm(tmp_path / "h.ctm") == {"u": ["A", "B"]}


def test_read_stm_skips_segment_labels(tmp_path):
    (tmp_path / "r.stm").write_text(";; header\nu 1 spk 0.0 9.0 <O,M> A B\n")
    assert read_stm(tmp_path / "r.stm") == {"u": ("spk", ["A", "B"])}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("h.ctm", "u 1 0.0 0.1 A\nu 1 0.1 B\n", r"h\.ctm:2: a CTM line needs 5 or 6 fields"),
        ("h.ctm", "u 1 zero 0.1 A\n", r"h\.ctm:1: start time 'zero' is not a number"),
        ("r.stm", "u 1 spk 0.0\n", r"r\.stm:1: an STM line needs at least 5 fields"),
        ("r.stm", "u 1 spk 0.0 end A\n", r"r\.stm:1: end time 'end' is not a number"),
        ("r.stm", "u 1 spk 0.0 1.0 A\nu 1 spk 0.0 1.0 B\n", r"r\.stm:2: id 'u' appears twice"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    reader = read_ctm if name.endswith(".ctm") else read_stm
    with pytest.raises(ValueError, match=message):
        reader(tmp_path / name)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ctm: file not found"):
        read_ctm(tmp_path / "nope.ctm")


def test_writers_reject_white_space_in_tokens(tmp_path):
    with pytest.raises(ValueError, match="white space"):
        write_ctm(tmp_path / "h.ctm", {"u": ["A B"]})


# ----------------------------------------------------------------------------------------- scoring


def test_score_counts_and_per_signer():
    refs = {
        "u1": ("signer01", ["A", "B", "C"]),
        "u2": ("signer01", ["A", "B"]),
        "u3": ("signer02", ["X", "Y"]),
        "u4": ("signer02", ["Z"]),
    }
    hyps = {"u1": ["A", "C"], "u2": ["B", "C"], "u3": ["__EMOTION__"]}  # u4 missing
    r = score(hyps, refs, "phoenix2014")
    # u1: 1 D; u2: 1 D + 1 I (sclite prefers D+I, cost 6, to 2 S, cost 8); u3: [EMPTY] = 1 S + 1 D; u4: 1 D.
    assert (r.sub, r.dele, r.ins, r.num_ref_words, r.num_sentences) == (1, 4, 1, 8, 4)
    assert r.wer == pytest.approx(100 * 6 / 8)
    assert r.missing_hyps == ["u4"]
    assert r.per_signer["signer01"] == {"sub": 0, "del": 2, "ins": 1, "n": 5, "sentences": 2, "wer": 60.0}
    assert r.per_signer["signer02"]["wer"] == pytest.approx(100.0)
    assert r.as_dict()["per_signer"]["signer02"]["n"] == 3
    table = r.format_table()
    assert "signer01" in table and "75.00" in table


def test_empty_hypothesis_against_empty_reference_is_one_insertion():
    r = score({"u": ["__ON__"]}, {"u": ("s", ["__OFF__"])}, "phoenix2014T")
    assert (r.sub, r.dele, r.ins, r.num_ref_words) == (0, 0, 1, 0)


def test_phoenix_protocols_ignore_case_plain_does_not():
    refs = {"u": ("s", ["REGEN", "SONNE"])}
    assert score({"u": ["regen", "Sonne"]}, refs, "phoenix2014").wer == 0.0
    assert score({"u": ["regen", "Sonne"]}, refs, "plain").sub == 2


def test_hypothesis_without_reference_is_an_error():
    with pytest.raises(ValueError, match="no reference"):
        score({"u": ["A"], "v": ["B"]}, {"u": ("s", ["A"])})


words = st.lists(st.sampled_from("ABCD"), max_size=8)


@settings(max_examples=200, deadline=None)
@given(ref=words, hyp=words)
def test_alignment_is_minimum_cost_and_consistent(ref, hyp):
    cor, sub, dele, ins = align_counts(ref, hyp)
    assert cor + sub + dele == len(ref) and cor + sub + ins == len(hyp)
    # sclite's weights: substitution 4, insertion 3, deletion 3 (rapidfuzz as the reference).
    assert 4 * sub + 3 * (dele + ins) == Levenshtein.distance(ref, hyp, weights=(3, 3, 4))
    assert sub + dele + ins >= Levenshtein.distance(ref, hyp)  # never fewer errors than plain edit distance


# ------------------------------------------------------------------------------------ sclite agreement


def _quirky(gloss: str, rng: random.Random) -> str:
    """Decorate a gloss the way raw model output (trained on raw annotations) looks."""
    r = rng.random()
    if r < 0.08:
        return rng.choice(["loc-", "cl-", "qu-", "poss-", "lh-"]) + gloss
    if r < 0.12:
        return gloss + "-PLUSPLUS"
    if r < 0.15:
        return {"SONNE": "S0NNE", "HABEN": "HABEN2", "NORD": "NORDRAUM", "SUEDOST": "SUEDOSTRAUM"}.get(gloss, gloss + "RAUM")
    if r < 0.18:
        return gloss.lower()
    return gloss


def _random_corpus(n: int, vocab: list[str], seed: int):
    """(raw hyps, refs) with PHOENIX quirks: edits, decorations, special tokens, emptied and missing hyps."""
    rng = random.Random(seed)
    specials = ["__EMOTION__", "__PU__", "__LEFTHAND__", "__EPENTHESIS__", "__ON__", "__OFF__"]
    raw = [g for g in vocab if not g.startswith("__")]
    clean = [g for g in raw if reference_from_annotation(g) == [g]]  # glosses as official references hold them
    hyps, refs = {}, {}
    for k in range(n):
        utt = f"{k % 28 + 1:02d}{rng.choice(['April', 'May'])}_2010_Thursday_heute_default-{k}"
        ref = [rng.choice(clean) for _ in range(rng.randint(1, 14))]
        if rng.random() < 0.3:
            ref = ["__ON__", *ref] + (["__OFF__"] if rng.random() < 0.5 else [])
        if rng.random() < 0.02:
            ref = ["__ON__", "__OFF__"]  # an empty reference under phoenix2014T
        refs[utt] = (f"signer{rng.randint(1, 9):02d}", ref)
        kind = rng.random()
        if kind < 0.03:
            continue  # no hypothesis at all
        if kind < 0.08:
            hyps[utt] = [rng.choice(specials[:4]) for _ in range(rng.randint(0, 3))]  # emptied by the rules
            continue
        hyp = []
        for g in ref:
            r = rng.random()
            if r < 0.1:
                continue  # deletion
            hyp.append(rng.choice(raw) if r < 0.25 else g)  # substitution or hit
            if rng.random() < 0.1:
                hyp.append(rng.choice(raw + specials + ["ZEIGEN", "S0NNE", "HABEN2"]))  # insertion
        hyps[utt] = [_quirky(g, rng) for g in hyp]
    return hyps, refs


def _run_sclite(tmp_path: Path, hyps, refs, protocol: str) -> str:
    """Write CTM/STM as the official script feeds sclite and run it once (pra + rsum + sum reports)."""
    write_ctm(tmp_path / "h.ctm", {u: normalize_hypothesis(h, protocol) for u, h in hyps.items()})
    write_stm(tmp_path / "r.stm", {u: (s, normalize_reference(r, protocol)) for u, (s, r) in refs.items()})
    cmd = [SCLITE, "-h", str(tmp_path / "h.ctm"), "ctm", "-r", str(tmp_path / "r.stm"), "stm", "-f", "0"]
    cmd += ["-s"] if protocol == "plain" else []  # plain is case-sensitive
    out = subprocess.run(cmd + ["-o", "pra", "rsum", "sum", "stdout"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _speaker_tables(report: str) -> tuple[dict, dict]:
    """Rows (speaker -> numbers) of sclite's rsum (counts, total row "Sum") and sum (percent, "Sum/Avg") tables."""
    tables = []
    for block in re.split(r"SYSTEM SUMMARY PERCENTAGES by SPEAKER", report)[1:]:
        rows = {}
        for m in re.finditer(r"\|\s*([\w/]+)\s*\|\s*(\d+)\s+(\d+)\s*\|([\d.\s]+)\|", block):
            vals = [float(v) for v in m.group(4).split()]
            rows[m.group(1)] = dict(zip(["snt", "wrd", "corr", "sub", "del", "ins", "err", "serr"], [int(m.group(2)), int(m.group(3)), *vals]))
        tables.append(rows)
    (raw,) = [t for t in tables if "Sum" in t]
    (pct,) = [t for t in tables if "Sum/Avg" in t]
    return raw, pct


def _check_against_sclite(tmp_path, hyps, refs, protocol):
    report = _run_sclite(tmp_path, hyps, refs, protocol)
    ours = score(hyps, refs, protocol)
    # Per sentence: sclite's pra report gives (#C #S #D #I) for every file id (lower-cased).
    pra = {
        m.group(1): tuple(map(int, m.group(2, 3, 4, 5)))
        for m in re.finditer(r"File: (\S+)\nChannel: \S+\nScores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)", report)
    }
    assert len(pra) == len(refs)
    ignore_case = protocol != "plain"
    for utt, (_, ref) in refs.items():
        hyp = normalize_hypothesis(hyps[utt], protocol) if utt in hyps else []
        assert align_counts(normalize_reference(ref, protocol), hyp, ignore_case) == pra[utt.lower()], utt
    # Corpus and per-signer: raw counts (rsum) exactly, percentages (sum) to sclite's one decimal.
    raw, pct = _speaker_tables(report)
    total = raw["Sum"]
    assert (total["snt"], total["wrd"], total["sub"], total["del"], total["ins"]) == (
        ours.num_sentences, ours.num_ref_words, ours.sub, ours.dele, ours.ins)
    assert total["err"] == ours.sub + ours.dele + ours.ins
    assert pct["Sum/Avg"]["err"] == pytest.approx(round(ours.wer, 1), abs=0.051)
    for signer, s in ours.per_signer.items():
        assert (raw[signer]["wrd"], raw[signer]["sub"], raw[signer]["del"], raw[signer]["ins"]) == (
            s["n"], s["sub"], s["del"], s["ins"])
        assert pct[signer]["err"] == pytest.approx(round(s["wer"], 1), abs=0.051)
    return ours


@needs_sclite
@pytest.mark.parametrize("protocol", ["phoenix2014", "phoenix2014T"])
def test_agrees_with_sclite_on_phoenix_quirks(tmp_path, protocol):
    hyps, refs = _random_corpus(300, _vocabulary(), seed=1 if protocol == "phoenix2014" else 2)
    ours = _check_against_sclite(tmp_path, hyps, refs, protocol)
    assert ours.missing_hyps and ours.sub and ours.dele and ours.ins  # the corpus exercised every case
    print(f"{protocol}: WER {ours.wer:.2f} S {ours.sub} D {ours.dele} I {ours.ins} N {ours.num_ref_words}")


@needs_sclite
def test_agrees_with_sclite_on_tie_breaks(tmp_path):
    # A tiny alphabet makes equal-cost alignments frequent: the S/D/I split must follow sclite's choice.
    rng = random.Random(3)
    refs, hyps = {}, {}
    for k in range(1000):
        alphabet = "ABCDEF"[: rng.randint(2, 6)]
        refs[f"u{k:04d}"] = (f"s{k % 3}", [rng.choice(alphabet) for _ in range(rng.randint(1, 15))])
        hyps[f"u{k:04d}"] = [rng.choice(alphabet) for _ in range(rng.randint(0, 15))]
    _check_against_sclite(tmp_path, hyps, refs, "plain")


# ------------------------------------------------------------------------------------------------ CLI


def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "launch" / "score.py"), *args], capture_output=True, text=True, timeout=60)


def test_score_cli(tmp_path):
    write_ctm(tmp_path / "h.ctm", {"u1": ["loc-A", "B"], "u2": ["C"]})
    write_stm(tmp_path / "r.stm", {"u1": ("signer01", ["A", "B"]), "u2": ("signer02", ["D", "E"])})
    out = _cli("--hyp", str(tmp_path / "h.ctm"), "--ref", str(tmp_path / "r.stm"), "--json", str(tmp_path / "o.json"))
    assert out.returncode == 0, out.stderr
    assert "WER 50.00%" in out.stdout and "signer02" in out.stdout
    import json

    result = json.loads((tmp_path / "o.json").read_text())
    assert (result["sub"], result["dele"], result["ins"], result["num_ref_words"]) == (1, 1, 0, 4)


def test_score_cli_reports_bad_files(tmp_path):
    (tmp_path / "r.stm").write_text("u 1 spk 0.0 1.0 A\n")
    (tmp_path / "h.ctm").write_text("u 1 0.0 A\n")
    out = _cli("--hyp", str(tmp_path / "h.ctm"), "--ref", str(tmp_path / "r.stm"))
    assert out.returncode == 2 and "h.ctm:1" in out.stderr
    out = _cli("--hyp", str(tmp_path / "missing.ctm"), "--ref", str(tmp_path / "r.stm"))
    assert out.returncode == 2 and "missing.ctm: file not found" in out.stderr
