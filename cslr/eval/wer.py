"""Word error rate with the official PHOENIX scoring rules, in pure Python (no sclite needed).

    python launch/score.py --hyp dev.ctm --ref phoenix2014-groundtruth-dev.stm [--protocol phoenix2014]

Protocols:

- ``phoenix2014``: the hypothesis goes through the rules of the dataset's ``evaluatePhoenix2014.sh``
  (a sed chain run on the CTM, one gloss per line); the reference STM is used as it is. A sentence with
  nothing left is scored as the single word ``[EMPTY]`` (one substitution, or one insertion against an
  empty reference), as the script's awk step does.
- ``phoenix2014T``: every ``__X__`` token (``__ON__``, ``__OFF__``, ``__EMOTION__``, ...) is removed from
  hypothesis and reference; an emptied hypothesis is also scored as ``[EMPTY]``.
- ``plain``: tokens compared as given, case-sensitively; an empty hypothesis is all deletions.

The alignment is sclite's, not plain Levenshtein: sclite minimises 4*S + 3*(D + I) (substitution 4,
insertion and deletion 3) and, for the phoenix protocols, compares words case-insensitively (no ``-s``).
Plain Levenshtein (jiwer, rapidfuzz) picks a different S/D/I split on ties (reference ``A B``, hypothesis
``B C``: jiwer 2 S, sclite 1 D + 1 I) and can even find fewer errors in total, so the counts would not
match the official figures. The backtrace below prefers diagonal, then insertion, then deletion; that
reproduced sclite's per-sentence counts on 3,000 random sentence pairs (see tests/test_wer.py).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cslr.io import atomic_write_bytes

PROTOCOLS = ("phoenix2014", "phoenix2014T", "plain")
EMPTY = "[EMPTY]"
STM_END = "1.79769e+308"  # the end time of every segment of the official STM files

# sclite's alignment weights (sclite -f 0 default).
SUB_COST, INS_COST, DEL_COST = 4, 3, 3

# evaluatePhoenix2014.sh, in the script's order, as it acts on one CTM line whose last field is the gloss.
# The script's rules that join words across a line (WIE AUSSEHEN -> WIE-AUSSEHEN, single letters to
# A+B, removal of repeated words) never fire on a one-gloss-per-line CTM, so they are left out.
_PHOENIX2014_RULES: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (r"loc-", ""),
        (r"cl-", ""),
        (r"qu-", ""),
        (r"poss-", ""),
        (r"lh-", ""),
        (r"S0NNE", "SONNE"),
        (r"HABEN2", "HABEN"),
        (r"__EMOTION__", ""),
        (r"__PU__", ""),
        (r"__LEFTHAND__", ""),
        (r"ZEIGEN$", "ZEIGEN-BILDSCHIRM"),  # sed 's,ZEIGEN$,...': the gloss ends the CTM line
        (r"([A-Z][A-Z])RAUM", r"\1"),  # NORDRAUM -> NORD, SUEDOSTRAUM -> SUEDOST; RAUM, TRAUM stay
        (r"-PLUSPLUS", ""),
    )
)
# grep -v: lines that still contain these are dropped.
_PHOENIX2014_DROP = ("__LEFTHAND__", "__EPENTHESIS__", "__EMOTION__")
_SPECIAL_TOKEN = re.compile(r"__[^\s_]+(?:_[^\s_]+)*__")  # __ON__, __OFF__, __EMOTION__, ...


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown scoring protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def _phoenix2014_gloss(gloss: str) -> str:
    for pattern, repl in _PHOENIX2014_RULES:
        gloss = pattern.sub(repl, gloss)
    return gloss


def _phoenix2014(glosses: list[str]) -> list[str]:
    """evaluatePhoenix2014.sh on one gloss per line: rewrite each gloss, then drop the lines it empties or rejects."""
    out = [_phoenix2014_gloss(g) for g in glosses]
    return [g for g in out if g.strip() and not any(d in g for d in _PHOENIX2014_DROP)]


def _drop_special(glosses: list[str]) -> list[str]:
    return [g for g in glosses if not _SPECIAL_TOKEN.fullmatch(g)]


def normalize_hypothesis(glosses: list[str], protocol: str = "phoenix2014") -> list[str]:
    """The hypothesis as the protocol's official script hands it to sclite.

    For the phoenix protocols an emptied hypothesis becomes ``["[EMPTY]"]``; for ``plain`` it stays ``[]``.
    """
    _check_protocol(protocol)
    if protocol == "plain":
        return list(glosses)
    out = _phoenix2014(glosses) if protocol == "phoenix2014" else _drop_special(glosses)
    return out or [EMPTY]


def normalize_reference(glosses: list[str], protocol: str = "phoenix2014") -> list[str]:
    """The reference as the protocol scores it: unchanged for phoenix2014 and plain, ``__X__`` removed for 2014-T."""
    _check_protocol(protocol)
    return _drop_special(glosses) if protocol == "phoenix2014T" else list(glosses)


def reference_from_annotation(annotation: str, protocol: str = "phoenix2014") -> list[str]:
    """Reference glosses from a raw corpus annotation (``*.corpus.csv`` ``annotation`` column, ``gloss.txt``).

    The official PHOENIX-2014 dev/test STM files are exactly the corpus annotations split on white space
    (double spaces collapsed); the signer column is lower-cased (``Signer05`` -> ``signer05``, see
    :func:`stm_signer`). For phoenix2014 the hypothesis rules are applied as well: they change no dev or
    test row (those hold only ``__ON__``, ``__OFF__`` and ``ZEIGEN-BILDSCHIRM`` among the quirks), and they
    make references from train-style annotations (``loc-REGION``, ``NORDRAUM``) comparable with a
    normalised hypothesis. An annotation left empty gives ``[]`` (never ``[EMPTY]``).
    """
    _check_protocol(protocol)
    glosses = annotation.split()
    if protocol == "phoenix2014":
        return _phoenix2014(glosses)
    return normalize_reference(glosses, protocol)


def stm_signer(signer: str) -> str:
    """The signer name as the official STM writes it (``Signer05`` -> ``signer05``)."""
    return signer.lower()


# ----------------------------------------------------------------------------------------------- files


def write_ctm(path: str | os.PathLike, hyps: dict[str, list[str]], frame_dur: float = 0.01) -> None:
    """One gloss per line, ``id 1 start dur GLOSS``, ids sorted, times increasing within an id.

    sclite walks CTM and STM in step, so both must list the ids in the same order: :func:`write_stm`
    sorts them the same way. An empty hypothesis writes no line (sclite then counts all deletions).
    """
    lines = []
    for utt in sorted(hyps):
        _check_token(utt, "id")
        for k, gloss in enumerate(hyps[utt]):
            _check_token(gloss, f"gloss of {utt}")
            lines.append(f"{utt} 1 {k * frame_dur:.2f} {frame_dur:.2f} {gloss}\n")
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))


def write_stm(path: str | os.PathLike, refs: dict[str, tuple[str, list[str]]]) -> None:
    """The official groundtruth format: ``id 1 signer 0.0 1.79769e+308 GLOSS ...``, ids sorted."""
    lines = []
    for utt in sorted(refs):
        signer, glosses = refs[utt]
        _check_token(utt, "id")
        _check_token(signer, f"signer of {utt}")
        for g in glosses:
            _check_token(g, f"gloss of {utt}")
        lines.append(" ".join([utt, "1", signer, "0.0", STM_END, *glosses]) + "\n")
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))


def _check_token(token: str, what: str) -> None:
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"{what} {token!r} is empty or contains white space")


def _data_lines(path: Path):
    """(line number, fields) of the non-empty, non-comment (``;;``) lines of a CTM/STM file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is not part of the first id
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if fields and not fields[0].startswith(";;"):
            yield lineno, fields


def _parse_float(value: str, path: Path, lineno: int, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {what} {value!r} is not a number") from None
    if not math.isfinite(x) and value != STM_END:
        raise ValueError(f"{path}:{lineno}: {what} {value!r} is not a finite number")  # nan would reorder glosses
    return x


def read_ctm(path: str | os.PathLike) -> dict[str, list[str]]:
    """``id -> glosses`` in time order (``id channel start dur word [confidence]`` lines)."""
    path = Path(path)
    timed: dict[str, list[tuple[float, int, str]]] = {}
    for lineno, f in _data_lines(path):
        if len(f) not in (5, 6):
            raise ValueError(f"{path}:{lineno}: a CTM line needs 5 or 6 fields (id channel start dur word [conf]), got {len(f)}")
        start = _parse_float(f[2], path, lineno, "start time")
        _parse_float(f[3], path, lineno, "duration")
        timed.setdefault(f[0], []).append((start, lineno, f[4]))
    return {utt: [w for _, _, w in sorted(words)] for utt, words in timed.items()}


def read_stm(path: str | os.PathLike) -> dict[str, tuple[str, list[str]]]:
    """``id -> (signer, glosses)`` (``id channel speaker start end [<label>] words ...`` lines)."""
    path = Path(path)
    refs: dict[str, tuple[str, list[str]]] = {}
    for lineno, f in _data_lines(path):
        if len(f) < 5:
            raise ValueError(f"{path}:{lineno}: an STM line needs at least 5 fields (id channel speaker start end words...), got {len(f)}")
        _parse_float(f[3], path, lineno, "start time")
        _parse_float(f[4], path, lineno, "end time")
        words = f[5:]
        if words and words[0].startswith("<") and words[0].endswith(">"):  # optional segment label
            words = words[1:]
        if f[0] in refs:
            raise ValueError(f"{path}:{lineno}: id {f[0]!r} appears twice (one segment per id expected)")
        refs[f[0]] = (f[2], words)
    return refs


# -------------------------------------------------------------------------------------------- scoring


def alignment(ref: list[str], hyp: list[str], ignore_case: bool = True) -> list[tuple[str, str | None, str | None]]:
    """sclite's minimum-cost alignment as (op, reference word, hypothesis word) in sentence order; op is "C"
    (correct), "S" (substitution), "D" (deletion: no hypothesis word) or "I" (insertion: no reference word).
    Words keep their case; `ignore_case` only decides which are equal."""
    r, h = ([w.lower() for w in ref], [w.lower() for w in hyp]) if ignore_case else (ref, hyp)
    n, m = len(r), len(h)
    # cost[i][j]: cheapest alignment of ref[:i] with hyp[:j].
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        cost[0][j] = j * INS_COST
    for i in range(1, n + 1):
        row, prev = cost[i], cost[i - 1]
        row[0] = i * DEL_COST
        for j in range(1, m + 1):
            diag = prev[j - 1] + (0 if r[i - 1] == h[j - 1] else SUB_COST)
            row[j] = min(diag, row[j - 1] + INS_COST, prev[j] + DEL_COST)
    # Backtrace from the end; sclite's choice among equal-cost steps: diagonal, insertion, deletion.
    i, j = n, m
    ops = []
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (0 if r[i - 1] == h[j - 1] else SUB_COST):
            ops.append(("C" if r[i - 1] == h[j - 1] else "S", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif j and cost[i][j] == cost[i][j - 1] + INS_COST:
            ops.append(("I", None, hyp[j - 1]))
            j -= 1
        else:
            ops.append(("D", ref[i - 1], None))
            i -= 1
    ops.reverse()
    return ops


def align_counts(ref: list[str], hyp: list[str], ignore_case: bool = True) -> tuple[int, int, int, int]:
    """(correct, substitutions, deletions, insertions) of sclite's minimum-cost alignment."""
    ops = [op for op, _, _ in alignment(ref, hyp, ignore_case)]
    return ops.count("C"), ops.count("S"), ops.count("D"), ops.count("I")


@dataclass
class WERResult:
    """Corpus-level error counts; ``wer`` and the per-signer ``wer`` are percentages."""

    wer: float
    sub: int
    dele: int
    ins: int
    num_ref_words: int
    num_sentences: int
    protocol: str
    per_signer: dict[str, dict] = field(default_factory=dict)
    missing_hyps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def format_table(self) -> str:
        """A per-signer table in the spirit of sclite's ``sum`` report, plus the corpus line."""
        header = f"{'signer':<12} {'#snt':>5} {'#wrd':>6} {'sub':>6} {'del':>6} {'ins':>6} {'WER %':>7}"
        rows = [header, "-" * len(header)]
        for signer in sorted(self.per_signer):
            s = self.per_signer[signer]
            rows.append(
                f"{signer:<12} {s['sentences']:>5} {s['n']:>6} {s['sub']:>6} {s['del']:>6} {s['ins']:>6} {s['wer']:>7.2f}"
            )
        rows.append("-" * len(header))
        rows.append(
            f"{'all':<12} {self.num_sentences:>5} {self.num_ref_words:>6} {self.sub:>6} {self.dele:>6} {self.ins:>6} {self.wer:>7.2f}"
        )
        return "\n".join(rows)


def _percent(errors: int, words: int) -> float:
    if words == 0:
        return 0.0 if errors == 0 else math.inf
    return 100.0 * errors / words


def score(
    hyps: dict[str, list[str]],
    refs: dict[str, tuple[str, list[str]]],
    protocol: str = "phoenix2014",
) -> WERResult:
    """Corpus WER = sum(S + D + I) / sum(reference words), with the protocol's normalisation.

    Args:
        hyps: id -> raw hypothesis glosses (normalised here, as the official script does).
        refs: id -> (signer, reference glosses), e.g. from :func:`read_stm`.
        protocol: one of ``PROTOCOLS``.

    A reference id with no hypothesis counts as all deletions and is listed in ``missing_hyps``;
    a hypothesis id with no reference is an error (sclite refuses it too).
    """
    _check_protocol(protocol)
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ValueError(f"{len(extra)} hypothesis ids have no reference, e.g. {extra[:3]}")
    ignore_case = protocol != "plain"
    totals = {"sub": 0, "del": 0, "ins": 0, "n": 0}
    per_signer: dict[str, dict] = {}
    missing = []
    for utt in sorted(refs):
        signer, ref_words = refs[utt]
        ref = normalize_reference(list(ref_words), protocol)
        if utt in hyps:
            hyp = normalize_hypothesis(list(hyps[utt]), protocol)
        else:
            missing.append(utt)
            hyp = []
        _, sub, dele, ins = align_counts(ref, hyp, ignore_case)
        s = per_signer.setdefault(signer, {"sub": 0, "del": 0, "ins": 0, "n": 0, "sentences": 0})
        for counts in (s, totals):
            counts["sub"] += sub
            counts["del"] += dele
            counts["ins"] += ins
            counts["n"] += len(ref)
        s["sentences"] += 1
    for s in per_signer.values():
        s["wer"] = _percent(s["sub"] + s["del"] + s["ins"], s["n"])
    return WERResult(
        wer=_percent(totals["sub"] + totals["del"] + totals["ins"], totals["n"]),
        sub=totals["sub"],
        dele=totals["del"],
        ins=totals["ins"],
        num_ref_words=totals["n"],
        num_sentences=len(refs),
        protocol=protocol,
        per_signer=per_signer,
        missing_hyps=missing,
    )


@dataclass
class SentenceScore:
    """One sentence as scored: the normalised reference and hypothesis, its errors and its substituted pairs."""

    utt: str
    signer: str
    ref: list[str]
    hyp: list[str]
    sub: int
    dele: int
    ins: int
    substitutions: list[tuple[str, str]]  # (reference word, hypothesis word) of each substitution

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def wer(self) -> float:
        return _percent(self.errors, len(self.ref))


def sentence_scores(hyps: dict[str, list[str]], refs: dict[str, tuple[str, list[str]]],
                    protocol: str = "phoenix2014") -> list[SentenceScore]:
    """Every reference sentence (sorted ids) scored as :func:`score` scores it: the same normalisation and
    alignment, so the sums of the sentences' S, D, I are the corpus counts. A missing hypothesis is empty."""
    _check_protocol(protocol)
    ignore_case = protocol != "plain"
    out = []
    for utt in sorted(refs):
        signer, ref_words = refs[utt]
        ref = normalize_reference(list(ref_words), protocol)
        hyp = normalize_hypothesis(list(hyps[utt]), protocol) if utt in hyps else []
        ops = alignment(ref, hyp, ignore_case)
        kinds = [op for op, _, _ in ops]
        out.append(SentenceScore(utt, signer, ref, hyp, kinds.count("S"), kinds.count("D"), kinds.count("I"),
                                 [(a, b) for op, a, b in ops if op == "S"]))
    return out
