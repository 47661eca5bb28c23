"""Assemble the comparison report: paper tables with our figures, samples, curves, maps, lineage."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelzoo import safety
from pixelzoo.errors import kill_point
from pixelzoo.pipeline import provenance, settings
from pixelzoo.pipeline.tracking import client as tracking
from pixelzoo.report import figures, gallery, reference, seeds
from pixelzoo.report.collect import Experiment, collect
from pixelzoo.report.context import gate_section, profile_banner
from pixelzoo.report.render import Cell, Details, Section, Table, to_html, to_markdown

TITLE = "pixelzoo: PixelRNN / PixelCNN reproduction report"
# Tables always shown (rows not run are marked); others only when an experiment refers to them.
STAGES = ("train", "evaluate", "sample")
NOT_RUN = "not run"
SPLIT_NAMES = {"valid": "validation"}  # params/metrics split names -> the papers' wording
DASH = "—"


@dataclass(frozen=True)
class Written:
    """Paths the report wrote."""

    html: Path
    markdown: Path
    figures: tuple[Path, ...]
    missing_receptive_fields: tuple[str, ...]


# ---------------------------------------------------------------- formatting
def _fmt(value: float, unit: str) -> str:
    return f"{value:.2f}" if unit == "nats" else f"{value:.3f}"


def _fmt_wall(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    s = int(round(seconds))
    if s < 120:
        return f"{s} s"
    h, m = divmod(s // 60, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def _fmt_params(n: int | None) -> str:
    if n is None:
        return DASH
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e4 else str(n)


def _fmt_budget(exp: Experiment) -> str:
    """The training budget as resolved (train_defaults under the entry): epochs, batch, step cap."""
    cfg = exp.resolved
    n = int(cfg["epochs"])
    parts = [f"{n} epoch{'s' if n != 1 else ''}", f"batch {cfg['batch_size']}"]
    if cfg.get("max_steps") is not None:
        parts.append(f"≤ {cfg['max_steps']} steps")
    return ", ".join(parts)


def _wall_s(exp: Experiment) -> float | None:
    h = exp.history
    if not h:
        return None
    if h.get("wall_seconds") is not None:
        return float(h["wall_seconds"])
    last = h["epochs"][-1] if h["epochs"] else {}
    return float(last["wall_seconds"]) if last.get("wall_seconds") is not None else None


def _train_ours(exp: Experiment, unit: str) -> float | None:
    """Our last-epoch mean training loss in the table's unit (nats need the image size from metrics)."""
    if not exp.history or not exp.history["epochs"]:
        return None
    bpd = float(exp.history["epochs"][-1]["train_bits_per_dim"])
    if unit == "bits/dim":
        return bpd
    m = exp.metrics
    if not m or not m["test_bits_per_dim"]:
        return None
    return bpd * float(m["test_nats_per_image"]) / float(m["test_bits_per_dim"])  # × dims·ln 2


def _group_by_stage(reasons: list[str]) -> list[str]:
    """"train: x", "sample: x" -> "train, sample: x" (same finding for several stages said once)."""
    grouped: dict[str, list[str]] = {}
    for r in reasons:
        stage, _, msg = r.partition(": ")
        grouped.setdefault(msg, []).append(stage) if msg else grouped.setdefault(r, [])
    return [f"{', '.join(stages)}: {msg}" if stages else msg for msg, stages in grouped.items()]


def _chain(exp: Experiment, ui: str | None) -> tuple[tuple[str, str | None], ...]:
    """train → evaluate → sample, each linked to its MLflow run, and whether they used this checkpoint."""
    lin = exp.lineage
    parts: list[tuple[str, str | None]] = []
    for stage in STAGES:
        ptr = exp.pointers.get(stage)
        if ptr is not None:
            exp_id = lin.experiment_ids.get(stage) if lin else None
            parts.append((f"{'→ ' if parts else ''}{stage} {ptr.run_id[:8]}", ptr.ui_url(ui, exp_id)))
    if exp.checkpoint_sha256:
        used = []
        for stage, tag in (lin.checkpoints if lin else {}).items():
            if tag == exp.checkpoint_sha256:
                used.append(f"{stage} ✓")
            else:
                used.append(f"{stage} used {tag[:8] if tag else 'an unrecorded'} checkpoint")
        used_txt = f" ({', '.join(used)})" if used else ""
        parts.append((f"model.pt sha256 {exp.checkpoint_sha256[:12]}{used_txt}", None))
    return tuple(parts)


def _checkpoint_mismatch(exp: Experiment) -> bool:
    lin = exp.lineage
    return bool(lin and exp.checkpoint_sha256 and any(
        tag is not None and tag != exp.checkpoint_sha256 for tag in lin.checkpoints.values()
    ))


def _lineage_cell(exp: Experiment) -> Cell:
    lin = exp.lineage
    links = _chain(exp, exp.mlflow_ui)
    info = []
    if lin and lin.commit:
        info.append(f"commit {lin.commit[:8]}{'+dirty' if lin.dirty else ''}")
    if lin and lin.data_digest:
        info.append(f"data {lin.data_digest[:8]}")
    if lin and lin.stale:
        info.append("STALE: " + "; ".join(_group_by_stage(lin.stale)))
    if _checkpoint_mismatch(exp):
        info.append("STALE: evaluated or sampled another checkpoint than train/model.pt")
    if lin and lin.unchecked and (exp.metrics or exp.history):
        info.append("not checked: " + "; ".join(_group_by_stage(lin.unchecked)))
    if not links and not info:
        return Cell(DASH, cls="lineage")
    runs = ", ".join(f"{stage} run {ptr.run_id}" for stage, ptr in exp.pointers.items())
    cls = "lineage stale" if _stale(exp) else "lineage"
    return Cell("", cls=cls, title=runs or None, links=links + tuple((t, None) for t in info))


def _stale(exp: Experiment) -> bool:
    return bool(exp.lineage and exp.lineage.stale) or _checkpoint_mismatch(exp)


# ---------------------------------------------------------------- tables
REF_HEADER = [
    "Model (paper row)", "Experiment", "Paper", "Ours", "Δ ours − paper", "Train: paper", "Train: ours",
    "Params", "Budget", "Wall time", "Device", "Lineage",
]


def _ref_row(t: reference.RefTable, row: reference.RefRow, exp: Experiment | None) -> list[Cell]:
    rel = "" if row.relation == "=" else f"{row.relation} "
    # Paper figures keep the papers' two decimals; ours get one more in bits/dim.
    paper = Cell(f"{rel}{row.value:.2f}", cls="num", title=row.citation or t.citation)
    train_paper = Cell(f"{row.train:.2f}" if row.train is not None else DASH, cls="num")
    text = row.name + (f" [{reference.SHORT[row.citation]}]" if row.citation else "")
    label = Cell(text + (" (cited)" if row.cited else ""), cls="cited" if row.cited else "")
    if row.cited:
        return [label, Cell(DASH), paper, Cell("cited", cls="cited"), Cell(DASH), train_paper,
                *[Cell(DASH)] * 6]
    if exp is None:
        return [label, Cell("not configured", cls="notrun"), paper, Cell(NOT_RUN, cls="notrun"), Cell(DASH),
                train_paper, *[Cell(DASH)] * 6]
    if exp.metrics is None:
        ours, diff = Cell(NOT_RUN, cls="notrun"), Cell(DASH)
    else:
        value = float(exp.metrics[t.metric_key])
        d = value - row.value
        split = SPLIT_NAMES.get(exp.metrics.get("split"), exp.metrics.get("split"))
        ours = Cell(_fmt(value, t.unit) + (f" ({split})" if split and split != t.split else ""),
                    cls="num stale" if _stale(exp) else "num")
        diff = Cell(f"{d:+.3f}" if t.unit != "nats" else f"{d:+.2f}",
                    cls="num better" if d <= 0 else "num worse")
    tr = _train_ours(exp, t.unit)
    return [
        label, Cell(exp.key), paper, ours, diff, train_paper,
        Cell(_fmt(tr, t.unit) if tr is not None else DASH, cls="num"),
        Cell(_fmt_params(exp.n_params), cls="num"), Cell(_fmt_budget(exp)),
        Cell(_fmt_wall(_wall_s(exp)), cls="num"), Cell(str((exp.history or {}).get("device", DASH))),
        _lineage_cell(exp),
    ]


def reference_section(t: reference.RefTable, exps: list[Experiment]) -> Section:
    """One paper table: each paper row with the experiments that reproduce it (or "not run")."""
    rows = []
    for row in t.rows:
        attached = [e for e in exps if e.reference == (t.id, row.label)]
        for exp in attached or [None]:
            rows.append(_ref_row(t, row, exp))
    splits = {
        SPLIT_NAMES.get(e.metrics.get("split"), e.metrics.get("split"))
        for e in exps if e.reference and e.reference[0] == t.id and e.metrics
    }
    note = (
        f"Paper: {t.citation}; {t.dataset}, {t.split} split, {t.unit}"
        f"{' per image' if t.unit == 'nats' else ''}; lower is better. Δ < 0 means ours is lower."
    )
    if splits - {None, t.split}:
        note += f" Ours marked with a split name were measured on that split, not on the {t.split} split."
    note += " Train: ours is the mean training loss of the last epoch."
    return Section(t.title, t.id, [Table(REF_HEADER, rows, note=note)])


OTHER_HEADER = [
    "Experiment", "Model", "Dataset", "Split", "nats/image", "bits/dim", "Images", "Train bpd (last epoch)",
    "Params", "Budget", "Wall time", "Device", "Lineage",
]


def other_section(exps: list[Experiment]) -> Section:
    """Experiments that reproduce no paper row (seed-004, CI-profile runs)."""
    rows = []
    for e in exps:
        m = e.metrics
        tr = _train_ours(e, "bits/dim")
        if m is None:
            figs = [Cell(NOT_RUN, cls="notrun"), Cell(DASH), Cell(DASH), Cell(DASH)]
        else:
            cls = "num stale" if _stale(e) else "num"
            figs = [
                Cell(str(m.get("split", DASH))),
                Cell(_fmt(float(m["test_nats_per_image"]), "nats"), cls=cls),
                Cell(_fmt(float(m["test_bits_per_dim"]), "bits/dim"), cls=cls),
                Cell(str(m["n_images"]), cls="num"),
            ]
        rows.append([
            Cell(e.key), Cell(e.model), Cell(e.dataset), *figs,
            Cell(_fmt(tr, "bits/dim") if tr is not None else DASH, cls="num"),
            Cell(_fmt_params(e.n_params), cls="num"), Cell(_fmt_budget(e)),
            Cell(_fmt_wall(_wall_s(e)), cls="num"), Cell(str((e.history or {}).get("device", DASH))),
            _lineage_cell(e),
        ])
    blocks: list[Any] = [Table(OTHER_HEADER, rows)] if rows else ["No experiments outside the paper tables."]
    return Section("Other experiments", "other", blocks)


def data_section(root: Path, params: dict[str, Any], exps: list[Experiment]) -> Section:
    """The processed datasets the experiments use: sizes, splits, digests (from meta.json)."""
    header = ["Dataset", "Source", "Levels", "C×H×W", "train / valid / test", "Valid carved from train",
              "Digest", "Used by"]
    rows = []
    for name in sorted({e.dataset for e in exps}):
        users = Cell(", ".join(e.key for e in exps if e.dataset == name))
        meta_path = root / "data" / "processed" / name / "meta.json"
        if not meta_path.exists():
            src = str(((params.get("datasets") or {}).get(name) or {}).get("source", DASH))
            rows.append([Cell(name), Cell(src), *[Cell(DASH)] * 3, Cell(DASH),
                         Cell("not built", cls="notrun"), users])
            continue
        meta = json.loads(meta_path.read_text())
        counts = meta.get("counts", {})
        rows.append([
            Cell(name), Cell(str(meta.get("source", DASH))), Cell(str(meta.get("levels", DASH)), cls="num"),
            Cell(f"{meta.get('channels')}×{meta.get('height')}×{meta.get('width')}"),
            Cell(" / ".join(str(counts.get(s, DASH)) for s in ("train", "valid", "test")), cls="num"),
            Cell("yes" if meta.get("valid_carved_from_train") else "no"),
            Cell(tracking.dataset_digest(meta)[:16]), users,
        ])
    note = ("Digest: sha256 over the per-split sha256 of the processed arrays (meta.json). The counts state "
            "which images each model was trained on (the paper does not say whether binarized MNIST "
            "was trained on train or train+valid).")
    return Section("Data", "data", [Table(header, rows, note=note)])


# ---------------------------------------------------------------- assembly
def _paper_bpd(exp: Experiment) -> float | None:
    if exp.reference is None:
        return None
    t = reference.table(exp.reference[0])
    return t.row(exp.reference[1]).value if t.unit == "bits/dim" else None


def build_report(root: Path, params: dict[str, Any], out_dir: Path) -> Written:
    """Write ``out_dir/index.html``, ``out_dir/README.md`` and ``out_dir/figures/*.png``.

    ``root`` is the repository (or profile work tree) holding ``metrics/``, ``outputs/`` and ``data/``;
    ``params`` the parsed params.yaml. Figures from an earlier report are removed first, so the report
    never shows an image of an experiment that is gone.
    """
    opts = settings.report_options(params)
    exps = _collected(root, params, opts)
    fig_dir = _fresh_dir(out_dir / "figures")
    attached, unattached = _tables(opts, exps)
    first = [e for e in exps if not e.entry.get("replicate_of")]  # one run per experiment: the first seed
    gate = gate_section(root, params, exps)
    results, table_md = _result_tables(exps, first, attached)
    sections = ([gate] if gate is not None else []) + results
    sections += [
        curves_section(first, attached, [e for e in first if e.reference is None], fig_dir, out_dir),
        samples_section(root, first, fig_dir, out_dir),
        bits_section(first, fig_dir, out_dir),
    ]
    write_curve_jsons(exps, out_dir / "curves")
    rf_section, rf_missing = receptive_field_section(opts["receptive_field"] or {}, fig_dir, out_dir)
    sections += [rf_section, data_section(root, params, exps)]
    if unattached:
        sections.append(folded_tables_section(unattached, exps))
    sections.append(sources_section(exps))
    html_path, md_path = _write_pages(out_dir, intro_blocks(root, params, exps, gate), sections, table_md)
    return Written(html_path, md_path, tuple(sorted(fig_dir.rglob("*.png"))), tuple(rf_missing))


def _result_tables(exps: list[Experiment], first: list[Experiment], attached: list[str]
                   ) -> tuple[list[Section], str]:
    """Paper tables (first seeds), the seed table, Other experiments (rows of no paper table and every
    further seed's run); and the seed table alone as Markdown (table.md)."""
    sections = [reference_section(reference.table(tid), first) for tid in attached]
    spread = seeds.seeds_table(exps, _stale)
    if spread is not None:
        sections.append(seeds.seeds_section(spread))
    others = [e for e in exps if e.reference is None or e.entry.get("replicate_of")]
    if others or not attached:
        sections.append(other_section(others))
    return sections, seeds.table_markdown(spread)


def _collected(root: Path, params: dict[str, Any], opts: dict[str, Any]) -> list[Experiment]:
    exps = collect(root, params, provenance.RunStore() if opts["mlflow"] else None)
    for e in exps:  # fail early, with the valid labels, on a misspelt reference
        if e.reference is not None:
            reference.table(e.reference[0]).row(e.reference[1])
        e.mlflow_ui = str(opts["mlflow_ui"])
    return exps


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _tables(opts: dict[str, Any], exps: list[Experiment]) -> tuple[list[str], list[str]]:
    """(tables some experiment reproduces, tables shown for reference only), in display order."""
    table_ids = list(opts["tables"])
    for e in exps:
        if e.reference is not None and e.reference[0] not in table_ids:
            table_ids.append(e.reference[0])
    attached = [t for t in table_ids if any(e.reference and e.reference[0] == t for e in exps)]
    return attached, [t for t in table_ids if t not in attached]


def curves_section(exps: list[Experiment], attached: list[str], others: list[Experiment], fig_dir: Path,
                   out_dir: Path) -> Section:
    """One plot per table, the table's experiments overlaid (others: one per dataset)."""
    groups = {
        reference.table(t).title: [e for e in exps if e.reference and e.reference[0] == t] for t in attached
    }
    for ds in sorted({e.dataset for e in others}):
        groups[f"Other experiments on {ds}"] = [e for e in others if e.dataset == ds]
    curve_figs = [
        figures.overlaid_curves(
            {e.key: e.history for e in members}, title, fig_dir / "curves" / f"curves_{n}.png", out_dir,
            {e.key: b for e in members if (b := _paper_bpd(e)) is not None},
        )
        for n, (title, members) in enumerate(gallery.curve_groups(exps, groups).items())
    ]
    blocks: list[Any] = [curve_figs] if curve_figs else []
    no_hist = [e.key for e in exps if not (e.history and e.history["epochs"])]
    if no_hist:
        blocks.append("No training history yet: " + ", ".join(no_hist) + ".")
    return Section("Learning curves", "curves", blocks)


def samples_section(root: Path, exps: list[Experiment], fig_dir: Path, out_dir: Path) -> Section:
    blocks: list[Any] = []
    for e in exps:
        blocks += gallery.sample_blocks(root, e, fig_dir, out_dir)
    without = [e.key for e in exps if e.samples_npz is None]
    if without:
        blocks.append("No samples yet (sample stage not run): " + ", ".join(without) + ".")
    return Section("Samples", "samples", blocks)


def bits_section(exps: list[Experiment], fig_dir: Path, out_dir: Path) -> Section:
    blocks: list[Any] = [
        "Where each model spends its bits: the exact negative log-likelihood of every sub-pixel, in bits, "
        "from the evaluation pass that made the table's number (the mean of a map is the row's bits/dim). "
        "Bright sub-pixels are hard to predict."
    ]
    for e in exps:
        blocks += gallery.bits_blocks(e, fig_dir, out_dir)
    no_bits = [e.key for e in exps if not e.bits_figures]
    if no_bits:
        blocks.append("No bits map yet (evaluate stage not run since it learnt to write one): "
                      + ", ".join(no_bits) + ".")
    return Section("Per-pixel likelihood", "bits", blocks)


def write_curve_jsons(exps: list[Experiment], curve_dir: Path) -> None:
    """One JSON per experiment for `dvc plots show` (read by the top-level `plots:` entry of dvc.yaml)."""
    _fresh_dir(curve_dir)
    for e in exps:
        if e.history and e.history["epochs"]:
            path = safety.under(curve_dir, f"{e.key}.json", what=f"curves of experiment {e.key!r}")
            path.write_text(json.dumps(e.history["epochs"], indent=1))


def receptive_field_section(rf: dict[str, Any], fig_dir: Path, out_dir: Path) -> tuple[Section, list[str]]:
    """The structural maps of every registered model (or ``rf["models"]``) and what could not be drawn."""
    rf_figs, rf_missing = figures.receptive_fields(rf.get("models"), rf, fig_dir, out_dir)
    blocks: list[Any] = [
        "Which earlier input pixels can influence the prediction of one output pixel (red square), for "
        "every registered model, each deep enough that its reach spans the image. Structural: computed on "
        "a copy with positive weights and inputs, where no two paths can cancel, so an unseen pixel has no "
        "path at all (pixelzoo.audit.reachability; the random-init gradient audit is the leak test). "
        "PixelCNN and seed-004 keep a blind spot above-right at any depth; the Row LSTM sees a triangle; "
        "the Gated PixelCNN and the Diagonal BiLSTM see every earlier pixel; multi-scale first generates "
        "a sub-sampled image, so its order differs (future pixels in light grey)."
    ]
    if rf_figs:
        blocks.append(rf_figs)
    if rf_missing:
        blocks.append("Not drawn: " + "; ".join(rf_missing) + ".")
    return Section("Receptive fields and blind spots", "receptive-fields", blocks), rf_missing


def folded_tables_section(unattached: list[str], exps: list[Experiment]) -> Section:
    folded = [reference_section(reference.table(tid), exps) for tid in unattached]
    return Section("Paper tables not reproduced by this profile", "paper-tables", [
        "No experiment of these params reproduces a row of these tables; their paper figures are kept "
        "for reference, folded.",
        *(Details(f"{sec.title} (paper figures only)", sec.blocks) for sec in folded),
    ])


def intro_blocks(root: Path, params: dict[str, Any], exps: list[Experiment], gate: Section | None
                 ) -> list[Any]:
    n_run = sum(e.metrics is not None for e in exps)
    n_stale = sum(_stale(e) for e in exps)
    intro: list[Any] = [
        profile_banner(root, params, exps),
        f"{len(exps)} experiments configured, {n_run} evaluated, {len(exps) - n_run} not run"
        + (f", {n_stale} stale (marked; params or data changed since they ran)" if n_stale else "")
        + ". Paper figures are copied from the publications; ours are read from metrics/<experiment>.json.",
    ]
    if gate is not None:
        intro.append(gate.blocks[0])
    return intro


def _write_pages(out_dir: Path, intro: list[Any], sections: list[Section], table_md: str
                 ) -> tuple[Path, Path]:
    """The pages (and table.md) appear together or not at all (a kill never leaves one page that looks
    complete)."""
    html_path, md_path = out_dir / "index.html", out_dir / "README.md"
    pages = {out_dir / "table.md": table_md, html_path: to_html(TITLE, intro, sections),
             md_path: to_markdown(TITLE, intro, sections)}
    try:
        for path, text in pages.items():
            path.with_name(path.name + ".tmp").write_text(text)
    except OSError as err:  # a full disk: one message, no half-written page left (pixelzoo.safety)
        for page in pages:
            page.with_name(page.name + ".tmp").unlink(missing_ok=True)
        raise safety.write_error(path.with_name(path.name + ".tmp"), err, kept=False) from err
    kill_point("report")
    for path in pages:
        os.replace(path.with_name(path.name + ".tmp"), path)
    return html_path, md_path


def sources_section(exps: list[Experiment]) -> Section:
    """Where the numbers come from: papers, files, and how staleness is decided."""
    cites = sorted({r.citation for t in reference.TABLES for r in t.rows if r.citation}
                   | {t.citation for t in reference.TABLES})
    trackers = sorted({p.tracking_uri for e in exps for p in e.pointers.values()})
    local = [t for t in trackers if not t.startswith(("http://", "https://"))]
    ui = exps[0].mlflow_ui if exps else settings.defaults_of(settings.Report)["mlflow_ui"]
    blocks: list[Any] = [
        "Paper figures: " + " | ".join(cites) + ".",
        "Our figures: metrics/<experiment>.json (evaluation over the full test split, every image once); "
        "curves from outputs/<experiment>/train/history.json; run ids from the mlflow_run.json pointer "
        "written by each stage.",
        "Tracking URI(s): " + (", ".join(trackers) if trackers else "none recorded yet") + ".",
        *([f"Run links of a local store open in the MLflow UI at {ui} once it runs: "
           + "; ".join(f"mlflow ui --backend-store-uri {t}" for t in local) + " (report.mlflow_ui sets the "
           "address)."] if local else []),
        "Stage chain of each row: train → evaluate → sample runs, and the sha256 of train/model.pt now; the "
        "evaluate and sample runs record the sha256 of the checkpoint they read ("
        + tracking.TAG_CHECKPOINT + " tag), so a row whose number came from another checkpoint is marked "
        "stale.",
        "A row is stale (highlighted) when params.yaml now resolves to another config for one of its "
        "stages than the one recorded with that stage's MLflow run (pixelzoo.config_sha256 tag), or the "
        "processed data's digest differs from the run's dataset.sha256 tag, or the code (src/, stages/, "
        "dvc.yaml) changed since the run's clean commit; `dvc repro` refreshes it. "
        "`pixelzoo-lineage --check` applies the same rule (pixelzoo.pipeline.provenance).",
    ]
    if any(not math.isfinite(float(e.metrics["test_bits_per_dim"])) for e in exps if e.metrics):
        blocks.append("Some metrics are not finite: training diverged for those rows.")
    return Section("Sources and lineage", "sources", blocks)
