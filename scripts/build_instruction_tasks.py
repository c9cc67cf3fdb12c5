#!/usr/bin/env python
"""Build the instruction tasks shipped with skillfit from a Super-NaturalInstructions checkout.

Super-NaturalInstructions (Wang et al. 2022; https://github.com/allenai/natural-instructions,
Apache-2.0) holds one JSON file per task under ``tasks/``: its ``Definition``, its
``Categories`` and its ``Instances`` (an ``input`` and a list of reference ``output``\\ s).
This script takes the tasks named in ``TASKS`` -- all of them from the training split
(none is listed in ``splits/default/test_tasks.txt``, which the script checks when the
file is there) -- and from each file the first ``TRAIN_PER_TASK + TEST_PER_TASK``
instances in file order: the first ``TRAIN_PER_TASK`` are the ``train`` split, the next
``TEST_PER_TASK`` the ``test`` split. Nothing is sampled, so the output is a function of
the task files alone and rebuilds byte for byte from a clone.

It writes two gzipped CSVs (gzip header without timestamp):

* ``skillfit/datasets/data/instruction_tasks.csv.gz``: ``text, task, target, references,
  split``; ``text`` is the instance's input as it is, ``references`` a JSON list of all its
  outputs and ``target`` the first of them;
* ``skillfit/datasets/data/instruction_task_info.csv.gz``: ``task, kind, categories,
  definition``; ``kind`` is ours (``KINDS``), ``categories`` the file's own, joined by
  ``"; "``.

Usage::

    git clone --depth 1 https://github.com/allenai/natural-instructions /tmp/ni
    python scripts/build_instruction_tasks.py --repo /tmp/ni

A folder holding only ``tasks/<task>.json`` files for the tasks below (each with at least
their first instances) gives the same output. See ``docs/datasets.md`` for the task list,
sources and licences.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import pandas as pd

TRAIN_PER_TASK = 64
TEST_PER_TASK = 32
OUTPUT = Path(__file__).resolve().parents[1] / "skillfit" / "datasets" / "data"
DATA_FILE = "instruction_tasks.csv.gz"
INFO_FILE = "instruction_task_info.csv.gz"

CLASSIFICATION = "classification"
EXTRACTION = "extraction"
GENERATION = "generation"
MANIPULATION = "string and list manipulation"
QUESTION_ANSWERING = "question answering"
KINDS = (CLASSIFICATION, EXTRACTION, GENERATION, MANIPULATION, QUESTION_ANSWERING)

# Each task file's name (without .json) and the kind of task we file it under.
TASKS: dict[str, str] = {
    # symbolic: lists, strings, numbers, dates
    "task064_all_elements_except_first_i": MANIPULATION,
    "task078_all_elements_except_last_i": MANIPULATION,
    "task095_conala_max_absolute_value": MANIPULATION,
    "task097_conala_remove_duplicates": MANIPULATION,
    "task205_remove_even_elements": MANIPULATION,
    "task369_synthetic_remove_odds": MANIPULATION,
    "task370_synthetic_remove_divisible_by_3": MANIPULATION,
    "task372_synthetic_palindrome_numbers": MANIPULATION,
    "task374_synthetic_pos_or_neg_calculation": MANIPULATION,
    "task497_extract_all_numbers_from_list_in_order": MANIPULATION,
    "task488_extract_all_alphabetical_elements_from_list_in_order": MANIPULATION,
    "task505_count_all_numerical_elements_in_list": MANIPULATION,
    "task1150_delete_max_min": MANIPULATION,
    "task1405_find_median": MANIPULATION,
    "task1444_round_power_of_two": MANIPULATION,
    "task1446_farthest_integers": MANIPULATION,
    "task092_check_prime_classification": MANIPULATION,
    "task365_synthetic_remove_vowels": MANIPULATION,
    "task376_reverse_order_of_words": MANIPULATION,
    "task161_count_words_containing_letter": MANIPULATION,
    "task162_count_words_starting_with_letter": MANIPULATION,
    "task113_count_frequency_of_letter": MANIPULATION,
    "task1189_check_char_in_string": MANIPULATION,
    "task1188_count_max_freq_char": MANIPULATION,
    "task1316_remove_duplicates_string": MANIPULATION,
    "task088_identify_typo_verification": MANIPULATION,
    "task089_swap_words_verification": MANIPULATION,
    "task1332_check_leap_year": MANIPULATION,
    "task1333_check_validity_date_ddmmyyyy": MANIPULATION,
    "task1404_date_conversion": MANIPULATION,
    "task1498_24hour_to_12hour_clock": MANIPULATION,
    # facts about countries and things
    "task1146_country_capital": QUESTION_ANSWERING,
    "task1147_country_currency": QUESTION_ANSWERING,
    "task1321_country_continent": QUESTION_ANSWERING,
    "task1322_country_government_type": QUESTION_ANSWERING,
    "task1317_country_calling_code": QUESTION_ANSWERING,
    "task1318_country_national_dish": QUESTION_ANSWERING,
    "task1427_country_region_in_world": QUESTION_ANSWERING,
    "task1149_item_check_edible": CLASSIFICATION,
    "task1193_food_course_classification": CLASSIFICATION,
    # words and their relations
    "task1508_wordnet_antonyms": GENERATION,
    "task1509_evalution_antonyms": GENERATION,
    "task1582_bless_hypernym_generation": GENERATION,
    "task1418_bless_semantic_relation_classification": CLASSIFICATION,
    "task1584_evalution_meronym_classification": CLASSIFICATION,
    # commonsense (ATOMIC)
    "task1196_atomic_classification_oeffect": CLASSIFICATION,
    "task1199_atomic_classification_xattr": CLASSIFICATION,
    "task1207_atomic_classification_atlocation": CLASSIFICATION,
    "task1209_atomic_classification_objectuse": CLASSIFICATION,
    "task1215_atomic_classification_capableof": CLASSIFICATION,
    # sentiment, emotion and text type
    "task195_sentiment140_classification": CLASSIFICATION,
    "task363_sst2_polarity_classification": CLASSIFICATION,
    "task875_emotion_classification": CLASSIFICATION,
    "task833_poem_sentiment_classification": CLASSIFICATION,
    "task1488_sarcasmdetection_headline_classification": CLASSIFICATION,
    "task1289_trec_classification": CLASSIFICATION,
    "task109_smsspamcollection_spamsmsdetection": CLASSIFICATION,
    "task843_financial_phrasebank_classification": CLASSIFICATION,
    # syntax
    "task429_senteval_tense": CLASSIFICATION,
    "task430_senteval_subject_count": CLASSIFICATION,
    "task616_cola_classification": CLASSIFICATION,
    # named entities
    "task1447_drug_extraction_ade": EXTRACTION,
    "task1448_disease_entity_extraction_ncbi_dataset": EXTRACTION,
    "task1453_person_entity_extraction_btc_corpus": EXTRACTION,
    "task1452_location_entity_extraction_btc_corpus": EXTRACTION,
    "task1483_chemical_extraction_chemprot_dataset": EXTRACTION,
    "task1486_cell_extraction_anem_dataset": EXTRACTION,
    # questions
    "task083_babi_t1_single_supporting_fact_answer_generation": QUESTION_ANSWERING,
    "task865_mawps_addsub_question_answering": QUESTION_ANSWERING,
    "task751_svamp_subtraction_question_answering": QUESTION_ANSWERING,
    "task752_svamp_multiplication_question_answering": QUESTION_ANSWERING,
    "task1359_numer_sense_answer_generation": QUESTION_ANSWERING,
    "task1601_webquestions_answer_generation": QUESTION_ANSWERING,
    # rewriting
    "task177_para-nmt_paraphrasing": GENERATION,
    "task1355_sent_comp_summarization": GENERATION,
    "task927_yelp_negative_to_positive_style_transfer": GENERATION,
}


def definition_text(definition: object, task: str) -> str:
    """A task's definition: a string in older files, a list of strings (usually one) in newer ones."""
    if isinstance(definition, str):
        return definition.strip()
    if isinstance(definition, list) and definition and all(isinstance(part, str) for part in definition):
        return " ".join(part.strip() for part in definition)
    raise ValueError(f"{task}: Definition is neither a string nor a list of strings: {definition!r}")


def read_task(path: Path, task: str) -> tuple[list[dict], dict]:
    """The rows of one task (train then test) and its info row."""
    with path.open(encoding="utf-8") as fh:
        content = json.load(fh)
    instances = content["Instances"]
    needed = TRAIN_PER_TASK + TEST_PER_TASK
    if len(instances) < needed:
        raise ValueError(f"{task}: {len(instances)} instances; the dataset takes the first {needed}.")
    rows = []
    for position, instance in enumerate(instances[:needed]):
        references = [str(output) for output in instance["output"]]
        if not references:
            raise ValueError(f"{task}: instance {position} has no output.")
        rows.append({
            "text": instance["input"],
            "task": task,
            "target": references[0],
            "references": json.dumps(references, ensure_ascii=False),
            "split": "train" if position < TRAIN_PER_TASK else "test",
        })
    info = {
        "task": task,
        "kind": TASKS[task],
        "categories": "; ".join(content.get("Categories", [])),
        "definition": definition_text(content["Definition"], task),
    }
    return rows, info


def test_split_tasks(repo: Path) -> set[str]:
    """The tasks Super-NaturalInstructions holds out for testing (empty if the split file is absent)."""
    split_file = repo / "splits" / "default" / "test_tasks.txt"
    if not split_file.is_file():
        return set()
    return {line.strip() for line in split_file.read_text(encoding="utf-8").splitlines() if line.strip()}


def write_csv_gz(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as a byte-reproducible gzip-compressed CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        gz.write(data)


def build(repo: Path, output: Path = OUTPUT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the tasks from ``repo`` and write the two files into ``output``."""
    held_out = test_split_tasks(repo) & set(TASKS)
    if held_out:
        raise ValueError(f"tasks of the test split must not be bundled: {sorted(held_out)}")
    rows, infos = [], []
    for task in TASKS:
        path = repo / "tasks" / f"{task}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: --repo must be a natural-instructions checkout.")
        task_rows, info = read_task(path, task)
        rows += task_rows
        infos.append(info)
    data = pd.DataFrame(rows, columns=["text", "task", "target", "references", "split"])
    info = pd.DataFrame(infos, columns=["task", "kind", "categories", "definition"])
    write_csv_gz(data, output / DATA_FILE)
    write_csv_gz(info, output / INFO_FILE)
    return data, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a natural-instructions checkout")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for the two CSV files")
    args = parser.parse_args(argv)
    data, info = build(args.repo, args.output)
    counts = info["kind"].value_counts()
    print(f"{len(info)} tasks, {len(data)} rows ({(data['split'] == 'train').sum()} train, "
          f"{(data['split'] == 'test').sum()} test) -> {args.output}")
    print("; ".join(f"{kind}: {counts.get(kind, 0)}" for kind in KINDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
