"""`make report-check`: open report.html in a real headless Chromium at 1280 px and as a 390 px phone.

Checks what a reader would notice: no console errors, every image decodes, the page is laid
out for the phone's width (viewport meta honoured), nothing overflows sideways at 390 px
(wide tables scroll inside their own box), no two blocks of text (headings, paragraphs, list
items, captions, figures, tables) overlap, and every figure has at least MIN_NATURAL_PX pixels
of width while it fills at least PHONE_FILL of the phone's screen. Drives Debian's chromium and chromedriver through
Selenium (no browser download). Without a report folder argument it writes one from the
simulated 27-task study (usagg/analysis/simulate.py), so it needs no training.

    python tools/report_check.py [REPORT_DIR]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIDTHS = {"desktop": 1280, "phone": 390}
#: A figure must carry at least this many pixels of width (a phone zooms into it) ...
MIN_NATURAL_PX = 600
#: ... and show at least this share of the phone screen's width.
PHONE_FILL = 0.9

#: Pairs of visible text blocks whose boxes intersect by more than a pixel (neither inside the other).
_OVERLAPS = """
const sel = 'h1,h2,h3,p,li,figcaption,figure img,pre,table';
const els = Array.from(document.querySelectorAll(sel)).map(e => [e, e.getBoundingClientRect()])
  .filter(([e, r]) => r.width > 0 && r.height > 0);
const name = e => e.tagName.toLowerCase() + ' "' + (e.alt || e.textContent).trim().slice(0, 40) + '"';
const out = [];
for (let i = 0; i < els.length; i++) {
  const [ea, a] = els[i];
  for (let j = i + 1; j < els.length; j++) {
    const [eb, b] = els[j];
    if (ea.contains(eb) || eb.contains(ea)) continue;
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
      out.push(name(ea) + ' and ' + name(eb));
  }
}
return out;
"""
#: [alt, natural width, shown width] of each figure's image.
_FIGURES = (
    "return Array.from(document.querySelectorAll('figure img')).map(i => [i.alt, i.naturalWidth, "
    "i.getBoundingClientRect().width])"
)


def _browser(width: int, phone: bool):  # type: ignore[no-untyped-def]
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary:
        options.binary_location = binary
    if phone:
        options.add_experimental_option(
            "mobileEmulation", {"deviceMetrics": {"width": width, "height": 844, "pixelRatio": 3.0, "touch": True}}
        )
    else:
        options.add_argument(f"--window-size={width},1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = shutil.which("chromedriver")
    service = webdriver.ChromeService(executable_path=driver) if driver else webdriver.ChromeService()
    return webdriver.Chrome(options=options, service=service)


def check(html: Path) -> list[str]:
    """Problems found in `html` at each width ([] when it reads well everywhere)."""
    problems: list[str] = []
    for name, width in WIDTHS.items():
        browser = _browser(width, phone=name == "phone")
        try:
            browser.get(html.resolve().as_uri())
            errors = [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
            problems += [f"{name}: console error: {m}" for m in errors]
            broken = browser.execute_script(
                "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
            )
            n_images = browser.execute_script("return document.images.length")
            if broken:
                problems.append(f"{name}: images that do not decode: {broken}")
            layout, scroll = browser.execute_script(
                "return [document.documentElement.clientWidth, document.documentElement.scrollWidth]"
            )
            if layout > width + 10:
                problems.append(f"{name}: laid out {layout} px wide for a {width} px screen (viewport meta missing?)")
            if scroll > layout + 1:
                problems.append(f"{name}: the page scrolls sideways ({scroll} px of content in {layout} px)")
            overlaps = browser.execute_script(_OVERLAPS)
            problems += [f"{name}: text overlaps: {o}" for o in overlaps]
            figures = browser.execute_script(_FIGURES)
            for alt, natural, shown in figures:
                if natural < MIN_NATURAL_PX:
                    problems.append(f"{name}: figure {alt} is {natural} px wide, fewer than {MIN_NATURAL_PX}")
                if name == "phone" and shown < PHONE_FILL * layout:
                    problems.append(f"{name}: figure {alt} shows {shown:.0f} px wide on a {layout} px screen")
            narrowest = min((shown for _, _, shown in figures), default=0)
            print(f"{name:8} {width:5} px: layout {layout} px, content {scroll} px, {n_images} images "
                  f"(narrowest figure shown {narrowest:.0f} px), {len(errors)} console errors, "
                  f"{len(overlaps)} overlaps")  # fmt: skip
        finally:
            browser.quit()
    return problems


def _simulated_report(folder: Path) -> Path:
    from usagg.analysis.simulate import load_tasks, simulate_run_store

    store = simulate_run_store(folder / "runs" / "fmc", load_tasks(REPO / "tests" / "data" / "fmc_uia_tasks.yaml"))
    out = folder / "report"
    subprocess.run([sys.executable, "-m", "usagg", "report", str(store), "--out", str(out)], check=True)
    return out


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(argv[0]) if argv else _simulated_report(Path(tmp))
        html = folder / "report.html"
        if not html.is_file():
            print(f"error: {html} does not exist; run `usagg report` first", file=sys.stderr)
            return 2
        problems = check(html)
    for p in problems:
        print(f"problem: {p}")
    print("report check: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
