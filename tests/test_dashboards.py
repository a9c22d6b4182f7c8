"""Dashboards (issue #16, section 3): a real short run of the tiny teacher recipe with W&B offline and TensorBoard,
read back from the offline W&B run file (and the table files it points at) and from the TensorBoard event files:
the evaluation tables (predictions, worst N, fixed sample of N, per-signer WER, most frequent substitutions) and
S/D/I at every evaluation, throughput, peak memory, data wait, loss parts, lr, gradient norm, skipped batches, the
run summary and the best checkpoint as an artifact reference; the KD loss parts from an in-process student step;
and progress output that suits a log file (plain periodic lines, no carriage return, when stdout is no terminal).
"""

from __future__ import annotations

import collections
import io
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, check_ok, clean_env, run_cmd
from test_trainer import _in_process_trainer, tiny_flags

TEACHER = str(REPO / "launch" / "teacher.py")
ROWS = 3  # --dashboard_rows
TABLES = ("predictions", "worst", "sample", "per_signer", "confusion")
TRAIN_SCALARS = ("train/loss", "train/loss_ctc", "train/loss_ctc_rgb", "train/loss_ctc_pose", "train/lr",
                 "train/grad_norm", "train/samples_per_s", "train/frames_per_s", "train/tokens_per_s",
                 "train/data_wait_fraction", "train/skipped_batches", "train/skipped_samples", "system/peak_rss_mb",
                 "epoch/samples_per_s", "epoch/frames_per_s", "epoch/tokens_per_s", "epoch/data_wait_fraction",
                 "epoch/skipped_batches")
EVAL_SCALARS = ("wer", "sub", "del", "ins")


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """2 epochs of the tiny teacher, both trackers, W&B offline; stdout a pipe, as in a Slurm job."""
    root = tmp_path_factory.mktemp("dash")
    out = root / "run"
    flags = tiny_flags(tiny_data, out, "--epochs", "2", "--report_to", "all", "--run_name", "dash",
                       "--log_every_steps", "2", "--progress_every_steps", "3", "--dashboard_rows", str(ROWS))
    t0 = time.perf_counter()
    proc = run_cmd([sys.executable, TEACHER, *flags], env=clean_env(WANDB_DIR=str(root / "wandb-dir")), timeout=900)
    check_ok(proc)
    print(f"dashboard run: {time.perf_counter() - t0:.1f} s")
    return out, proc, json.loads((out / "results.json").read_text())


# ------------------------------------------------------------------------------------------- readers
def wandb_run(out: Path) -> tuple[list, Path]:
    """(records of the offline run file, the run's files folder)."""
    from wandb_reader import read_records

    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return read_records(files[0]), files[0].parent / "files"


def wandb_history(records) -> list[dict]:
    """Every history row as {key: value}; a table is a dict of its nested keys (`_type`, `path`, `nrows`, ...)."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for it in r.history.item:
            keys = [it.key] if it.key else list(it.nested_key)
            d = row
            for k in keys[:-1]:
                d = d.setdefault(k, {})
            d[keys[-1]] = json.loads(it.value_json)
        rows.append(row)
    return rows


def wandb_table(files: Path, value: dict) -> tuple[list, list]:
    assert value["_type"] == "table-file", value
    t = json.loads((files / value["path"]).read_text())
    return t["columns"], t["data"]


def tensorboard(out: Path) -> tuple[dict, dict]:
    """({scalar tag: [(step, value)]}, {text tag: [(step, markdown)]}) over every event file of the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, texts = collections.defaultdict(list), collections.defaultdict(list)
    runs = {p.parent for p in (out / "tensorboard").rglob("events.out.tfevents.*")}
    assert runs
    for r in runs:
        ea = EventAccumulator(str(r), size_guidance={"scalars": 0, "tensors": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            scalars[tag] += [(e.step, e.value) for e in ea.Scalars(tag)]
        for tag in ea.Tags()["tensors"]:
            if tag.endswith("/text_summary"):
                texts[tag[: -len("/text_summary")]] += [(e.step, e.tensor_proto.string_val[0].decode())
                                                        for e in ea.Tensors(tag)]
    return scalars, texts


def markdown_rows(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return cells[0], cells[2:]


def dev_evaluations(res: dict) -> list[dict]:
    return [h for h in res["history"] if h.get("dev_wer") is not None]


# ------------------------------------------------------------------------------------------- W&B
def check_tables(tables: dict, scalars: dict, n_videos: int, signers: dict | None = None) -> None:
    """One evaluation's tables against its scalars: every video once, S/D/I add up, worst first, N rows."""
    from cslr.eval.wer import alignment
    from cslr.trainer.dashboard import CONFUSION_COLUMNS, PREDICTION_COLUMNS, SIGNER_COLUMNS

    cols, preds = tables["predictions"]
    assert cols == PREDICTION_COLUMNS and len(preds) == n_videos == len({p[0] for p in preds})
    col = {c: i for i, c in enumerate(cols)}
    for k, name in (("sub", "sub"), ("del", "del"), ("ins", "ins")):
        assert sum(p[col[name]] for p in preds) == scalars[k], k
    errors = sorted((p[col["errors"]] for p in preds), reverse=True)
    worst = tables["worst"][1]
    assert [w[col["errors"]] for w in worst] == errors[:ROWS]
    assert len(tables["sample"][1]) == ROWS and {s[0] for s in tables["sample"][1]} <= {p[0] for p in preds}
    # per-signer WER: the table, the scalars and (for test) results.json agree
    scols, srows = tables["per_signer"]
    assert scols == SIGNER_COLUMNS and sum(r[1] for r in srows) == n_videos
    for r in srows:
        assert scalars[f"signer_wer/{r[0]}"] == pytest.approx(r[-1], abs=0.01)
        if signers is not None:
            assert r[-1] == pytest.approx(signers[r[0]]["wer"], abs=0.01)
    # the most frequent substitutions, recounted from the predictions' reference and hypothesis
    pairs = collections.Counter((a, b) for p in preds for op, a, b in
                                alignment(p[col["reference"]].split(), p[col["hypothesis"]].split()) if op == "S")
    ccols, conf = tables["confusion"]
    assert ccols == CONFUSION_COLUMNS and len(conf) == min(ROWS, len(pairs))
    assert [c[2] for c in conf] == sorted(pairs.values(), reverse=True)[:ROWS]
    assert all(pairs[(c[0], c[1])] == c[2] for c in conf)


def test_wandb_evaluation_tables_and_sdi_at_every_evaluation(run):
    out, _, res = run
    records, files = wandb_run(out)
    rows = wandb_history(records)
    evals = dev_evaluations(res)
    dev_rows = [r for r in rows if "dev/predictions" in r]
    assert len(dev_rows) == len(evals) == 2
    samples = []
    for r, h in zip(dev_rows, evals):
        assert all(f"dev/{t}" in r for t in TABLES), sorted(r)
        scalars = {k[len("dev/"):]: v for k, v in r.items() if k.startswith("dev/")}
        assert (scalars["wer"], scalars["sub"], scalars["del"], scalars["ins"]) == pytest.approx(
            (h["dev_wer"], h["dev_sub"], h["dev_del"], h["dev_ins"]))
        tables = {t: wandb_table(files, r[f"dev/{t}"]) for t in TABLES}
        check_tables(tables, scalars, h["dev_videos"])
        samples.append([s[0] for s in tables["sample"][1]])
    assert samples[0] == samples[1]  # a fixed sample: the same videos at every evaluation
    (test_row,) = [r for r in rows if "test/predictions" in r]
    scalars = {k[len("test/"):]: v for k, v in test_row.items() if k.startswith("test/")}
    assert (scalars["wer"], scalars["sub"], scalars["del"], scalars["ins"]) == pytest.approx(
        (res["test_wer"], res["test_sub"], res["test_del"], res["test_ins"]))
    check_tables({t: wandb_table(files, test_row[f"test/{t}"]) for t in TABLES}, scalars,
                 res["test_coverage"]["videos_decoded"], res["test_per_signer"])


def test_wandb_training_scalars(run):
    out, _, res = run
    records, _ = wandb_run(out)
    rows = wandb_history(records)
    seen = {k for r in rows for k in r}
    expected = set(TRAIN_SCALARS) | ({"system/peak_cuda_mb"} if torch.cuda.is_available() else set())
    assert expected <= seen, sorted(expected - seen)
    steps = [r for r in rows if "train/samples_per_s" in r]
    assert len(steps) >= 3  # step 1, then every 2 steps
    for r in steps:
        assert r["train/samples_per_s"] > 0 and r["train/frames_per_s"] > r["train/samples_per_s"]
        assert 0 < r["train/tokens_per_s"] <= r["train/frames_per_s"]  # the head sees the downsampled frames
        assert 0 <= r["train/data_wait_fraction"] <= 1 and r["system/peak_rss_mb"] > 50
        assert r["train/skipped_batches"] == res["nonfinite_steps_skipped"] == 0
        # the loss is the main CTC plus aux_weight times each auxiliary head's
        parts = r["train/loss_ctc"] + 0.5 * (r["train/loss_ctc_rgb"] + r["train/loss_ctc_pose"])
        assert r["train/loss"] == pytest.approx(parts, rel=1e-4)


def test_wandb_summary_and_best_checkpoint_artifact(run):
    out, _, res = run
    records, _ = wandb_run(out)
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({(it.key or "/".join(it.nested_key)): json.loads(it.value_json) for it in r.summary.update})
    assert summary["best_dev_wer"] == pytest.approx(res["best_dev_wer"])
    assert summary["best_epoch"] == res["best_epoch"] and summary["test_wer"] == pytest.approx(res["test_wer"])
    uri = (out / "best_model.pth").resolve().as_uri()
    assert summary["best_checkpoint"] == uri
    arts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"]
    assert len(arts) == 1 and "best" in arts[0].aliases
    (entry,) = arts[0].manifest.contents
    assert entry.path == "best_model.pth" and entry.ref == uri and entry.size == (out / "best_model.pth").stat().st_size


# ------------------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_holds_the_same(run):
    out, _, res = run
    scalars, texts = tensorboard(out)
    expected = set(TRAIN_SCALARS) | {f"{s}/{k}" for s in ("dev", "test") for k in EVAL_SCALARS}
    assert expected <= set(scalars), sorted(expected - set(scalars))
    evals = dev_evaluations(res)
    assert [v for _, v in sorted(scalars["dev/sub"])] == [h["dev_sub"] for h in evals]
    # the tables as markdown text, one per evaluation, at the evaluation's step
    for t in TABLES:
        assert sorted(s for s, _ in texts[f"dev/{t}"]) == [h["step"] for h in evals], t
        assert len(texts[f"test/{t}"]) == 1, t
    for step, text in texts["dev/predictions"]:
        cols, rows = markdown_rows(text)
        assert cols[:4] == ["video_id", "signer", "reference", "hypothesis"]
        (h,) = [h for h in evals if h["step"] == step]
        assert len(rows) == h["dev_videos"] and sum(int(r[4]) for r in rows) == h["dev_sub"]
        assert len(markdown_rows(dict(texts["dev/worst"])[step])[1]) == ROWS
    _, signer_rows = markdown_rows(texts["test/per_signer"][0][1])
    assert {r[0]: float(r[-1]) for r in signer_rows} == pytest.approx(
        {s: v["wer"] for s, v in res["test_per_signer"].items()}, abs=0.01)
    for s, v in res["test_per_signer"].items():
        assert scalars[f"test/signer_wer/{s}"][0][1] == pytest.approx(v["wer"], abs=1e-3)
    assert markdown_rows(texts["dev/confusion"][0][1])[0] == ["reference", "hypothesis", "count",
                                                             "share_of_substitutions"]
    # the run summary and the best checkpoint
    assert scalars["summary/best_dev_wer"][0][1] == pytest.approx(res["best_dev_wer"], abs=1e-4)
    assert scalars["summary/best_epoch"][0][1] == res["best_epoch"]
    assert scalars["summary/test_wer"][0][1] == pytest.approx(res["test_wer"], abs=1e-4)
    assert (out / "best_model.pth").resolve().as_uri() in texts["summary/run"][0][1]


# ------------------------------------------------------------------------------------------- progress
def test_training_progress_in_a_log_file_is_plain_lines(run):
    """stdout is a pipe here (as Slurm's slurm-*.out): a line every 3 batches, no redrawn bar anywhere."""
    out, proc, res = run
    assert "\r" not in proc.stdout and "\r" not in proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch 1/2: ")]
    assert len(lines) >= 2, proc.stdout[-3000:]
    assert "3/" in lines[0] and "batches" in lines[0] and "batches/s" in lines[0] and "loss " in lines[0]
    assert any(ln.startswith("epoch 2/2: ") for ln in proc.stdout.splitlines())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_by_count_and_by_time_and_a_bar_on_a_terminal():
    from cslr.io import Progress

    log = io.StringIO()  # not a terminal
    p = Progress(10, desc="job", unit="videos", every_s=3600, every_n=4, stream=log)
    for i in range(10):
        p.update(1, done=i)
    p.close()
    lines = log.getvalue().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["job: 4/10 videos (40%)", "job: 8/10 videos (80%)",
                                                  "job: 10/10 videos (100%)"]
    assert "\r" not in log.getvalue() and lines[0].endswith("done 3")
    log = io.StringIO()
    p = Progress(None, desc="timed", every_s=0.05, stream=log)
    for _ in range(4):
        time.sleep(0.06)
        p.update(1)
    p.close()
    assert len(log.getvalue().splitlines()) == 4 and "\r" not in log.getvalue()
    log = io.StringIO()  # a short pass that prints only its end off a terminal, or nothing (final=False)
    p = Progress(3, desc="eval", stream=log, final=False)
    for _ in range(3):
        p.update(1)
    p.close()
    assert log.getvalue() == ""
    term = _Terminal()  # a terminal: tqdm's bar, redrawn with carriage returns
    p = Progress(3, desc="bar", stream=term)
    for _ in range(3):
        p.update(1)
    p.close()
    assert "\r" in term.getvalue() and "bar" in term.getvalue()


def test_progress_as_a_context_manager_closes_on_leaving_the_block():
    """`with Progress(...) as bar:` (convert_corpus): the last line is printed and the bar closed at the block's end,
    also when the block raises; a later close() prints nothing more."""
    from cslr.io import Progress

    log = io.StringIO()
    with Progress(5, 1, desc="convert", unit="video", every_s=3600, stream=log) as bar:
        bar.update(2)
        assert log.getvalue() == ""
    assert log.getvalue().splitlines()[0].startswith("convert: 3/5 video (60%)")
    bar.close()
    assert len(log.getvalue().splitlines()) == 1
    term = _Terminal()
    with pytest.raises(RuntimeError):
        with Progress(3, desc="bar", stream=term) as bar:
            bar.update(1)
            raise RuntimeError("stop")
    assert bar.bar.disable  # tqdm's close() disables the bar


# ------------------------------------------------------------------------------------------- KD loss parts
def test_kd_loss_parts_reach_both_trackers(tiny_data, tmp_path, monkeypatch):
    """An in-process student step with online distillation: CTC, each auxiliary head's CTC and KL, KD's KL."""
    from cslr.eval.wer import score
    from cslr.models.checkpoint import build_model
    from cslr.trainer.config import ModelConfig
    from cslr.trainer.kd import make_kd_loss

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("CSLR_CPU_THREADS", "1")  # as the subprocess runs (clean_env): no thread contention
    threads = torch.get_num_threads()
    out = tmp_path / "o"
    tr = _in_process_trainer(tiny_data, out, max_steps=2, report_to="all", log_every_steps=1)
    teacher, _ = build_model(ModelConfig(arch="teacher_tiny"), len(tr.vocab))
    teacher.eval().requires_grad_(False)
    tr.loss_fn = make_kd_loss(0.5, 2.0, teacher=teacher, aux_weight=0.5)
    out.mkdir()
    tr.acc.init_trackers("kd", init_kwargs={"wandb": {"dir": str(out)}})
    # hypotheses with known substitutions (the tiny model still deletes everything): A->B twice, C->D once
    refs = {"v1": ("s1", ["A", "C", "E"]), "v2": ("s1", ["A", "X"]), "v3": ("s2", ["E", "F"])}
    hyps = {"v1": ["B", "D", "E"], "v2": ["B", "X", "Y"], "v3": []}
    try:
        tr.train()
        tr.dashboard.log_evaluation("check", hyps, refs, score(hyps, refs, "plain"), "plain", tr.state.global_step + 1)
    finally:
        tr.acc.end_training()
        torch.set_num_threads(threads)
    parts = {f"train/loss_{k}" for k in ("ctc", "ctc_rgb", "ctc_pose", "kd", "kd_rgb", "kd_pose")}
    scalars, texts = tensorboard(out)
    assert parts <= set(scalars), sorted(parts - set(scalars))
    assert [s for s, _ in scalars["train/loss_kd"]] == [1, 2] and all(v >= 0 for _, v in scalars["train/loss_kd"])
    assert {f"dev/{t}" for t in TABLES} <= set(texts)
    records, files = wandb_run(out)
    rows = wandb_history(records)
    assert parts <= {k for r in rows for k in r}
    assert any("dev/predictions" in r for r in rows)
    (check,) = [r for r in rows if "check/confusion" in r]
    expected = [["A", "B", 2, 66.67], ["C", "D", 1, 33.33]]
    assert wandb_table(files, check["check/confusion"])[1] == expected
    assert wandb_table(files, check["check/per_signer"])[1] == [["s1", 2, 5, 3, 0, 1, 80.0], ["s2", 1, 2, 0, 2, 0, 100.0]]
    worst = wandb_table(files, check["check/worst"])[1]
    assert [w[0] for w in worst] == ["v2", "v3", "v1"] and worst[2][2:4] == ["A C E", "B D E"]  # 2 errors each
    assert (check["check/sub"], check["check/del"], check["check/ins"]) == (3, 2, 1)
    _, conf = markdown_rows(texts["check/confusion"][0][1])
    assert conf == [[str(v) for v in row] for row in expected]
