"""The study's HTML report (``snakemake --report report.html``) in a real headless browser.

Snakemake 9's report is one HTML file: a React app whose data (``results``, ``categories``) is
embedded in script tags, each figure as a data URI. The test opens the smoke study's report in
Debian's chromium (driven over the DevTools protocol, ``tests/chromium.py``, which installs it when
it is missing) and clicks through it as a reader would: every category in the menu, every
subcategory, every result's view button. It requires no console error, uncaught exception, failed
or non-local resource load; a menu that lists the study's categories; and every figure of the
report (every image result, whatever the workflow registers) shown in the page and decoded to a
nonzero size, with the bytes of its file under results/. Every PNG/SVG under
results/<study>/figures/ must be in the report in some format. The other tests break a copy of the
report in one way each and check that the check notices.
"""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import pytest

from chromium import BrowserError, Chromium, ChromiumUnavailable, Page, install_chromium
from conftest import smoke_config, snakemake

pytestmark = [pytest.mark.browser, pytest.mark.workflow]

# Clicks through the report and returns what it saw; runs in the page, as `(WALK)(timeoutMs)`.
# It uses the report's embedded data (`results`, `categories`) and its DOM: the menu items are
# `nav ul > li > a`, the breadcrumbs `nav ol > li > a` (the first is home), each result is a row of
# the results table whose last cell's first link views it (href "#"; a download link otherwise),
# and the viewed figure is the `img` outside the nav.
WALK = r"""
async (timeoutMs) => {
  const out = {results: {}, menu: [], shown: {}, errors: []};
  for (const [path, r] of Object.entries(results)) {
    const image = r.mime_type.startsWith('image/');
    out.results[path] = {mime_type: r.mime_type, data_uri: image ? r.data_uri : null};
  }
  out.categories = categories;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const until = async (what, condition) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = condition();
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await sleep(20);
    }
  };
  const links = (selector) => [...document.querySelectorAll(`#app nav ${selector}`)];
  const menuItem = (label) => links('ul > li > a').find((a) => a.textContent.trim() === label);
  const content = () => [...document.querySelectorAll('#app img, #app iframe')]
    .find((el) => !el.closest('nav'));
  try {
    await until('the report app to render its menu', () => links('ul > li > a').length);
  } catch (error) {
    out.errors.push(String(error));
    return out;
  }
  out.menu = links('ul > li > a').map((a) => a.textContent.trim());
  const names = Object.keys(categories);
  for (const category of names) {
    const subcategories = Object.keys(categories[category]);
    for (const subcategory of subcategories) {
      const where = `${category} / ${subcategory}`;
      try {
        (await until('the home breadcrumb', () => links('ol > li > a')[0])).click();
        const label = names.length === 1 ? 'Results' : category;
        (await until(`menu item "${label}"`, () => menuItem(label))).click();
        if (subcategories.length > 1) {
          (await until(`subcategory item "${subcategory}"`, () => menuItem(subcategory))).click();
        }
        const rows = await until(`the results table of ${where}`, () => links('table tbody tr').length);
        for (let i = 0; i < rows; i++) {
          const view = links('table tbody tr')[i].querySelector('td:last-child a');
          if (!view || view.getAttribute('href') !== '#') continue;  // a download link
          const before = content()?.getAttribute('src');
          view.click();
          const src = await until(`row ${i + 1} of ${where} to show its result`, () => {
            const now = content()?.getAttribute('src');
            return now !== before && now;
          });
          const path = Object.keys(results).find((p) => results[p].data_uri === src);
          if (path === undefined) {
            out.errors.push(`row ${i + 1} of ${where} shows ${src.slice(0, 80)}…, none of the results`);
            continue;
          }
          const img = content();
          if (img.tagName !== 'IMG') continue;
          const error = await Promise.race([img.decode().then(() => null, (e) => String(e)),
                                            sleep(timeoutMs).then(() => 'timed out decoding')]);
          const box = img.getBoundingClientRect();
          out.shown[path] = {where, error, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
                             width: box.width, height: box.height};
        }
      } catch (error) {
        out.errors.push(`${where}: ${error}`);
      }
    }
  }
  return out;
}
"""

FIGURE_SUFFIXES = (".png", ".svg")


def figures_on_disk(workdir: Path) -> list[Path]:
    figures = workdir / "results" / smoke_config()["study"] / "figures"
    return sorted(p for p in figures.iterdir() if p.suffix in FIGURE_SUFFIXES)


def walk_report(page: Page, timeout_s: float = 10.0) -> tuple[dict | None, list[str]]:
    """Click through the report in ``page``: (what the walk saw, or None; what went wrong in the page)."""
    try:
        walk = page.evaluate(f"({WALK})({timeout_s * 1000:.0f})", timeout=60 + 10 * timeout_s)
        errors = []
    except BrowserError as error:
        walk, errors = None, [f"the report's app failed: {error}"]
    return walk, errors + page.problems()  # after the walk, so that errors while clicking count


def walk_problems(walk: dict, workdir: Path, figure_files: list[Path]) -> list[str]:
    """What is wrong with the report as the walk saw it, for a study run in ``workdir``."""
    problems = [f"clicking through the report: {error}" for error in walk["errors"]]
    categories, results = walk["categories"], walk["results"]
    expected_menu = ["Results"] if len(categories) == 1 else list(categories)
    problems += [f"the report's menu has no item {label!r} (menu: {walk['menu']})"
                 for label in expected_menu if label not in walk["menu"]]
    images = {path: r for path, r in results.items() if r["mime_type"].startswith("image/")}
    if not images:
        problems.append(f"the report contains no figure (results: {sorted(results)})")
    shown_stems = {str(Path(path).with_suffix("")) for path in images}
    for file in figure_files:
        if str(file.relative_to(workdir).with_suffix("")) not in shown_stems:
            problems.append(f"{file.relative_to(workdir)} is in no format among the report's figures")
    for path, result in images.items():
        shown = walk["shown"].get(path)
        if shown is None:
            problems.append(f"figure {path} was never shown by clicking through the report")
        elif shown["error"] or min(shown["naturalWidth"], shown["naturalHeight"], shown["width"],
                                   shown["height"]) <= 0:
            problems.append(f"figure {path} does not display: {shown}")
        embedded = base64.b64decode(result["data_uri"].partition(";base64,")[2])
        if not (workdir / path).is_file() or embedded != (workdir / path).read_bytes():
            problems.append(f"figure {path}: the report's copy is not the file {workdir / path}")
    return problems


def check_report(browser: Chromium, html: Path, workdir: Path,
                 timeout_s: float = 10.0) -> tuple[list[str], dict | None]:
    """Open ``html`` (the report of the study in ``workdir``) and click through it: (problems, walk)."""
    page = browser.open(html.as_uri())
    try:
        walk, problems = walk_report(page, timeout_s)
    finally:
        page.close()
    if walk is not None:
        problems += walk_problems(walk, workdir, figures_on_disk(workdir))
    return problems, walk


@pytest.fixture(scope="module")
def report(finished_smoke, tmp_path_factory) -> Path:
    """The smoke study's report.html, made by Snakemake in a copy of the finished smoke study."""
    workdir = tmp_path_factory.mktemp("report") / "smoke"
    shutil.copytree(finished_smoke, workdir, symlinks=True)
    snakemake(workdir, smoke_config(), "--report", "report.html")
    return workdir / "report.html"


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Debian's chromium, installed on first use when missing (apt-get, as root), as the SLURM tests' cluster is."""
    try:
        return install_chromium()
    except ChromiumUnavailable as error:  # a failure, not a skip
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def browser(chromium_executable):
    with Chromium(chromium_executable) as chromium:
        yield chromium


def test_report_opens_without_errors_and_shows_every_figure(report, browser):
    start = time.monotonic()
    problems, walk = check_report(browser, report, report.parent)
    assert not problems, "the report is broken in chromium:\n" + "\n".join(problems)
    shown = {path: (s["naturalWidth"], s["naturalHeight"]) for path, s in walk["shown"].items()}
    print(f"{browser.version}: showed {shown} in {time.monotonic() - start:.1f} s")
    assert shown


def _corrupt_first_figure(html: str) -> str:
    start = html.index(";base64,", html.index('"mime_type": "image/')) + len(";base64,")
    return html[:start] + "Tm90IGFuIGltYWdlLg==" + html[html.index('"', start):]


def _drop_script(script_id: str):
    def drop(html: str) -> str:
        start = html.index(f'<script id="{script_id}">')
        return html[:start] + html[html.index("</script>", start) + len("</script>"):]
    return drop


def _before_body_end(tag: str):
    def insert(html: str) -> str:
        end = html.rindex("</body>")  # the last: scripts in the report contain the string too
        return html[:end] + tag + "\n" + html[end:]
    return insert


BREAKAGES = {
    "syntax error in a script": (_before_body_end("<script>this is not javascript</script>"),
                                 "uncaught exception: SyntaxError"),
    "report data missing": (_drop_script("results"), "ReferenceError: results is not defined"),
    "app never rendered": (lambda html: html.replace("root.render(e(App));", ""),
                           "waiting for the report app to render its menu"),
    "category missing from the menu": (lambda html: html.replace("this.getCategoryMenumitems()", "[]"),
                                       "the report's menu has no item"),
    "figure that does not decode": (_corrupt_first_figure, "does not display"),
    "missing local resource": (_before_body_end('<img src="no-such-figure.png">'),
                               "failed to load a resource: net::ERR_FILE_NOT_FOUND"),
    "resource from the network": (
        _before_body_end('<link rel="stylesheet" href="https://example.invalid/a.css">'),
        "request for a non-local resource: https://example.invalid/a.css"),
    "console error": (_before_body_end("<script>console.error('boom')</script>"), "console.error: boom"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_check_fails_on_a_broken_report(report, browser, tmp_path, breakage):
    corrupt, expected = BREAKAGES[breakage]
    original = report.read_text()
    broken = corrupt(original)
    assert broken != original, f"the corruption {breakage!r} no longer applies to snakemake's report"
    html = tmp_path / "report.html"
    html.write_text(broken)
    problems, _ = check_report(browser, html, report.parent, timeout_s=2)
    assert any(expected in p for p in problems), f"{expected!r} not among the problems: {problems}"


def test_check_fails_on_a_figure_missing_from_report(report, browser, tmp_path):
    """A figure written under figures/ but not in the report (in any format) is a problem."""
    page = browser.open(report.as_uri())
    walk, problems = walk_report(page)
    page.close()
    assert not problems
    extra = report.parent / "results" / smoke_config()["study"] / "figures" / "not_in_report.svg"
    problems = walk_problems(walk, report.parent, [*figures_on_disk(report.parent), extra])
    assert problems == [f"{extra.relative_to(report.parent)} is in no format among the report's figures"]


# The landing page as the report opens: its description (workflow/report/workflow.rst) and what it shows.
LANDING = r"""
async (timeoutMs) => {
  const deadline = Date.now() + timeoutMs;
  const title = () => document.querySelector('#app .prose h1');
  while (!title() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  if (!title()) return null;
  const prose = title().closest('.prose');
  return {title: title().textContent, top: title().getBoundingClientRect().top,
          links: [...prose.querySelectorAll('a')].map((a) => a.textContent),
          figures: [...prose.querySelectorAll('svg')].map((svg) => svg.getBoundingClientRect().width),
          summary: prose.querySelector('pre')?.textContent ?? ''};
}
"""


def test_the_report_opens_on_the_studys_figures_and_summary(report, browser):
    from scaling.report import FIGURES

    page = browser.open(report.as_uri())
    try:
        landing = page.evaluate(f"({LANDING})(10000)", timeout=60)
        problems = page.problems()
    finally:
        page.close()
    assert not problems and landing is not None, problems
    assert landing["title"] == smoke_config()["title"] and 0 <= landing["top"] < 200  # in view, at the top
    assert sorted(landing["links"]) == sorted(f"{name}.png" for name in FIGURES)  # each opens its result
    assert len(landing["figures"]) == len(FIGURES) and min(landing["figures"]) > 200  # drawn, scaled to the column
    summary = (report.parent / "results" / smoke_config()["study"] / "summary.md").read_text()
    assert landing["summary"].strip() == summary.strip()
