"""The ``cost`` part of ``benchmarks/instructions.py``: train step and generation against peft LoRA.

Every method gets the same mixed-task training batches (rows of the multi-task tasks,
sorted by task within a batch as ``fit`` sorts them) and the same prediction rows, in
one process; repeats are interleaved (method 1, 2, ..., n, then again) so that drifts of
the machine hit every method alike. Generation is timed twice: on mixed-task batches
(one row of each of ``batch_size`` tasks per batch) and on one-task batches.
"""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np
import torch

from skillfit.estimators._batching import training_batches

COST_METHODS = ("peft LoRA", "LoRA shared", "LoRA private", "Poly", "C-Poly")
REPEATS = {"smoke": 1}


def _train_batches(estimator, rows, batch_size: int, n_batches: int):
    task_index = estimator._task_indices(rows["task"].to_numpy())
    encoded = estimator._encode(rows["text"].tolist(), task_index, rows["target"].tolist())
    batches = training_batches(encoded["tasks"], batch_size, np.random.default_rng(0))[:n_batches]
    return [estimator._make_batch(np.asarray(batch), encoded) for batch in batches]


def _time(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run_cost(records, profile_name: str, profile, make_estimator, benchmark_tasks, task_rows, n_batches: int = 3,
             repeats: int | None = None) -> dict:
    """Median seconds per train step and per generation pass for each method; appended to the records."""
    repeats = repeats or REPEATS.get(profile_name, 5)
    key = dict(part="cost", profile=profile_name, repeats=repeats)
    if (done := records.find(**key)) is not None:
        return done
    tasks, _ = benchmark_tasks(profile)
    data = task_rows(tasks, profile, definitions=False)
    train, test = data["train"], data["test"]
    width = min(profile.batch_size, len(tasks))
    mixed = test.groupby("task", sort=False).head(1).head(width)  # one row per task: every batch mixes tasks
    single_task = test[test["task"] == tasks[0]].head(profile.batch_size)
    setups = {}
    print(f"[cost] building {len(COST_METHODS)} models ...", flush=True)
    for method in COST_METHODS:
        estimator = make_estimator(method, profile, profile.lr_grid[0], 0, {}).set_params(max_epochs=1)
        first = train.groupby("task", sort=False).head(1)  # one row of every task: the model knows them all
        estimator.fit(first[["text", "task"]], first["target"].tolist())
        loop = estimator._training_loop(np.random.default_rng(0))
        optimizer, scheduler = loop.make_optimizer(10**6)
        setups[method] = (estimator, loop, optimizer, scheduler, _train_batches(estimator, train, profile.batch_size, n_batches))
    times = {method: {"train_step": [], "generate_mixed": [], "generate_single": []} for method in COST_METHODS}
    # Generation time depends on how many tokens are generated: record it, so that equal work is checked.
    tokens = {method: sum(len(setup[0].tokenizer_(text)["input_ids"]) for text in setup[0].predict(mixed[["text", "task"]]))
              for method, setup in setups.items()}
    for round_ in range(repeats + 1):  # the first round warms up
        for method, (estimator, loop, optimizer, scheduler, batches) in setups.items():
            step = statistics.mean(_time(lambda b=b: loop.train_step(b, optimizer, scheduler)) for b in batches)  # noqa: B023
            generate_mixed = _time(lambda: estimator.predict(mixed[["text", "task"]]))  # noqa: B023
            generate_single = _time(lambda: estimator.predict(single_task[["text", "task"]]))  # noqa: B023
            if round_:
                times[method]["train_step"].append(step)
                times[method]["generate_mixed"].append(generate_mixed)
                times[method]["generate_single"].append(generate_single)
        print(f"[cost] round {round_ + 1}/{repeats + 1}", flush=True)
    device = next(iter(setups.values()))[0].device_
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    medians = {method: {k: statistics.median(v) for k, v in values.items()} for method, values in times.items()}
    for method, values in times.items():
        medians[method]["all"] = values  # every repeat, for the spread
    for method in medians:
        medians[method]["generated_tokens_mixed"] = tokens[method]
    return records.add({**key, "device": name, "n_batches": n_batches,
                        "mixed_rows": len(mixed), "single_rows": len(single_task), "methods": medians})
