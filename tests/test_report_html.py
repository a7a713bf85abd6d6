"""report_html.py turns report.md's lines into the page faithfully (tables, code, lists, links, plots inline as
SVG), and plots.compute_frontier is the lowest loss reached with at most C FLOPs. The page of a whole study is
opened in a browser by tests/test_study.py."""
import html
import os

import numpy as np
import pytest

from music_scaling_laws.fits import plots
from music_scaling_laws.study.report_html import inline, markdown_to_html, plot_figure, safe_href

LINES = [
    "## Scaling laws", "",
    "Losses in *nats/token*, by `calc_perplexity.py`; see [fit.json](fit.json) and **bold** <tags> & more.", "",
    "| run | prompt | loss |", "| --- | --- | ---: |",
    "| gpt_16 | `X:1⏎M:6/8 \\| K:D` | 3.252 |", "| lstm_64 | (none) | 2.074 |", "",
    "**Warnings:**", "- only 3 model sizes", "- alpha < 0", "",
    "```", "tunes   12", "<pre> stays text", "```", "",
    "![scaling](plots/scaling.png)", "",
]


def test_report_markdown_becomes_the_same_html(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "scaling.svg").write_text('<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg width="10pt" '
                                                    'viewBox="0 0 10 10"><rect/></svg>\n')
    (tmp_path / "plots" / "scaling.pdf").write_text("%PDF")
    page = markdown_to_html(LINES, plot_figure(str(tmp_path)))
    assert '<h2 id="scaling-laws">Scaling laws</h2>' in page
    assert ("<p>Losses in <em>nats/token</em>, by <code>calc_perplexity.py</code>; see <a href=\"fit.json\">fit.json"
            "</a> and <strong>bold</strong> &lt;tags&gt; &amp; more.</p>") in page
    # a table keeps its columns (an escaped | stays in its cell) and its alignment
    assert page.count("<tr>") == 3 and '<td style="text-align:right">3.252</td>' in page
    assert "<code>X:1⏎M:6/8 | K:D</code>" in page
    assert "<p><strong>Warnings:</strong></p>\n<ul><li>only 3 model sizes</li><li>alpha &lt; 0</li></ul>" in page
    assert "<pre><code>tunes   12\n&lt;pre&gt; stays text</code></pre>" in page
    # the plot: its SVG inline (without the XML prologue), links to the PNG's siblings that exist
    assert '<figure><svg class="plot" preserveAspectRatio="xMidYMid meet" width="10pt"' in page
    assert "<?xml" not in page and "DOCTYPE" not in page
    assert '<a href="plots/scaling.svg">SVG</a> · <a href="plots/scaling.pdf">PDF</a>' in page
    assert 'href="plots/scaling.png"' not in page  # no PNG was written
    assert inline("a * b * c") == "a * b * c"  # a lone star is no emphasis


def test_a_section_of_several_lines_in_one_string_is_split(tmp_path, monkeypatch):
    """report.py's sections may hand over a block (fit_markdown's table) as one string with line breaks."""
    from music_scaling_laws.study import report_html
    seen = {}
    monkeypatch.setattr(report_html, "markdown_to_html", lambda lines, figure: seen.setdefault("lines", lines) and "")
    monkeypatch.setattr(report_html, "listening_grid", lambda st: [])
    monkeypatch.setattr(report_html, "best_tunes", lambda st: [])
    monkeypatch.setattr(report_html, "summary", lambda st, fits: [])

    class St:
        out, best, split = str(tmp_path), {"name": "gpt_16"}, "test"
    report_html.write_html(St(), ["# Title", "| a |\n| --- |\n| 1 |", ""], {}, str(tmp_path / "r.html"))
    assert seen["lines"] == ["| a |", "| --- |", "| 1 |", ""]
    assert "<title>Title</title>" in (tmp_path / "r.html").read_text()


def test_a_plot_without_svg_is_its_png(tmp_path):
    page = markdown_to_html(["![tune lengths](plots/length_histogram.png)"], plot_figure(str(tmp_path)))
    assert '<img src="plots/length_histogram.png" alt="tune lengths">' in page


def test_compute_frontier_is_the_lowest_loss_reached_with_at_most_c():
    small = (np.array([1.0, 10.0]), np.array([4.0, 2.0]))   # ends at C = 10 with loss 2
    large = (np.array([5.0, 100.0]), np.array([5.0, 1.0]))  # starts worse, ends better
    c, loss = plots.compute_frontier([small, large], grid_points=400)
    assert c[0] == 1 and c[-1] == 100 and np.all(np.diff(loss) <= 1e-12)  # never rises
    at = lambda x: loss[np.argmin(np.abs(np.log(c / x)))]  # noqa: E731
    assert at(10) == 2 and at(3) > 2  # through the small run's own points
    assert at(20) == 2  # the small run has ended; the large one is still above 2 there
    assert at(100) == 1


HOSTILE = "[click](javascript:alert(1)) `<img src=x onerror=alert(2)>` [up](../../../etc/passwd) *x*"


def test_text_from_a_user_or_a_dataset_never_becomes_markup_or_a_live_link(tmp_path):
    """Issue 31: a prompt, a dataset path, a dataset's source or a config name holding Markdown (a javascript: link,
    a backtick that closes the code span early, a path out of the folder) is shown as text in report.md and
    report.html; only http(s) links and relative links inside the study folder are ever made."""
    import json
    import re
    from types import SimpleNamespace
    from music_scaling_laws.study import report
    data = tmp_path / "data" / HOSTILE.replace("/", "_")
    data.mkdir(parents=True)
    (data / "stats.json").write_text(json.dumps({"source": HOSTILE, "tokenizer": "char`[x](javascript:1)",
                                                 "splits": {"train": {"tunes": 1, "tokens": 10, "chars": 20}}}))
    (data / "stats.md").write_text("# stats\n")
    out = tmp_path / "study"
    out.mkdir()
    st = SimpleNamespace(data_path=str(data), out=str(out), link=lambda p: os.path.relpath(p, out))
    lines = report.section_dataset(st, {})
    prompt = "X:1⏎" + HOSTILE
    lines += ["| # | prompt |", "| --- | --- |", f"| 1 | {report.md_code(prompt).replace('|', chr(92) + '|')} |",
              f"# Scaling study: {report.md_text(HOSTILE)}", f"Written by {report.md_code('python study.py `x`')}."]
    page = markdown_to_html(lines, plot_figure(str(out)))
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs == ["dataset_stats.md"], hrefs  # the copy inside the study folder, and nothing else
    assert (out / "dataset_stats.md").read_text() == "# stats\n"
    assert "<img" not in page and "<em>" not in page and "javascript:alert(1)" in page  # shown, as text
    assert f"<code>{html.escape(prompt)}</code>" in page  # the prompt, backticks and all, is one code span
    assert "<code>python study.py `x`</code>" in page
    for href, ok in (("fit.json", True), ("plots/a.svg#x", True), ("https://example.org/a", True),
                     ("javascript:alert(1)", False), ("JaVaScRiPt:x", False), ("data:text/html,x", False),
                     ("file:///etc/passwd", False), ("/etc/passwd", False), ("//evil.org/x", False),
                     ("../outside.md", False), ("a/../../b", False), ("vbscript:x", False)):
        assert (safe_href(href) is not None) is ok, href
        assert ('<a href' in inline(f"[t]({href})")) is ok, href


def test_the_summary_leads_with_the_fits_and_holds_warnings_behind_one_click():
    """report.html's summary: the fits first (an interval that reaches the search bound as a one-sided bound), at
    most 6 items, and each family's warnings in one item whose count is visible and text one click away."""
    from types import SimpleNamespace
    from music_scaling_laws.study import report_html
    fit = {"alpha": 0.255, "alpha_ci": [0.21, 0.30], "c": 1.7, "n_params": [1e4, 3e4, 1e5, 3e5], "n_fitted": "all",
           "alpha_non_embedding": 0.181, "alpha_non_embedding_ci": [0.17, 0.19], "sigma_source": "residual",
           "sigma": 0.01, "sigma_df": 2, "warnings": [f"w{i}" for i in range(9)],
           "joint": {"alpha": 0.3, "alpha_ci": [0.1, 0.5], "beta": 0.2, "beta_ci": [0.1, 0.3], "a": 0.4,
                     "a_ci": [0.2, 0.6], "warnings": ["j1", "j2"], "lack_of_fit": {"failed": True}}}
    st = SimpleNamespace(best={"name": "gpt_64"}, size=lambda n: "122k", split="test", ppl={"gpt_64": {"loss": 2.0}},
                         yang_lerch=lambda job: None)
    items = report_html.summary(st, {"gpt": fit, "lstm": dict(fit, warnings=[], alpha_ci=[0.036, 10.0])})
    assert len(items) <= 6 and sum("warnings" in i for i in items) == 2
    assert items[0]["text"].startswith("GPT:") and items[1]["text"].startswith("LSTM:")
    assert "α = 0.255 [0.21, 0.3]" in items[0]["text"] and "α = 0.255 (α > 0.036, no upper bound)" in items[1]["text"]
    assert "which N is fitted matters" in items[0]["text"] and "no compute-optimal frontier" in items[0]["text"]
    warn = next(i for i in items if "warnings" in i and i["text"].startswith("GPT"))
    assert "11 warning(s)" in warn["text"] and "L(N, D): j2" in warn["warnings"]


def test_the_page_title_shows_an_escaped_config_name_as_it_is(tmp_path, monkeypatch):
    from music_scaling_laws.study import report, report_html
    for name in ("listening_grid", "best_tunes"):
        monkeypatch.setattr(report_html, name, lambda st: [])
    monkeypatch.setattr(report_html, "summary", lambda st, fits: [])

    class St:
        out, best, split = str(tmp_path), {"name": "gpt_16"}, "test"
    report_html.write_html(St(), [f"# Scaling study: {report.md_text('study_[x](javascript:1)')}"], {},
                           str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert "<title>Scaling study: study_[x](javascript:1)</title>" in page and "<a " not in page


def test_a_grid_of_many_sizes_scrolls_in_its_own_box_on_a_1280_px_window(tmp_path, monkeypatch):
    """Issue 29: the quick study's listening grid (6 sizes, and a long ABC line) was wider than a 1280-px window. In
    headless Chromium (tests/browser.py) a grid of 8 sizes keeps the page within the window and scrolls inside its
    own box; the summary's warning item is closed, its count visible."""
    import pytest
    from browser import check_page, find_chromium
    from music_scaling_laws.study import report_html
    if find_chromium() is None:
        pytest.skip("chromium is not installed")
    tune = {"title": "gpt_1, seed 1", "seed": 1, "prompt": "", "wav": None, "no_audio": "not rendered", "pages": [],
            "abc": "X:1\n" + "abcdefg" * 120, "abc_link": "x.abc", "midi": None, "checks": [("parses", True)],
            "ended": True, "tokens": 10}
    grid = [{"family": "gpt", "sizes": [{"name": f"gpt_{i}", "params": "1k", "loss": 2.0} for i in range(8)],
             "rows": [{"seed": s, "cells": [tune] * 8} for s in range(2)]}]
    monkeypatch.setattr(report_html, "listening_grid", lambda st: grid)
    monkeypatch.setattr(report_html, "best_tunes", lambda st: [])
    monkeypatch.setattr(report_html, "summary", lambda st, fits: [
        {"text": "GPT: α = 0.3 [0.1, 0.5]"}, {"text": "GPT: 9 warning(s) on its fits", "warnings": ["w"] * 9}])

    class St:
        out, best, split = str(tmp_path), {"name": "gpt_7"}, "test"
    path = report_html.write_html(St(), ["# T", "", "## Files", "", "`" + "a/" * 300 + "`"], {},
                                  str(tmp_path / "report.html"))
    found = check_page(path, tmp_path / "shot.png", tmp_path / "profile")
    assert found["window_width"] == 1280 and found["page_width"] <= 1280, found["page_width"]
    box = found["grids"][0]
    assert box["right"] <= 1280 and box["scroll_width"] > box["client_width"] and box["overflow_x"] == "auto", box
    assert [i["warning"] for i in found["summary"]] == [False, True] and not found["summary"][1]["open"]


@pytest.mark.parametrize("rec, says", [
    ({"midi": "s.mid", "midi_notes": 0}, "abc2midi wrote no notes"),
    ({"midi": "s.mid", "midi_notes": 2, "wav_skipped": "too_long: plays 900 s, over 50 s for 2 notes"},
     "not rendered: plays 900 s, over 50 s for 2 notes"),
    ({"midi": "s.mid", "midi_notes": 9}, "fluidsynth wrote no audio"),
])
def test_a_tune_without_audio_says_why(tmp_path, rec, says):
    """sample.py renders no WAV from a MIDI without notes or one that would play for minutes (its wav_skipped): the
    listening grid says why rather than blaming fluidsynth."""
    from types import SimpleNamespace
    from music_scaling_laws.study.report_html import tune_view
    (tmp_path / "s.abc").write_text("X:1\nK:C\nCDEF|\n")
    st = SimpleNamespace(link=lambda path: os.path.relpath(path, tmp_path))
    view = tune_view(st, str(tmp_path), {"path": str(tmp_path / "s.abc"), **rec}, None, "t")
    assert view["wav"] is None and says in view["no_audio"]
