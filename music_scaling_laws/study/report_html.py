"""
report.html of a scaling study: report.md as a page to read and listen to. report.py calls write_html with the
markdown lines it has just written to report.md (one text feeds both, so the two never disagree) and the Study it
read them from. The page adds what Markdown cannot show:
- every plot inline, as the vector SVG plots.py writes beside each PNG;
- a summary in plain words at the top: the best model, each family's fitted law with its interval, the warnings;
- a listening grid: per family, the same seeds (one row each) from every size (one column each, small to large),
  each tune with its audio player and sheet music; the best model's tunes, unconditional and prompted, below it.
Every link is relative to the study folder and nothing is fetched from the network, so the folder can be copied
anywhere and opened offline. docs/report.md says how to read it.
"""
import html
import os
import re

from music_scaling_laws.evaluation.eval_metrics import YANG_LERCH_NAMES
from music_scaling_laws.fits.fitting import with_ci
from music_scaling_laws.fits.fit_text import N_WORDS, noise_text
from music_scaling_laws.run_files import samples_path

# -----------------------------------------------------------------------------
# Markdown to HTML: the subset report.py writes (headings, paragraphs, pipe tables, fenced code, bullet lists,
# images alone on a line; inline `code`, **bold**, *italic* and [links](...))

IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")
INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\*([^*\s][^*]*?)\*|\[([^\]]+)\]\(([^)\s]+)\)")


def inline(text):
    """Inline Markdown of one line as HTML, everything else escaped."""
    out, pos = [], 0
    for m in INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, bold, italic, label, href = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{inline(bold)}</strong>")
        elif italic is not None:
            out.append(f"<em>{inline(italic)}</em>")
        else:
            out.append(f'<a href="{html.escape(href)}">{inline(label)}</a>')
        pos = m.end()
    return "".join(out) + html.escape(text[pos:])


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def table_cells(line):
    """The cells of a pipe-table row; an escaped \\| stays in its cell."""
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_to_html(lines, figure):
    """HTML of report.md's lines; figure(alt, src) returns the HTML of an image alone on a line."""
    out, i, para = [], 0, []

    def flush():
        if para:
            out.append("<p>" + " ".join(inline(p) for p in para) + "</p>")
            para.clear()
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
        elif stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j
        elif m := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            flush()
            level, text = len(m.group(1)), m.group(2)
            out.append(f'<h{level} id="{slug(text)}">{inline(text)}</h{level}>')
        elif stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[i + 1].strip()):
            flush()
            header, aligns = table_cells(stripped), table_cells(lines[i + 1])
            align = ["right" if a.endswith(":") and not a.startswith(":") else
                     "center" if a.startswith(":") and a.endswith(":") else "left" for a in aligns]
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(table_cells(lines[i]))
                i += 1
            i -= 1
            head = "".join(f'<th style="text-align:{a}">{inline(c)}</th>' for c, a in zip(header, align))
            body = "".join("<tr>" + "".join(f'<td style="text-align:{a}">{inline(c)}</td>'
                                            for c, a in zip(row, align)) + "</tr>" for row in rows)
            out.append(f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        elif re.match(r"^[-*] ", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"^[-*] ", lines[i].strip()):
                items.append(f"<li>{inline(lines[i].strip()[2:])}</li>")
                i += 1
            i -= 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif m := IMAGE.match(stripped):
            flush()
            out.append(figure(m.group(1), m.group(2)))
        else:
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out)


# -----------------------------------------------------------------------------
# files of the study folder

def inline_svg(path):
    """An SVG file's <svg> element, to put in the page itself (scaled to the page's width)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = text[text.index("<svg"):]
    return re.sub(r"<svg\b", '<svg class="plot" preserveAspectRatio="xMidYMid meet"', text, count=1)


def plot_figure(out_dir):
    """figure(alt, src) for markdown_to_html: a plot's SVG (written beside its PNG by plots.py) inline, the PNG
    where there is no SVG, and a link to the PDF for a paper."""
    def figure(alt, src):
        path = os.path.join(out_dir, src)
        stem = os.path.splitext(path)[0]
        if os.path.isfile(stem + ".svg"):
            body = inline_svg(stem + ".svg")
        else:
            body = f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'
        links = [f'<a href="{html.escape(os.path.splitext(src)[0] + ext)}">{ext[1:].upper()}</a>'
                 for ext in (".png", ".svg", ".pdf") if os.path.isfile(stem + ext)]
        caption = html.escape(alt) + (" · " + " · ".join(links) if links else "")
        return f'<figure>{body}<figcaption>{caption}</figcaption></figure>'
    return figure


def media(st, folder, rec, kind):
    """The link (relative to the study folder) of a sample's rendered file of a kind (wav, svg, midi), or None
    where it was not rendered or is gone."""
    name = rec.get(kind)
    path = os.path.join(folder, os.path.basename(name)) if name else None
    return st.link(path) if path and os.path.isfile(path) else None


def tune_view(st, folder, rec, res, title):
    """What the page shows of one tune: its title, audio, sheet-music pages, ABC text and checks."""
    pages = [st.link(os.path.join(folder, os.path.basename(p))) for p in rec.get("svg_pages") or []
             if os.path.isfile(os.path.join(folder, os.path.basename(p)))]
    svg = media(st, folder, rec, "svg")
    try:
        with open(rec["path"], errors="replace") as f:
            abc = f.read()
    except OSError:  # deleted since: the page still shows what was rendered
        abc = "(the .abc file is no longer there)"
    checks = []
    if res is not None:
        checks = [("parses", res["parse_ok"]), ("converts to MIDI", res["midi_notes"] > 0),
                  ("without errors", res["midi_ok"]), ("not degenerate", not res["degenerate"])]
    why = None
    if not media(st, folder, rec, "wav"):
        why = ("abc2midi wrote no notes" if rec.get("midi_notes") == 0 else
               "not rendered" if "midi" not in rec else "fluidsynth wrote no audio")
    return {"title": title, "seed": rec.get("seed"), "prompt": rec.get("prompt", ""),
            "wav": media(st, folder, rec, "wav"),
            "no_audio": why, "pages": pages or ([svg] if svg else []), "abc": abc, "abc_link": st.link(rec["path"]),
            "midi": media(st, folder, rec, "midi"), "checks": checks, "ended": rec.get("ended_with_eot"),
            "tokens": rec.get("tokens")}


def listening_grid(st):
    """Per family: the sizes (small to large) and one row per seed of their by_size tunes, each cell a tune_view
    or None where that size has no tune of that seed."""
    folders = {name: folder for name, folder, _, _ in st.jobs}
    families = []
    for fam in dict.fromkeys(r["model_type"] for r in st.plan):
        sizes = sorted((r for r in st.plan if r["model_type"] == fam and f"by_size/{r['name']}" in folders
                        and os.path.isfile(samples_path(folders[f"by_size/{r['name']}"]))),
                       key=lambda r: st.results[r["name"]]["n_params"])
        if not sizes:
            continue
        by_seed = {}
        for j, r in enumerate(sizes):
            folder = folders[f"by_size/{r['name']}"]
            for rec, res in st.samples(folder):
                row = by_seed.setdefault(rec["seed"], [None] * len(sizes))
                row[j] = tune_view(st, folder, rec, res, f"{r['name']}, seed {rec['seed']}")
        families.append({"family": fam, "sizes": [{"name": r["name"], "params": st.size(r["name"]),
                                                   "loss": st.ppl[r["name"]]["loss"]} for r in sizes],
                         "rows": [{"seed": seed, "cells": cells} for seed, cells in sorted(by_seed.items())]})
    return families


def best_tunes(st):
    """[(set name, [tune_view])] of the best model's sample sets: unconditional, then each prompt."""
    sets = []
    for name, folder, _, _ in st.jobs:
        if not name.startswith("best/") or not os.path.isfile(samples_path(folder)):
            continue
        pairs = st.samples(folder)
        label = "unconditional" if name == "best/unconditional" else \
            "prompt " + (pairs[0][0].get("prompt", "").replace("\n", " ⏎ ") if pairs else name)
        sets.append((label, [tune_view(st, folder, rec, res, f"{label}: tune {k} (seed {rec.get('seed')})")
                             for k, (rec, res) in enumerate(pairs, start=1)]))
    return sets


def summary(st, fits):
    """The study's findings in plain sentences (the tables below hold every number)."""
    best = st.best["name"]
    lines = [f"The best model is {best} ({st.size(best)} parameters): {st.split} loss "
             f"{st.ppl[best]['loss']:.4f} nats/token."]
    yl = st.yang_lerch("best/unconditional") or {}
    compared = {k: c for k, c in yl.items() if c["compared"] and c.get("baseline")}
    if compared:
        alike = [YANG_LERCH_NAMES.get(k, k) for k, c in compared.items()
                 if c["overlap"] >= c["baseline"]["overlap_ci"][0]]
        lines.append(f"Against real tunes (Yang & Lerch), its unconditional tunes are as close as real tunes are to "
                     f"each other on {len(alike)} of {len(compared)} features"
                     + (f" ({', '.join(alike)})" if alike else "") + "; the table under its samples has the numbers.")
    for fam, f in (fits or {}).items():
        if "alpha" not in f:
            continue
        # the sizes, N and noise of the fit itself (power_law's fit policy): repeats of a size are not more sizes
        sentence = (f"{fam.upper()}: over {len(set(f['n_params']))} sizes the loss follows L = a·N^−α + c "
                    f"(N = {N_WORDS[f.get('n_fitted', 'all')]}) with α = {with_ci(f, 'alpha')} and a floor "
                    f"c = {f['c']:.3g}")
        if f.get("alpha_without_largest") is not None:
            sentence += f"; without its largest model, which is not its best, α = {with_ci(f, 'alpha_without_largest')}"
        if "joint" in f:
            j = f["joint"]
            sentence += (f"; over model size and data together, L = E + A/N^α + B/D^β with α = {with_ci(j, 'alpha')}"
                         f" and β = {with_ci(j, 'beta')}")
        lines.append(sentence + ".")
        if "sigma_source" in f:
            lines.append(f"{fam.upper()}: {noise_text(f)}.")
        lines += [f"Warning ({fam}): {w}" for w in f.get("warnings", [])]
        lines += [f"Warning ({fam}, L(N, D)): {w}" for w in f.get("joint", {}).get("warnings", [])]
    return lines


# -----------------------------------------------------------------------------
# the page

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1em 2em; color: #222; }
nav { position: sticky; top: 0; background: #fafafa; border-bottom: 1px solid #ddd; padding: .4em 0; z-index: 2;
      font-size: 14px; }
nav a { margin-right: 1em; }
h1 { font-size: 1.8em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
.summary { background: #f3f7fb; border-left: 4px solid #4a7ab5; padding: .6em 1em; }
.summary li.warning { color: #8a4b00; }
.table { overflow-x: auto; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; vertical-align: top; }
th { background: #f2f2f2; }
td[style*="right"] { white-space: nowrap; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: 12px; }
figure { margin: 1em 0; } figcaption { font-size: 13px; color: #555; }
svg.plot { width: 100%; height: auto; max-width: 1100px; }
.grid td { min-width: 240px; } .grid td:first-child { min-width: 0; width: 4em; }
.tune img { width: 100%; max-width: 520px; background: white; border: 1px solid #eee; }
.tune audio { width: 100%; max-width: 320px; }
.tune .checks span { font-size: 12px; margin-right: .5em; }
.ok { color: #1a7f37; } .no { color: #b42318; }
.tunes { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1em; }
.tunes .tune { border: 1px solid #ddd; padding: .5em; border-radius: 4px; }
details pre { max-height: 300px; }
</style>
</head>
<body>
<nav>{% for h in nav %}<a href="#{{ h.id }}">{{ h.text }}</a>{% endfor %}</nav>
<h1 id="top">{{ title }}</h1>
<div class="summary"><ul>{% for line in summary %}<li{% if line.startswith('Warning') %} class="warning"{% endif %}>{{ line }}</li>{% endfor %}</ul></div>

{% macro tune(t) -%}
<div class="tune">
  <div><strong>{{ t.title }}</strong>{% if t.prompt %} · prompt <code>{{ t.prompt | replace('\n', ' ⏎ ') }}</code>{% endif %}</div>
  {% if t.wav %}<audio controls preload="metadata" src="{{ t.wav }}"></audio>{% else %}<div class="no">no audio: {{ t.no_audio }}</div>{% endif %}
  <div class="checks">{% for name, ok in t.checks %}<span class="{{ 'ok' if ok else 'no' }}">{{ '✓' if ok else '✗' }} {{ name }}</span>{% endfor %}
    <span>{{ t.tokens }} tokens{% if not t.ended %}, cut at the limit{% endif %}</span></div>
  {% for page in t.pages %}<a href="{{ page }}"><img src="{{ page }}" alt="sheet music of {{ t.title }}"></a>{% else %}<div class="no">no sheet music: abcm2ps could not set it</div>{% endfor %}
  <details><summary>ABC text · <a href="{{ t.abc_link }}">abc</a>{% if t.midi %} · <a href="{{ t.midi }}">MIDI</a>{% endif %}{% if t.wav %} · <a href="{{ t.wav }}">WAV</a>{% endif %}</summary><pre>{{ t.abc }}</pre></details>
</div>
{%- endmacro %}

{% if grid %}
<h2 id="listen">Listen: the same seeds at every size</h2>
<p>Each row is one random seed, each column one model size (small to large), every tune drawn with the same
sampling settings: reading a row left to right is hearing what scale buys. Under each tune: whether it parses,
converts to MIDI (without abc2midi errors) and is not degenerate (eval_syntax.py).</p>
{% for fam in grid %}
<h3>{{ fam.family }}</h3>
<div class="table"><table class="grid"><thead><tr><th>seed</th>{% for s in fam.sizes %}<th>{{ s.name }}<br>{{ s.params }} parameters<br>{{ split }} loss {{ '%.3f' % s.loss }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in fam.rows %}<tr><td>{{ row.seed }}</td>{% for cell in row.cells %}<td>{% if cell %}{{ tune(cell) }}{% else %}–{% endif %}</td>{% endfor %}</tr>{% endfor %}</tbody></table></div>
{% endfor %}
{% endif %}

{% if best %}
<h2 id="best-tunes">Every tune of the best model, {{ best_name }}</h2>
{% for label, tunes in best %}
<h3>{{ label }}</h3>
<div class="tunes">{% for t in tunes %}{{ tune(t) }}{% endfor %}</div>
{% endfor %}
{% endif %}

<h2 id="report">The report</h2>
{{ body }}
</body>
</html>
"""


def write_html(st, md_lines, fits, path):
    """report.html of a study (Study st) from report.md's lines; returns its path."""
    import jinja2  # imported here: only the report needs it
    import markupsafe
    md_lines = "\n".join(md_lines).split("\n")  # a section may hand over several lines as one string
    body = markdown_to_html(md_lines[1:] if md_lines and md_lines[0].startswith("# ") else md_lines,
                            plot_figure(st.out))
    title = md_lines[0][2:] if md_lines and md_lines[0].startswith("# ") else "Scaling study"
    grid, best = listening_grid(st), best_tunes(st)
    nav = ([{"id": "listen", "text": "Listen"}] if grid else []) + \
        ([{"id": "best-tunes", "text": "Best model's tunes"}] if best else []) + \
        [{"id": slug(m.group(1)), "text": m.group(1)} for line in md_lines if (m := re.match(r"^## (.*)$", line))]
    page = jinja2.Environment(autoescape=True).from_string(TEMPLATE).render(
        title=title, summary=summary(st, fits), grid=grid, split=st.split, best=best, best_name=st.best["name"],
        nav=nav,
        body=markupsafe.Markup(body))
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
