"""report.html is report.md rendered by markdown-it: a short summary before the contents, the statistics after them,
headings the contents links reach, tables in scroll boxes, figures full width and linked to their PNG, code spans
rendered, and no HTML or image smuggled in through a task name. No browser: the page is parsed with html.parser."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from usagg.analysis.figures import FigureOut
from usagg.analysis.inputs import load_input
from usagg.analysis.report import HEADLINE, write_report
from usagg.analysis.report_html import MIN_SHOWN_PX
from usagg.analysis.results import read_results, write_results
from usagg.analysis.simulate import simulate_run_store
from usagg.analysis.summary import Analysis, analyse
from usagg.data.synth.tasks import TASKS as SYNTH
from usagg.store import RunStore

EVIL = "<script>alert(1)</script>![x](http://evil.example/t.png)"


class Page(HTMLParser):
    """Start tags in order with their attributes and the path of open tags above each."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = []
        self.open: list[str] = []
        self.text: list[tuple[str, tuple[str, ...]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs), tuple(self.open)))
        if tag not in ("img", "meta", "br", "hr"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.text.append((data, tuple(self.open)))


def _figures(folder: Path, dpi: int) -> list[FigureOut]:
    """Two PNGs shaped like the report's (7 inch and 3.5 inch wide at `dpi`)."""
    out = []
    for name, inches in (("fig3_delta", 7.0), ("fig_task_type", 3.5)):
        path = folder / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (round(inches * dpi), 300), "white").save(path)
        out.append(FigureOut(name, path, f"What {name} shows; see `tables/delta.csv`."))
    return out


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    tasks = [{"id": t.id, "type": t.type, "num_classes": t.num_classes, "group": t.group} for t in SYNTH.values()]
    run = simulate_run_store(tmp_path_factory.mktemp("runs") / "html", tasks, seeds=(0, 1))
    store = RunStore(run)
    first = read_results(store.results_csv).rows[0].task
    rows = [dataclasses.replace(r, task=EVIL) if r.task == first else r for r in read_results(store.results_csv).rows]
    write_results(rows, store.results_csv)
    store.mark_results_fresh()
    return analyse(load_input(run, None))


@pytest.fixture(scope="module")
def page(analysis: Analysis, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Page]:
    folder = tmp_path_factory.mktemp("rep")
    write_report(analysis, folder, render=lambda _a, _f, _fmt, dpi: _figures(folder, dpi))
    text = (folder / "report.html").read_text(encoding="utf-8")
    parsed = Page()
    parsed.feed(text)
    return text, parsed


def test_summary_is_short_and_the_statistics_follow_the_contents(page: tuple[str, Page], analysis: Analysis) -> None:
    text, _ = page
    first_ul = text.index("<ul>")
    summary = text[first_ul : text.index("</ul>", first_ul)]
    assert summary.count("<li>") == len(analysis.comp.others) + 1 <= 6
    assert "Spearman" not in summary and "mixed" not in summary  # those are in the statistics section
    contents, stats = text.index("<p>Contents:"), text.index(f'<h2 id="headline-statistics">{HEADLINE}</h2>')
    assert first_ul < contents < stats
    assert "Spearman ρ(Δ, log n_train)" in text[stats : text.index("<h2", stats + 1)]


def test_every_contents_link_reaches_a_heading(page: tuple[str, Page]) -> None:
    _, p = page
    ids = {a["id"] for tag, a, _ in p.tags if tag.startswith("h") and "id" in a}
    links = [a["href"] for tag, a, path in p.tags if tag == "a" and "p" in path and (a["href"] or "").startswith("#")]
    assert len(links) >= 8 and {h[1:] for h in links} <= ids


def test_figures_fill_a_phone_and_link_to_their_png(page: tuple[str, Page]) -> None:
    text, p = page
    imgs = [(a, path) for tag, a, path in p.tags if tag == "img"]
    assert len(imgs) == 2
    for a, path in imgs:
        assert path[-2:] == ("figure", "a") and a["src"].startswith("data:image/png;base64,")
        assert int(a["width"]) >= MIN_SHOWN_PX  # natural size: more pixels than a phone shows
        assert int(a["style"].removeprefix("max-width:").removesuffix("px")) >= MIN_SHOWN_PX
    hrefs = [a["href"] for tag, a, path in p.tags if tag == "a" and path[-1:] == ("figure",)]
    assert hrefs == ["figures/fig3_delta.png", "figures/fig_task_type.png"]
    assert "figure img{display:block;width:100%" in text  # full width of the screen, up to max-width
    captions = [d for d, path in p.text if "figcaption" in path]
    assert "tables/delta.csv" in captions  # the caption's code span rendered, not shown with backticks


def test_markdown_is_rendered_not_shown(page: tuple[str, Page]) -> None:
    text, p = page
    assert "<code>tables/</code>" in text and "`tables/`" not in text
    assert "**" not in text and "<strong>" in text
    tables = [path for tag, _, path in p.tags if tag == "table"]
    assert tables and all(path[-1] == "div" for path in tables)
    assert all(a.get("class") == "scroll" for tag, a, path in p.tags if tag == "div")


def test_a_task_name_cannot_inject_markup_or_load_an_image(page: tuple[str, Page]) -> None:
    text, p = page
    assert "<script" not in text
    assert all(a["src"].startswith("data:image/png") for tag, a, _ in p.tags if tag == "img")
    assert "evil.example" not in "".join(str(a) for _, a, _ in p.tags)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # shown as text


def test_page_marks_random_init_and_shows_a_stray_image_as_text(tmp_path: Path) -> None:
    from usagg.analysis.report_html import render_page

    (tmp_path / "figures").mkdir()
    Image.new("RGB", (700, 100), "white").save(tmp_path / "figures" / "other.png")
    md = "# T\n\n## Provenance\n\n- RANDOM INIT: no weights\n- fine\n\n![other](figures/other.png)\n\n*other*: cap\n"
    page = render_page("T <b>", md, tmp_path, [], 300)
    assert '<li class="warn">RANDOM INIT: no weights</li>' in page and "<li>fine</li>" in page
    assert '<h2 id="provenance">Provenance</h2>' in page and "<title>T &lt;b&gt;</title>" in page
    assert "<img" not in page and "<figure" not in page  # not one of the report's figures: its alt text only
