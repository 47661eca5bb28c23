"""Open the rendered report in headless Chromium: it loads, shows its tables, and no image is broken.

Needs Debian's ``chromium`` package (/usr/bin/chromium) or ``PIXELZOO_CHROMIUM`` pointing at a binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from matplotlib import image as mpimg
from test_report import write_fixture_outputs

from pixelzoo.report import build_report

# Runs after load (images decoded or failed) and writes its findings into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  document.querySelectorAll('details').forEach(d => d.open = true);  // folded images count too
  const sizes = imgs.map(i => { const r = i.getBoundingClientRect();
    return {src: i.getAttribute('src'), w: r.width, h: r.height, nw: i.naturalWidth,
            unit: Number(i.dataset.unit || 0), rendering: getComputedStyle(i).imageRendering}; });
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, sizes: sizes,
    tables: document.querySelectorAll('table').length,
    rows: document.querySelectorAll('tbody tr').length});
  document.body.appendChild(out);
});
</script></body>"""


def _chromium() -> str:
    exe = os.environ.get("PIXELZOO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        raise AssertionError(
            "headless Chromium not found: install Debian's `chromium` package (apt-get install chromium "
            "fonts-dejavu-core) or set PIXELZOO_CHROMIUM to a Chromium binary"
        )
    return exe


def _run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}", *args,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"chromium failed ({res.returncode}): {res.stderr[-2000:]}"
    return res


def test_report_opens_in_headless_chromium(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    params = write_fixture_outputs(root)
    written = build_report(root, params, root / "reports")
    page = written.html.read_text()
    assert "<script" not in page  # the page itself is static; the probe lives in a copy beside it

    probe = written.html.with_name("probe.html")  # same folder, so relative image paths resolve the same
    probe.write_text(page.replace("</body>", PROBE, 1))
    res = _run_chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, flags=re.S)
    assert m, "probe did not run: page did not finish loading\n" + res.stdout[-2000:]
    found = json.loads(m.group(1).replace("&quot;", '"'))
    assert found["broken"] == [], f"broken images: {found['broken']}"
    assert found["images"] == page.count("<img ") == 46
    assert found["tables"] == page.count("<table>") and found["rows"] == page.count("<tr><td")
    assert "Binarized MNIST: test negative log-likelihood" in res.stdout and "not run" in res.stdout


def test_every_image_is_displayed_at_least_64_css_pixels_and_crisp(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    params = write_fixture_outputs(root)
    written = build_report(root, params, root / "reports")
    probe = written.html.with_name("probe.html")
    probe.write_text(written.html.read_text().replace("</body>", PROBE, 1))
    res = _run_chromium(tmp_path, "--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom",
                        probe.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, flags=re.S)
    assert m, "probe did not run"
    sizes = json.loads(m.group(1).replace("&quot;", '"'))["sizes"]
    assert len(sizes) == 46
    for s in sizes:
        assert s["w"] >= 64 and s["h"] >= 64, f"{s['src']} displayed at {s['w']}×{s['h']} CSS px"
        if s["unit"]:  # a grid: one of its images, at the displayed scale
            shown = s["unit"] * s["w"] / s["nw"]
            assert shown >= 64, f"{s['src']}: one image shows at {shown:.0f} CSS px"
        assert s["rendering"] == "pixelated", s["src"]
    assert sum(bool(s["unit"]) for s in sizes) == 36  # every sample image is a measured pixel grid

    shot = tmp_path / "report.png"
    _run_chromium(tmp_path, "--window-size=1400,2200", "--hide-scrollbars", f"--screenshot={shot}",
                  written.html.as_uri())
    img = mpimg.imread(shot)
    assert img.shape[:2] == (2200, 1400)
    gray = np.asarray(img[..., :3]).mean(axis=2)
    assert (gray < 0.5).mean() > 0.01  # text was painted, not a blank page
