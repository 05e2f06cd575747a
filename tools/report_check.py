"""`make report-check`: open report.html in a real headless Chromium at 1280 px and as a 390 px phone.

Checks what a reader would notice: no console errors, every image decodes, the page is laid
out for the phone's width (viewport meta honoured) and nothing overflows sideways at 390 px
(wide tables scroll inside their own box). Drives Debian's chromium and chromedriver through
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
            print(f"{name:8} {width:5} px: layout {layout} px, content {scroll} px, {n_images} images, "
                  f"{len(errors)} console errors")  # fmt: skip
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
