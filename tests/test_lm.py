"""Tests of the gloss n-gram LM (cslr.eval.lm, cslr.recipes.lm, launch/train_lm.py): estimation against an ARPA
file KenLM's lmplz wrote, ARPA round trips, KenLM's own reader where the `kenlm` module is installed, normalisation,
clear errors for corrupt or mismatched models, and the CLI on a tiny prepared corpus.

    pytest tests/test_lm.py -q
"""

from __future__ import annotations

import json
import math
import random
import sys

import pytest
import torch

from cslr.datasets.vocab import Vocabulary
from cslr.eval.lm import (LN10, LMFormatError, _discounts, estimate_kneser_ney, fusion_weights, load_lm, read_arpa,
                          weights_path, write_arpa, write_weights)
from conftest import REFERENCE, check_ok, run_cmd

# `lmplz -o 2 --verbose_header` on the 5-sentence corpus below, as published with its output (words renamed A, B, C):
# "Statistics: 1 6 D1=0.5 D2=0.5 D3+=3 / 2 7 D1=0.5 D2=1.25 D3+=3".
LMPLZ_CORPUS = [["A"], ["B", "A"], ["C"], ["B"], ["A"]]
LMPLZ_ARPA = {
    1: {"<unk>": (-0.89085555, 0.0), "<s>": (0.0, -0.22184873), "</s>": (-0.89085555, 0.0),
        "A": (-0.46488678, 0.0), "B": (-0.69896996, -0.30103), "C": (-0.69896996, -0.30103)},
    2: {"A </s>": -0.89085555, "B </s>": -0.50267535, "C </s>": -0.24850096, "<s> A": -0.44889864,
        "B A": -0.37527603, "<s> B": -0.56863624, "<s> C": -0.6575773},
}
PHOENIX = REFERENCE / "phoenix2014"


def _random_corpus(seed: int = 0, n: int = 300, words: int = 12) -> list[list[str]]:
    rng = random.Random(seed)
    w = [f"G{i}" for i in range(words)]
    return [[rng.choice(w[: rng.randint(3, words)]) for _ in range(rng.randint(1, 7))] for _ in range(n)]


def _table(lm):
    return {n: {" ".join(lm.words[w] for w in g): v for g, v in lm.grams[n].items()} for n in range(1, lm.order + 1)}


# ------------------------------------------------------------------------------------------ estimation


def test_matches_lmplz_on_its_published_toy_corpus(tmp_path):
    lm = estimate_kneser_ney(LMPLZ_CORPUS, order=2)
    assert lm.meta["discounts_1"] == "0.5 0.5 3" and lm.meta["discounts_2"] == "0.5 1.25 3"
    write_arpa(lm, tmp_path / "toy.arpa")
    got = _table(read_arpa(tmp_path / "toy.arpa"))
    assert set(got[1]) == set(LMPLZ_ARPA[1]) and set(got[2]) == set(LMPLZ_ARPA[2])
    for w, (lp, bo) in LMPLZ_ARPA[1].items():
        assert got[1][w] == pytest.approx((lp, bo), abs=2e-7), w
    for g, lp in LMPLZ_ARPA[2].items():
        assert got[2][g][0] == pytest.approx(lp, abs=2e-7), g


def test_discounts_use_counts_of_counts_exactly_one_to_four():
    # Chen & Goodman eq. 26 with n_k = number of n-grams of adjusted count exactly k (count 7 is in none of them).
    counts = {("a",): 1, ("b",): 1, ("c",): 1, ("d",): 2, ("e",): 2, ("f",): 3, ("g",): 4, ("h",): 7}
    n1, n2, n3, n4 = 3, 2, 1, 1
    y = n1 / (n1 + 2 * n2)
    expect = (0.0, 1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    (got, fell_back) = _discounts(counts, 1, (0.5, 1.0, 1.5))
    assert not fell_back and got == pytest.approx(expect)
    assert _discounts({("a",): 1, ("b",): 2}, 1, (0.5, 1.0, 1.5)) == ((0.0, 0.5, 1.0, 1.5), True)  # no n_3


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_every_context_is_a_distribution(order):
    lm = estimate_kneser_ney(_random_corpus(), order=order)
    states = {lm.begin()}
    for s in _random_corpus(1, 50):
        st = lm.begin()
        for t in s:
            _, st = lm.score(st, t)
            states.add(st)
    for st in states:
        p = 10 ** lm.next_log10(st)
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        for w in range(len(lm.words)):  # the vectorised distribution is the scalar back-off chain
            if w != lm.bos:
                assert lm.next_log10(st)[w] == pytest.approx(lm._log10(st, w), abs=1e-12)


def test_arpa_reads_back_with_the_same_probabilities(tmp_path):
    lm = estimate_kneser_ney(_random_corpus(), order=4)
    write_arpa(lm, tmp_path / "lm.arpa")
    back = read_arpa(tmp_path / "lm.arpa")
    assert back.order == 4 and back.words == lm.words and back.meta["tokens"] == str(lm.meta["tokens"])
    for n in range(1, 5):
        assert back.grams[n].keys() == lm.grams[n].keys()
        for g, (lp, bo) in lm.grams[n].items():
            assert back.grams[n][g] == pytest.approx((lp, bo), rel=1e-7, abs=1e-9)
    for s in _random_corpus(2, 30) + [["G1", "NEVER-SEEN", "G2"], []]:
        assert back.sentence_log_prob(s) == pytest.approx(lm.sentence_log_prob(s), abs=1e-5)


@pytest.mark.parametrize("order", [2, 3, 5])
def test_kenlm_scores_our_arpa_as_we_do(tmp_path, order):
    kenlm = pytest.importorskip("kenlm")
    lm = estimate_kneser_ney(_random_corpus(), order=order)
    write_arpa(lm, tmp_path / "lm.arpa")
    model = kenlm.Model(str(tmp_path / "lm.arpa"))
    for s in _random_corpus(3, 40) + [["G1", "NEVER-SEEN", "G2"], []]:
        assert lm.sentence_log_prob(s) / LN10 == pytest.approx(model.score(" ".join(s), bos=True, eos=True), abs=2e-5)


def test_perplexity_and_oov_rate():
    lm = estimate_kneser_ney([["A", "B"], ["B", "A"]], order=2)
    r = lm.perplexity([["A", "X"]])
    assert r["oov"] == 1 and r["words"] == 2 and r["oov_rate"] == 0.5 and r["tokens"] == 3
    manual = -(lm.sentence_log_prob(["A", "X"])) / 3
    assert r["perplexity"] == pytest.approx(math.exp(manual))


def test_unigram_perplexity_counts_end_of_sentence_and_shares_one_unknown():
    from cslr.recipes.lm import unigram_perplexity

    # counts A 2, B 1, </s> 2 (total 5) and one <unk>: 4 types, each count + 1/2 over 5 + 2
    train = [["A", "A"], ["B"]]
    assert unigram_perplexity(train, [["A"]]) == pytest.approx(7 / 2.5)  # A and </s>: 2.5 / 7 each
    assert unigram_perplexity(train, [["X", "B"]]) == pytest.approx((7 / 0.5 * 7 / 1.5 * 7 / 2.5) ** (1 / 3))
    assert math.isnan(unigram_perplexity(train, []))


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("text, match", [
    ("hello\n", r"expected \\data\\"),
    ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t</s>\n\\end\\\n", "declares 2 1-grams"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\t</s>\n", r"expected \\end\\"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\nabc\t</s>\n\n\\end\\\n", "is not a number"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n0.5\t</s>\n\n\\end\\\n", "positive log10"),
    ("\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-1\t</s>\t0\n-1\tA\t0\n\n\\2-grams:\n-1\tB A\n\n\\end\\\n",
     "'B' is not among the unigrams"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\tA\n\n\\end\\\n", "no </s>"),
])
def test_corrupt_arpa_is_a_clear_error_naming_the_file(tmp_path, text, match):
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    with pytest.raises(LMFormatError, match=match) as e:
        read_arpa(path)
    assert str(path) in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.arpa"):
        load_lm(tmp_path / "missing.arpa")


def test_truncated_arpa_of_a_real_model_is_an_error(tmp_path):
    lm = estimate_kneser_ney(_random_corpus(), order=3)
    write_arpa(lm, tmp_path / "lm.arpa")
    lines = (tmp_path / "lm.arpa").read_text().splitlines()
    (tmp_path / "cut.arpa").write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    with pytest.raises(LMFormatError, match="cut.arpa"):
        read_arpa(tmp_path / "cut.arpa")


def test_lm_of_another_vocabulary_is_a_clear_error(tmp_path):
    lm = estimate_kneser_ney(_random_corpus(), order=2)
    write_arpa(lm, tmp_path / "other.arpa")
    lm = load_lm(tmp_path / "other.arpa")
    with pytest.raises(LMFormatError, match=r"other\.arpa.*none of the model's 3 glosses"):
        lm.bind(Vocabulary(["REGEN", "SONNE", "WIND"]))
    assert lm.bind(Vocabulary(["G1", "SONNE"])).coverage == 0.5


# ------------------------------------------------------------------------- the model-vocabulary view


def test_bound_lm_follows_the_scoring_protocol():
    lm = estimate_kneser_ney([["__ON__", "REGION", "REGEN", "__OFF__"], ["REGION", "SONNE"]], order=3)
    vocab = Vocabulary(["REGEN", "SONNE", "__EMOTION__", "__ON__", "__OFF__", "loc-REGION", "UNBEKANNT"])
    v = lm.bind(vocab, "phoenix2014")
    c = {g: vocab.index[g] for g in vocab.glosses}
    seq = [c["__ON__"], c["loc-REGION"], c["__EMOTION__"], c["REGEN"], c["UNBEKANNT"]]
    # loc-REGION scores as REGION, __EMOTION__ is transparent (the scorer deletes it), UNBEKANNT as <unk>.
    expect = lm.sentence_log_prob(["__ON__", "REGION", "REGEN", "UNBEKANNT"])
    assert v.sequence_log_prob(seq) == pytest.approx(expect, abs=1e-12)
    s = v.advance([v.begin()], [c["__EMOTION__"]])[0]
    assert s == v.begin() and float(v.log_probs(torch.tensor([v.begin()]))[0, c["__EMOTION__"]]) == 0.0
    # phoenix2014T deletes every __X__: __ON__ is transparent there.
    t = lm.bind(vocab, "phoenix2014T")
    assert t.advance([t.begin()], [c["__ON__"]])[0] == t.begin()


def test_weights_file_and_fusion_weights(tmp_path):
    lm = estimate_kneser_ney(LMPLZ_CORPUS, order=2)
    path = tmp_path / "lm.arpa"
    write_arpa(lm, path)
    assert load_lm(path).weights is None
    with pytest.raises(ValueError, match="tune_lm.py"):
        fusion_weights(load_lm(path))
    assert fusion_weights(load_lm(path), 0.5, 1.0) == (0.5, 1.0)
    write_weights(path, 0.3, 1.5, dev_wer=12.0)
    assert weights_path(path).name == "lm.arpa.weights.json"
    assert json.loads(weights_path(path).read_text())["dev_wer"] == 12.0
    loaded = load_lm(path)
    assert loaded.weights == {"lm_weight": 0.3, "word_bonus": 1.5}
    assert fusion_weights(loaded) == (0.3, 1.5) and fusion_weights(loaded, lm_weight=0.0) == (0.0, 1.5)
    assert fusion_weights(None, word_bonus=None) == (0.0, 0.0)
    weights_path(path).write_text("{}")
    with pytest.raises(LMFormatError, match="weights.json"):
        load_lm(path)


# ------------------------------------------------------------------------------------------------ CLI


def test_train_lm_cli_on_a_prepared_corpus(tmp_path, tiny_data):
    out = tmp_path / "lm" / "lm.arpa"
    proc = run_cmd([sys.executable, "launch/train_lm.py", "--data", str(tiny_data), "--order", "3", "--out", str(out),
                    "--eval", str(tiny_data)])
    check_ok(proc)
    lm = load_lm(out)
    assert lm.order == 3 and lm.meta["protocol"] == "phoenix2014" and "3-gram LM" in proc.stdout
    from cslr.recipes.lm import dataset_sentences, unigram_perplexity
    train, dev = (dataset_sentences(tiny_data, split)[0] for split in ("train", "dev"))
    line = next(x for x in proc.stdout.splitlines() if x.startswith(f"{tiny_data} dev:"))  # and test, never train
    assert f"perplexity {lm.perplexity(dev)['perplexity']:.2f}" in line
    assert f"a unigram's {unigram_perplexity(train, dev):.2f}" in line and "context leaves" in line
    assert f"{tiny_data} test:" in proc.stdout and f"{tiny_data} train:" not in proc.stdout
    vocab = Vocabulary.load(tiny_data / "vocab.txt")
    bound = lm.bind(vocab, "phoenix2014")  # every gloss of the data's vocabulary is known or transparent
    assert bound.coverage == 1.0


def test_train_lm_cli_on_a_corpus_csv_and_its_errors(tmp_path):
    csv = tmp_path / "train.corpus.csv"
    csv.write_text("id|folder|signer|annotation\n"
                   "v1|v1/1/*.png|Signer01|__ON__ loc-NORD REGEN __OFF__\n"
                   "v2|v2/1/*.png|Signer02|NORDRAUM SONNE  REGEN __EMOTION__\n")
    out = tmp_path / "lm.arpa"
    check_ok(run_cmd([sys.executable, "launch/train_lm.py", "--annotations", str(csv), "--order", "2", "--out", str(out),
                      "--eval", str(csv)]))
    lm = load_lm(out)
    assert {"NORD", "REGEN", "SONNE", "__ON__", "__OFF__"} <= set(lm.words)  # normalised as the scorer does
    assert not {"loc-NORD", "NORDRAUM", "__EMOTION__"} & set(lm.words)
    bad = run_cmd([sys.executable, "launch/train_lm.py", "--annotations", str(tmp_path / "none.csv"), "--out", str(out)])
    assert bad.returncode == 2 and "none.csv" in bad.stderr
    csv.write_text("a|b\n1|2\n")
    bad = run_cmd([sys.executable, "launch/train_lm.py", "--annotations", str(csv), "--out", str(out)])
    assert bad.returncode == 2 and "header" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.skipif(not (PHOENIX / "train.corpus.csv").is_file(), reason="../shared/reference/phoenix2014 not present")
def test_real_phoenix_trigram_perplexity():
    from cslr.recipes.lm import corpus_csv_sentences

    train, protocol = corpus_csv_sentences(PHOENIX / "train.corpus.csv")
    lm = estimate_kneser_ney(train, order=3)
    assert "fallback" not in " ".join(str(v) for v in lm.meta.values())
    dev = lm.perplexity(corpus_csv_sentences(PHOENIX / "dev.corpus.csv", protocol)[0])
    assert 30 < dev["perplexity"] < 80 and dev["oov_rate"] < 0.01


@pytest.mark.skipif(not (PHOENIX / "train.corpus.csv").is_file(), reason="../shared/reference/phoenix2014 not present")
def test_small_forecast_gloss_order_is_as_predictable_as_phoenix():
    """The `small-forecast` preset exists to measure what an LM buys when context predicts as much as in PHOENIX:
    a trigram's share of a unigram's perplexity on held-out sentences matches PHOENIX-2014 dev's (0.36), where
    `small`'s is far above it; nothing but the sentences differs from `small`."""
    from cslr.datasets.synthetic import PRESETS, plan_corpus
    from cslr.eval.synthetic_errors import synthetic_references
    from cslr.recipes.lm import corpus_csv_sentences, unigram_perplexity

    def share(train, heldout):
        trigram = estimate_kneser_ney(train, order=3).perplexity(heldout)["perplexity"]
        return trigram / unigram_perplexity(train, heldout)

    train, protocol = corpus_csv_sentences(PHOENIX / "train.corpus.csv")
    phoenix = share(train, corpus_csv_sentences(PHOENIX / "dev.corpus.csv", protocol)[0])
    shares, corpora = {}, {}
    for name in ("small", "small-forecast"):
        corpus = corpora[name] = plan_corpus(PRESETS[name], 0, num_videos={"train": 1200, "dev": 2000, "test": 0})
        train, dev = ([glosses for _, glosses in synthetic_references(name, split, protocol=protocol,
                                                                       corpus=corpus).values()]
                      for split in ("train", "dev"))
        shares[name] = share(train, dev)
    assert abs(shares["small-forecast"] - phoenix) < 0.03, (shares, phoenix)
    assert shares["small"] > phoenix + 0.15, (shares, phoenix)
    small, forecast = corpora["small"], corpora["small-forecast"]
    assert small.signs == forecast.signs and small.signers == forecast.signers
    assert [s.tokens for s in small.samples["dev"]] != [s.tokens for s in forecast.samples["dev"]]


# ------------------------------------------------------------------------------- evaluation and tuning


def test_tune_lm_cli_and_decode_split_with_an_lm(tmp_path, tiny_data):
    from conftest import save_untrained
    from cslr.eval.evaluate import decode_split, load_for_eval
    from cslr.trainer.runtime import make_accelerator

    ck = save_untrained(tiny_data, tmp_path, randomise=True)
    lm_path = tmp_path / "lm.arpa"
    check_ok(run_cmd([sys.executable, "launch/train_lm.py", "--data", str(tiny_data), "--out", str(lm_path)]))
    proc = run_cmd([sys.executable, "launch/tune_lm.py", "--checkpoint", str(ck), "--lm", str(lm_path), "--beam", "3",
                    "--lm_weights", "0,0.5", "--word_bonuses", "0,1", "--num_workers", "0", "--report"])
    check_ok(proc)
    saved = json.loads(weights_path(lm_path).read_text())
    assert len(saved["grid"]) == 4 and saved["split"] == "dev" and saved["beam"] == 3
    assert saved["dev_wer"] == min(r["wer"] for r in saved["grid"]) and "best: lm_weight" in proc.stdout
    # --report: dev and test through greedy, beam, beam + the tuned LM; the dev rows agree with the tuning grid.
    report = json.loads((ck.parent / "lm_report.json").read_text())
    rows = {(r["split"], r["decoder"]): r for r in report["rows"]}
    assert set(rows) == {(s, d) for s in ("dev", "test") for d in ("greedy", "beam 3", "beam 3 + LM")}
    assert rows["dev", "beam 3"]["wer"] == saved["grid"][0]["wer"] and rows["dev", "beam 3 + LM"]["wer"] == saved["dev_wer"]
    assert all(r["ms_per_sentence"] > 0 and r["words"] > 0 for r in rows.values())
    lm_row = rows["test", "beam 3 + LM"]
    assert lm_row["errors_removed"] == pytest.approx(1 - lm_row["errors"] / max(rows["test", "beam 3"]["errors"], 1))
    assert "| test | beam 3 + LM |" in proc.stdout
    lm = load_lm(lm_path)
    assert lm.weights == {"lm_weight": saved["lm_weight"], "word_bonus": saved["word_bonus"]}

    model, vocab, _, data_cfg, manifest = load_for_eval(ck, "", 4, 0, splits=("dev",))
    acc = make_accelerator()
    model.to(acc.device).eval()
    plain = decode_split(acc, model, vocab, data_cfg, "dev", "phoenix2014", 3)
    zero = decode_split(acc, model, vocab, data_cfg, "dev", "phoenix2014", 3, lm=lm, lm_weight=0.0, word_bonus=0.0)
    assert zero == plain
    strong = decode_split(acc, model, vocab, data_cfg, "dev", "phoenix2014", 3, lm=lm, lm_weight=5.0, word_bonus=0.0)
    assert strong[1] == plain[1] and strong[0].keys() == plain[0].keys()


def test_tune_lm_report_runs_the_model_on_dev_once(tmp_path, tiny_data, monkeypatch, capsys):
    """--report decodes the dev log-probs the tuning kept: the model's pass over dev runs once, over test once."""
    import importlib.util

    import cslr.recipes.lm as lm_recipe
    from conftest import REPO, save_untrained

    ck = save_untrained(tiny_data, tmp_path, randomise=True)
    lm_path = tmp_path / "lm.arpa"
    sentences, protocol = lm_recipe.dataset_sentences(tiny_data)
    lm_recipe.train_lm(sentences, 2, lm_path, protocol)
    passes = []
    real = lm_recipe.cache_log_probs

    def counted(checkpoint, data="", split="dev", *args, **kwargs):
        passes.append(split)
        return real(checkpoint, data, split, *args, **kwargs)

    monkeypatch.setattr(lm_recipe, "cache_log_probs", counted)
    spec = importlib.util.spec_from_file_location("launch_tune_lm", REPO / "launch" / "tune_lm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--checkpoint", str(ck), "--lm", str(lm_path), "--beam", "2", "--lm_weights", "0,0.5",
                     "--word_bonuses", "0", "--num_workers", "0", "--report"]) == 0
    assert passes == ["dev", "test"]
    saved = json.loads(weights_path(lm_path).read_text())
    rows = {(r["split"], r["decoder"]): r for r in json.loads((ck.parent / "lm_report.json").read_text())["rows"]}
    assert rows["dev", "beam 2"]["wer"] == saved["grid"][0]["wer"] and rows["dev", "beam 2 + LM"]["wer"] == saved["dev_wer"]
    assert "| test | beam 2 + LM |" in capsys.readouterr().out


def test_lm_flags_of_evaluate_compare_and_the_trainer(tmp_path, tiny_data):
    """--lm on evaluate.py, compare.py and the trainer's final test: weights 0 give plain beam search's WER exactly;
    the LM and its weights are recorded; a bad --lm stops the trainer before any training, naming the file."""
    from conftest import save_untrained

    ck = save_untrained(tiny_data, tmp_path / "ck", randomise=True)
    lm_path = tmp_path / "lm.arpa"
    check_ok(run_cmd([sys.executable, "launch/train_lm.py", "--data", str(tiny_data), "--out", str(lm_path)]))
    common = [sys.executable, "launch/evaluate.py", "--checkpoint", str(ck), "--split", "dev", "--beam", "3",
              "--num_workers", "0"]
    check_ok(run_cmd([*common, "--out", str(tmp_path / "plain")]))
    check_ok(run_cmd([*common, "--out", str(tmp_path / "zero"), "--lm", str(lm_path), "--lm_weight", "0",
                      "--word_bonus", "0"]))
    fused = run_cmd([*common, "--out", str(tmp_path / "fused"), "--lm", str(lm_path), "--lm_weight", "2",
                     "--word_bonus", "0.5"])
    check_ok(fused)
    plain, zero, strong = (json.loads((tmp_path / d / "dev_wer.json").read_text()) for d in ("plain", "zero", "fused"))
    assert zero["wer"] == plain["wer"] and plain["lm"] is None and zero["lm"] == str(lm_path)
    assert strong["lm_weight"] == 2.0 and strong["word_bonus"] == 0.5 and "LM " in fused.stdout
    # no weights given and none tuned: a clear error naming the LM
    untuned = run_cmd([*common, "--out", str(tmp_path / "x"), "--lm", str(lm_path)])
    assert untuned.returncode == 2 and "no fusion weights" in untuned.stderr and "tune_lm.py" in untuned.stderr

    out = tmp_path / "compare"
    check_ok(run_cmd([sys.executable, "launch/compare.py", "--model", f"m={ck}", "--out", str(out), "--beam", "3",
                      "--lm", str(lm_path), "--lm_weight", "0", "--word_bonus", "0", "--image_size", "32",
                      "--frames", "8", "--repeats", "1", "--batch", "2", "--num_workers", "0", "--threads", "1",
                      "--no_onnx"]))
    compared = json.loads((out / "compare.json").read_text())
    assert compared["models"]["m"]["dev_wer"] == plain["wer"] and compared["settings"]["lm"] == str(lm_path)

    train = [sys.executable, "launch/teacher.py", "--data", str(tiny_data), "--arch", "teacher_tiny", "--image_size",
             "32", "--batch_size", "4", "--num_workers", "0", "--epochs", "1", "--max_steps", "2", "--report_to",
             "none", "--beam_width", "3"]
    bad = run_cmd([*train, "--output_dir", str(tmp_path / "bad"), "--lm", str(tmp_path / "none.arpa")])
    assert bad.returncode == 2 and "none.arpa" in bad.stderr and not (tmp_path / "bad" / "checkpoints").exists()
    check_ok(run_cmd([*train, "--output_dir", str(tmp_path / "run"), "--lm", str(lm_path), "--lm_weight", "1.5",
                      "--word_bonus", "0"]))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["test_lm"] == {"path": str(lm_path), "lm_weight": 1.5, "word_bonus": 0.0}
    assert res["test_wer"] is not None
