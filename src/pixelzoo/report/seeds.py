"""The seed table: one row per experiment trained at several seeds (``profile.seeds``), with the mean and
spread of its test NLL over the seeds (:mod:`pixelzoo.pipeline.profiles.replicates` made the runs)."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from pixelzoo.pipeline.profiles.replicates import groups
from pixelzoo.report.collect import Experiment
from pixelzoo.report.render import Cell, Section, Table, to_markdown

HEADER = ["Experiment", "Model", "Params", "Seeds", "bits/dim: mean ± s.d.", "min – max",
          "nats/image: mean ± s.d."]
NOTE = ("Mean and sample standard deviation over the training seeds (initialisation, batch order, "
        "dropout); the data split is the same for every seed. ⚠: a run is stale (see its lineage).")


def _spread(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f} ± —"  # one finished seed: no spread yet
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _row(members: list[Experiment], stale: Callable[[Experiment], bool]) -> list[Cell]:
    base, run = members[0], [e for e in members if e.metrics is not None]
    bpd = [float(e.metrics["test_bits_per_dim"]) for e in run if e.metrics]
    nats = [float(e.metrics["test_nats_per_image"]) for e in run if e.metrics]
    mark = " ⚠" if any(stale(e) for e in run) else ""
    model = base.model + (", class-cond." if base.resolved.get("conditional") else "")
    figs = [Cell("not run", cls="notrun"), Cell("—"), Cell("—")]
    if bpd:
        figs = [Cell(_spread(bpd, 4) + mark, cls="num"), Cell(f"{min(bpd):.4f} – {max(bpd):.4f}", cls="num"),
                Cell(_spread(nats, 2), cls="num")]
    seeds = ", ".join(str(e.resolved["seed"]) for e in run) or "—"
    n_params = base.n_params
    return [Cell(base.key), Cell(model), Cell(f"{n_params:,}" if n_params else "—", cls="num"),
            Cell(f"{len(run)} of {len(members)} ({seeds})"), *figs]


def seeds_table(exps: list[Experiment], stale: Callable[[Experiment], bool]) -> Table | None:
    """The table, or None when no experiment has replicates."""
    by_key = {e.key: e for e in exps}
    found = groups({e.key: e.entry for e in exps})
    if not found:
        return None
    rows = [_row([by_key[k] for k in keys], stale) for keys in found.values()]
    return Table(HEADER, rows, note=NOTE)


def seeds_section(table: Table) -> Section:
    return Section("Mean and spread over seeds", "seeds", [
        "Every experiment below was trained once per seed; its runs at the other seeds, named "
        "<experiment>-seed<N>, are listed under Other experiments. Curves, samples and bits maps show the "
        "first seed. Lower is better.", table])


def table_markdown(table: Table | None) -> str:
    """The table alone as Markdown (``table.md``: what the README's results table is copied from);
    without replicates a line that says so, never an earlier run's table."""
    if table is None:
        return "No experiment of this params file was trained at several seeds (profile.seeds).\n"
    page = to_markdown("Mean and spread over seeds", [], [Section("table", "table", [table])])
    return page.split("## table\n\n", 1)[1]
