"""report_html.py turns report.md's lines into the page faithfully (tables, code, lists, links, plots inline as
SVG), and plots.compute_frontier is the lowest loss reached with at most C FLOPs. The page of a whole study is
opened in a browser by tests/test_study.py."""
import numpy as np

from music_scaling_laws.fits import plots
from music_scaling_laws.study.report_html import inline, markdown_to_html, plot_figure

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
