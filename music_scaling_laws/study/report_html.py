"""
report.html of a scaling study: report.md as a page to read and listen to. report.py calls write_html with the
markdown lines it has just written to report.md (one text feeds both, so the two never disagree) and the Study it
read them from. The page adds what Markdown cannot show:
- every plot inline, as the vector SVG plots.py writes beside each PNG;
- a summary in plain words at the top, leading with what the fits support (each family's law with its interval or
  the one-sided bound the runs give), then the best model, then per family its warnings behind one click;
- a listening grid: per family, the same seeds (one row each) from every size (one column each, small to large),
  each tune with its audio player and sheet music, in a box of its own that scrolls (the page stays as wide as the
  window); the best model's tunes, unconditional and prompted, below it.
Every link is relative to the study folder and stays inside it (inline's safe_href: text from a user or a dataset never
becomes a javascript: or other link), and nothing is fetched from the network, so the folder can be copied
anywhere and opened offline. docs/report.md says how to read it.
"""
import html
import math
import os
import re

from music_scaling_laws.evaluation.eval_metrics import YANG_LERCH_NAMES
from music_scaling_laws.fits.fitting import with_ci
from music_scaling_laws.fits.fit_text import N_WORDS, n_definition_text, noise_text
from music_scaling_laws.run_files import samples_path

# -----------------------------------------------------------------------------
# Markdown to HTML: the subset report.py writes (headings, paragraphs, pipe tables, fenced code, bullet lists,
# images alone on a line; inline `code`, **bold**, *italic* and [links](...))

IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")
# a code span opens with a run of backticks and closes with a run of the same length (so a prompt holding a backtick
# stays one code span: md_code), a backslash escapes a Markdown character (md_text)
INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)|\\([\\`*_\[\]()<>|!#])|\*\*(.+?)\*\*|\*([^*\s][^*]*?)\*"
                    r"|\[([^\]]+)\]\(([^)\s]+)\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def safe_href(href):
    """href where a report may link to it, else None: http(s) addresses, and relative links that stay inside the
    study folder. Never javascript:, data:, file: or any other scheme, nor an absolute path or one through '..':
    report.md's text carries dataset paths, prompts and run names a user or a dataset chose, and a link is the one
    piece of Markdown that can run code or leave the folder."""
    href = href.strip()
    if re.match(r"^https?://", href, re.I):
        return href
    if SCHEME.match(href) or href.startswith(("/", "\\")) or "\\" in href:
        return None
    path = os.path.normpath(href.split("#")[0].split("?")[0] or ".")
    return None if path == ".." or path.startswith("../") or os.path.isabs(path) else href


def inline(text):
    """Inline Markdown of one line as HTML, everything else escaped; a link to anywhere safe_href refuses is its
    label and its target as text."""
    out, pos = [], 0
    for m in INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        _, code, escaped, bold, italic, label, href = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code.strip() if code.strip() else code)}</code>")
        elif escaped is not None:
            out.append(html.escape(escaped))
        elif bold is not None:
            out.append(f"<strong>{inline(bold)}</strong>")
        elif italic is not None:
            out.append(f"<em>{inline(italic)}</em>")
        elif safe_href(href) is not None:
            out.append(f'<a href="{html.escape(safe_href(href))}">{inline(label)}</a>')
        else:
            out.append(html.escape(m.group(0)))
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
        elif (m := IMAGE.match(stripped)) and safe_href(m.group(2)) and not SCHEME.match(m.group(2)):
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
        skipped = rec.get("wav_skipped") or ""  # sample.py renders no WAV from a MIDI without notes or a runaway one
        why = ("abc2midi wrote no notes" if rec.get("midi_notes") == 0 else
               f"not rendered: {skipped.partition(': ')[2] or 'too long'}" if skipped.startswith("too_long") else
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


def fit_sentence(fam, f):
    """What one family's fits support, in one item: L(N)'s exponent with its interval (or the one-sided bound the
    runs give), the N it is on, and the joint fit's exponents and frontier where they pass their checks."""
    sizes = sorted(set(f["n_params"]))
    decades = math.log10(sizes[-1] / sizes[0]) if len(sizes) > 1 else 0.0
    text = (f"{fam.upper()}: over {len(sizes)} sizes ({decades:.1f} decades of N = {N_WORDS[f.get('n_fitted', 'all')]})"
            f" the loss falls as L = a·N^−α + c with α = {with_ci(f, 'alpha')}")
    if f.get("alpha_without_largest") is not None:
        text += f" (without its largest model, which is not its best: {with_ci(f, 'alpha_without_largest')})"
    if n_definition_text(f):
        text += (f"; on {N_WORDS['non_embedding' if f.get('n_fitted', 'all') == 'all' else 'all']} α = "
                 f"{with_ci(f, 'alpha_non_embedding')}, outside this interval: which N is fitted matters")
    j = f.get("joint")
    if j:
        text += f"; jointly in N and D, α = {with_ci(j, 'alpha')} and β = {with_ci(j, 'beta')}"
        if (j.get("lack_of_fit") or {}).get("failed"):
            text += ", but the surface misfits its runs, so it gives no compute-optimal frontier"
        elif j.get("a_ci") is not None:
            text += f", so N_opt grows as C^a with a = {with_ci(j, 'a')}"
    return text + "."


def summary(st, fits):
    """The study's findings, leading with what its fits support: one item per family's fits, the best model, its
    tunes against real ones, and per family one item that holds every warning of its fits behind a click (the
    count visible). Each item: {"text"} or {"text", "warnings": [...]} (the tables below hold every number)."""
    items = [{"text": fit_sentence(fam, f)} for fam, f in (fits or {}).items() if "alpha" in f]
    best = st.best["name"]
    items.append({"text": f"The best model is {best} ({st.size(best)} parameters): {st.split} loss "
                          f"{st.ppl[best]['loss']:.4f} nats/token."})
    yl = st.yang_lerch("best/unconditional") or {}
    compared = {k: c for k, c in yl.items() if c["compared"] and c.get("baseline")}
    if compared:
        alike = [YANG_LERCH_NAMES.get(k, k) for k, c in compared.items()
                 if c["overlap"] >= c["baseline"]["overlap_ci"][0]]
        items.append({"text": f"Against real tunes (Yang & Lerch), its unconditional tunes are as close as real tunes "
                              f"are to each other on {len(alike)} of {len(compared)} features"
                              + (f" ({', '.join(alike)})" if alike else "") + "."})
    for fam, f in (fits or {}).items():
        if "alpha" not in f:
            continue
        ln = f.get("warnings", []) + [f"(non-embedding fit) {w}" for w in f.get("warnings_non_embedding", [])]
        joint = f.get("joint", {}).get("warnings", [])
        warns = [f"L(N): {w}" for w in ln] + [f"L(N, D): {w}" for w in joint]
        if "sigma_source" in f:
            warns.insert(0, f"Noise behind the intervals: {noise_text(f)}.")
        if warns:
            items.append({"text": f"{fam.upper()}: {len(ln) + len(joint)} warning(s) on its fits "
                                  f"(L(N): {len(ln)}, L(N, D): {len(joint)}), and the noise behind its intervals",
                          "warnings": warns})
    return items


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
.grid-box { overflow: auto; max-width: 100%; max-height: 85vh; border: 1px solid #ddd; }
.grid td { min-width: 240px; max-width: 340px; } .grid td:first-child { min-width: 0; width: 4em; }
.grid thead th { position: sticky; top: 0; z-index: 1; }
p, li, td, code, summary { overflow-wrap: anywhere; }
.tune pre { max-width: 100%; }
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
<div class="summary"><ul>{% for item in summary %}{% if item.warnings %}<li class="warning"><details><summary>{{ item.text }}</summary><ul>{% for w in item.warnings %}<li>{{ w }}</li>{% endfor %}</ul></details></li>{% else %}<li>{{ item.text }}</li>{% endif %}{% endfor %}</ul></div>

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
<div class="grid-box"><table class="grid"><thead><tr><th>seed</th>{% for s in fam.sizes %}<th>{{ s.name }}<br>{{ s.params }} parameters<br>{{ split }} loss {{ '%.3f' % s.loss }}</th>{% endfor %}</tr></thead>
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
    title = re.sub(r"\\([\\`*_\[\]()<>|!#])", r"\1", title)  # report.md escapes a config name's Markdown
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
