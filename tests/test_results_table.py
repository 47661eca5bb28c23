"""The README's cpu results table is the committed report's seed table (reports/cpu/table.md), number for
number, and that report was not stale when it was rendered (it comes from the committed code)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "cpu"


def _rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 2 and not set(cells[1]) <= {"-", ":"}:
            rows[cells[0]] = cells
    return rows


def test_readme_cpu_table_is_the_reports_seed_table() -> None:
    table = _rows((REPORT / "table.md").read_text())
    table.pop("Experiment")
    readme = _rows((ROOT / "README.md").read_text())
    assert table, "reports/cpu/table.md has no rows"
    for key, cells in table.items():
        assert key in readme, f"README's cpu table lacks {key}"
        params, spread = cells[2], cells[4]
        assert readme[key][1:3] == [params, spread], (key, readme[key], cells)
    assert all(cells[3].startswith("3 of 3") for cells in table.values())  # every row at every seed


def test_committed_cpu_report_is_not_stale() -> None:
    page = (REPORT / "README.md").read_text()
    assert "STALE" not in page and " stale (" not in page.split("## ", 1)[0]
