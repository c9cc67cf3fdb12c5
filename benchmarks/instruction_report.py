"""The report of ``benchmarks/instructions.py``: tables in Markdown from its records alone."""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

METRICS = ("rougeL", "exact_match")


def learning_rate_search(validation: dict[float, float], grid: tuple[float, ...], step: float = 3.0):
    """``(chosen, next_to_try)`` from seed 0's validation ROUGE-L by learning rate.

    The grid first; then, where the best rate is at an end of the grid, one more rate
    ``step`` times beyond that end (so a best at the edge is not taken for the optimum).
    ``chosen`` is None while a rate is still to try.
    """
    missing = [lr for lr in grid if lr not in validation]
    if missing:
        return None, missing[0]
    best = max(validation, key=validation.get)
    if len(grid) < 2:
        return best, None  # a single rate: no edge to search beyond
    for end, beyond in ((max(grid), best * step), (min(grid), best / step)):
        beyond = float(f"{beyond:.3g}")
        if best == end and beyond not in validation:
            return None, beyond
    return best, None


def _mean_sd(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.1f} (1 seed)"
    return f"{mean:.1f} ± {statistics.stdev(values) * scale:.1f}"


def _label(method: str, definitions: bool) -> str:
    return f"{method} + definitions" if definitions else method


def chosen_runs(rows: list[dict], profile_name: str, profile) -> dict[tuple[str, bool], list[dict]]:
    """The test runs of each (method, definitions) at its chosen learning rate: seed 0's best on validation."""
    runs: dict[tuple[str, bool], list[dict]] = {}
    multitask = [r for r in rows if r.get("part") == "multitask" and r.get("profile") == profile_name]
    for key in dict.fromkeys((r["method"], r["definitions"]) for r in multitask):
        mine = [r for r in multitask if (r["method"], r["definitions"]) == key]
        grid = [r for r in mine if r["seed"] == 0]
        if "[" in key[0]:
            continue  # an ablation variant: see ablation_table
        best = None
        if key[0] != "zero-shot":
            best, _ = learning_rate_search({r["lr"]: r["validation"]["generate"]["rougeL"] for r in grid}, profile.lr_grid)
            if best is None:
                continue  # the learning rate is not chosen yet
        runs[key] = sorted((r for r in mine if r["lr"] == best), key=lambda r: r["seed"])
    return runs


def multitask_table(runs: dict[tuple[str, bool], list[dict]]) -> list[str]:
    lines = [
        "| method | learning rate | seeds | ROUGE-L | exact match | ROUGE-L, ranked answers | exact match, ranked answers | fit (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = sorted(runs, key=lambda key: -statistics.mean(r["test"]["generate"]["rougeL"] for r in runs[key]))
    for key in order:
        mine = runs[key]
        cells = [_mean_sd([r["test"]["generate"][m] for r in mine]) for m in METRICS]
        ranked = [_mean_sd([r["test"]["rank"][m] for r in mine if "rank" in r["test"]]) for m in METRICS]
        lr = mine[0]["lr"]
        fit = statistics.mean(r["fit_seconds"] for r in mine)
        lines.append(f"| {_label(*key)} | {'-' if lr is None else f'{lr:g}'} | {len(mine)} | {cells[0]} | {cells[1]} | "
                     f"{ranked[0]} | {ranked[1]} | {fit:.0f} |")
    return lines


def per_task_table(runs: dict[tuple[str, bool], list[dict]], kinds: dict[str, str]) -> list[str]:
    """ROUGE-L per task (mean over seeds) of every method, tasks grouped by kind."""
    columns = list(runs)
    frame = pd.DataFrame({
        _label(*key): pd.DataFrame([r["test"]["generate"]["per_task"] for r in runs[key]]).map(lambda v: v["rougeL"]).mean()
        for key in columns
    })
    if frame.empty:
        return ["(no finished runs)"]
    frame.insert(0, "kind", [kinds.get(task, "?") for task in frame.index])
    frame = frame.sort_values(["kind"]).rename_axis("task").reset_index()
    header = "| " + " | ".join(frame.columns) + " |"
    lines = [header, "|" + "---|" * len(frame.columns)]
    for _, row in frame.iterrows():
        cells = [str(row["task"]), str(row["kind"])] + [f"{100 * v:.0f}" if pd.notna(v) else "-" for v in row.iloc[2:]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def every_run_table(rows: list[dict], profile_name: str) -> list[str]:
    """Every multi-task run as recorded, searches still under way included (ROUGE-L ×100)."""
    multitask = [r for r in rows if r.get("part") == "multitask" and r.get("profile") == profile_name]
    if not multitask:
        return ["(no multi-task runs yet)"]
    lines = ["| method | learning rate | seed | validation | test | test, ranked answers | fit (s) | threads |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(multitask, key=lambda r: (_label(r["method"], r["definitions"]), r["lr"] or 0, r["seed"])):
        ranked = r["test"].get("rank", {}).get("rougeL")
        lr = "-" if r["lr"] is None else f"{r['lr']:g}"
        lines.append(f"| {_label(r['method'], r['definitions'])} | {lr} | "
                     f"{r['seed']} | {100 * r['validation']['generate']['rougeL']:.1f} | "
                     f"{100 * r['test']['generate']['rougeL']:.1f} | {'-' if ranked is None else f'{100 * ranked:.1f}'} | "
                     f"{r['fit_seconds']:.0f} | {r.get('threads', '-')} |")
    return lines


def ablation_table(rows: list[dict], profile_name: str) -> list[str]:
    """Each variant against its method at the same learning rate and seeds (test ROUGE-L, no definitions)."""
    multitask = [r for r in rows if r.get("part") == "multitask" and r.get("profile") == profile_name and not r["definitions"]]
    variants = list(dict.fromkeys(r["method"] for r in multitask if "[" in r["method"]))
    if not variants:
        return ["(no ablation runs yet)"]
    lines = ["| variant | seeds | ROUGE-L | exact match | its method, same seeds and rate | difference (points) |",
             "|---|---:|---:|---:|---:|---:|"]
    for variant in variants:
        mine = [r for r in multitask if r["method"] == variant]
        base_name = variant.split(" [")[0]
        base = [next((b for b in multitask if b["method"] == base_name and b["seed"] == r["seed"] and b["lr"] == r["lr"]), None)
                for r in mine]
        paired = [(r, b) for r, b in zip(mine, base) if b is not None]
        ours = [r["test"]["generate"]["rougeL"] for r in mine]
        theirs = [b["test"]["generate"]["rougeL"] for _, b in paired]
        diff = (statistics.mean(r["test"]["generate"]["rougeL"] - b["test"]["generate"]["rougeL"] for r, b in paired) * 100
                if paired else float("nan"))
        lines.append(f"| {variant} | {len(mine)} | {_mean_sd(ours)} | {_mean_sd([r['test']['generate']['exact_match'] for r in mine])} | "
                     f"{_mean_sd(theirs)} | {diff:+.1f} |")
    return lines


def transfer_table(rows: list[dict], profile_name: str) -> list[str]:
    transfer = [r for r in rows if r.get("part") == "transfer" and r.get("profile") == profile_name]
    if not transfer:
        return ["(no transfer runs yet)"]
    shots = sorted({r["shots"] for r in transfer})
    header = "| start | adapt mode | " + " | ".join(f"ROUGE-L, {s} shots | exact match, {s} shots" for s in shots) + " |"
    lines = [header, "|---|---|" + "---:|---:|" * len(shots)]
    for source, mode in dict.fromkeys((r["source"], r["mode"]) for r in transfer):
        cells = []
        for s in shots:
            mine = [r for r in transfer if (r["source"], r["mode"], r["shots"]) == (source, mode, s)]
            cells += [_mean_sd([r["test"]["generate"][m] for r in mine]) for m in METRICS]
        lines.append(f"| {source} | {mode} | " + " | ".join(cells) + " |")
    return lines


def cost_table(rows: list[dict], profile_name: str) -> list[str]:
    cost = [r for r in rows if r.get("part") == "cost" and r.get("profile") == profile_name]
    if not cost:
        return ["(no cost run yet)"]
    latest = cost[-1]
    lines = [f"On {latest['device']}, {latest['repeats']} interleaved repeats: medians (range); ratios of medians "
             "against peft LoRA in the same run.", "",
             "| method | train step (s) | × peft LoRA | generate, mixed-task batches (s) | × peft LoRA | "
             "generate, one-task batches (s) | × peft LoRA | tokens generated (mixed) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    reference = latest["methods"]["peft LoRA"]
    for method, values in latest["methods"].items():
        cells = []
        for key in ("train_step", "generate_mixed", "generate_single"):
            spread = values.get("all", {}).get(key)
            span = f" ({min(spread):.2f}-{max(spread):.2f})" if spread else ""
            cells += [f"{values[key]:.2f}{span}", f"{values[key] / reference[key]:.2f}"]
        cells.append(str(values.get("generated_tokens_mixed", "-")))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def targets(runs: dict[tuple[str, bool], list[dict]], rows: list[dict], profile_name: str) -> list[str]:
    """The issue's targets, read off the tables (ROUGE-L points, means over seeds)."""
    def mean(key):
        return 100 * statistics.mean(r["test"]["generate"]["rougeL"] for r in runs[key]) if key in runs else None

    lines = []
    cpoly = max((v for v in (mean(("C-Poly", False)), mean(("C-Poly", True))) if v is not None), default=None)
    aware = {name: mean(key) for name, key in (("LoRA private", ("LoRA private", False)),
                                               ("LoRA shared + definitions", ("LoRA shared", True)),
                                               ("peft LoRA + definitions", ("peft LoRA", True)),
                                               ("LoRA private + definitions", ("LoRA private", True)))}
    aware = {k: v for k, v in aware.items() if v is not None}
    if cpoly is not None and aware:
        best = max(aware, key=aware.get)
        gap = cpoly - aware[best]
        lines.append(f"- C-Poly (best of with/without definitions) {cpoly:.1f} vs the best task-aware LoRA ({best}) "
                     f"{aware[best]:.1f}: {gap:+.1f} points (target: at least +2): {'met' if gap >= 2 else 'NOT met'}.")
    for method in ("Poly", "Poly-S"):
        for shared in (("LoRA shared", False), ("LoRA shared", True)):
            if mean((method, False)) is not None and mean(shared) is not None:
                gap = mean((method, False)) - mean(shared)
                lines.append(f"- {method} {mean((method, False)):.1f} vs {_label(*shared)} {mean(shared):.1f}: "
                             f"{gap:+.1f} points (target: above): {'met' if gap > 0 else 'NOT met'}.")
    transfer = [r for r in rows if r.get("part") == "transfer" and r.get("profile") == profile_name and r["shots"] == min(
        (x["shots"] for x in rows if x.get("part") == "transfer"), default=0)]
    by_mode: dict[tuple[str, str], list[float]] = {}
    for r in transfer:
        by_mode.setdefault((r["source"], r["mode"]), []).append(100 * r["test"]["generate"]["rougeL"])
    baseline = by_mode.get(("LoRA shared", "all"))
    adapted = {k: statistics.mean(v) for k, v in by_mode.items() if k[0] not in ("LoRA shared", "LoRA from scratch")}
    if baseline and adapted:
        best = max(adapted, key=adapted.get)
        gap = adapted[best] - statistics.mean(baseline)
        lines.append(f"- Transfer at {transfer[0]['shots']} shots: best adapt mode ({best[0]} / {best[1]}) {adapted[best]:.1f} "
                     f"vs fine-tuned multi-task LoRA {statistics.mean(baseline):.1f}: {gap:+.1f} points "
                     f"(target: at least +3): {'met' if gap >= 3 else 'NOT met'}.")
    return lines or ["(not enough finished runs)"]


def write_report(rows: list[dict], profile, profile_name: str, tasks: tuple[list[str], list[str]], path: Path) -> None:
    from skillfit.datasets import load_instruction_tasks

    kinds = load_instruction_tasks().kinds
    runs = chosen_runs(rows, profile_name, profile)
    multitask, held_out = tasks
    lines = [
        f"# Instruction tasks benchmark: profile `{profile_name}`", "",
        f"Backbone `{profile.backbone}`; {len(multitask)} multi-task tasks, {profile.train_per_task - profile.validation_per_task} "
        f"training rows each ({profile.validation_per_task} more for validation), {profile.test_per_task} test rows; "
        f"{profile.max_epochs} epochs, batch {profile.batch_size}, rank {profile.rank}, greedy generation of at most "
        f"{profile.max_new_tokens} tokens; learning rate from {list(profile.lr_grid)} on validation (seed 0; one step of ×3 "
        "beyond an end of the grid where the best rate lies there). "
        "Scores ×100, mean ± standard deviation over seeds of the mean over tasks; SuperNI's ROUGE-L (stemmed) and "
        "exact match (normalised), best of each instance's references. 'Ranked answers': tasks whose training "
        "targets form a closed set are answered by rank classification (`answer_choices=\"auto\"`), the others "
        "generated.", "",
        "## Targets", "", *targets(runs, rows, profile_name), "",
        "## Multi-task", "", *multitask_table(runs), "",
        "## Every multi-task run (ROUGE-L; the tables above keep a method once its learning rate is chosen)", "",
        *every_run_table(rows, profile_name), "",
        "## Ablations (each at its method's chosen learning rate, no definitions)", "", *ablation_table(rows, profile_name), "",
        f"## Transfer to {len(held_out)} held-out tasks (one at a time; epochs by shots: {profile.adapt_epochs})", "",
        *transfer_table(rows, profile_name), "",
        "## Cost", "", *cost_table(rows, profile_name), "",
        "## Per task (ROUGE-L, mean over seeds)", "", *per_task_table(runs, kinds), "",
        f"Multi-task tasks: {', '.join(multitask)}.", "", f"Held-out tasks: {', '.join(held_out)}.", "",
    ]
    path.write_text("\n".join(lines))
