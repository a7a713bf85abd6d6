"""
Shared ABC text helpers: splitting a file into tunes, reading headers, cleaning a tune for training,
completing the headers of a generated tune, cutting a tune into bars. prepare.py, sample.py and
tune_checks.py all use these, so a tune means the same thing everywhere in the project.

ABC in one paragraph (the parts that matter here): a file holds tunes separated by blank lines; a tune
starts with `X:<n>`, then header fields `<letter>:<value>` one per line, ending with `K:` (the key),
then the body: music lines, plus field lines (`V:`, `M:`, `K:`, `w:` lyrics ...) that change things
mid-tune. `%` starts a comment (`%%` a tool directive). `"..."` is a chord symbol or annotation and
`!...!` / `+...+` a decoration: letters inside them are not notes.
"""
import re

# Fields that carry music and are kept when cleaning. Everything else (X: numbers, T: titles that are
# often file names, C: composer, S: source, Z: transcriber, N: notes, w:/W: lyrics, I:/U:/m: tool
# instructions ...) identifies a file or is not music, and would leak identity across the splits.
MUSIC_FIELDS = ("M", "L", "Q", "P", "V", "K")
FIELD_LINE = re.compile(r"^([A-Za-z]):(.*)$")
TUNE_START = re.compile(r"^X:", re.MULTILINE)
# inline field like [K:D] or [M:3/4], chord symbols/annotations "...", decorations !...! and +...+
_NOT_NOTES = re.compile(r'\[[A-Za-z]:[^\]\n]*\]|"[^"\n]*"|![^!\n]*!|\+[^+\n]*\+')
_NOTE = re.compile(r"[A-Ga-g]")
# a line-continuation backslash (midi2abc ends every line with one) is layout, not music
_REST_ONLY_BAR = re.compile(r"^[\s\\]*(?:[zxZX][0-9/]*[\s\\]*)*$")
_BAR_LINE = re.compile(r"(\[?:*\|[|\]:]*[0-9]*)")
# clean_tune renumbers every tune to X:1, so every training tune opens with this line (sample.py writes
# it for the model instead of making it predict the line)
TUNE_OPENING = "X:1\n"


def normalize_newlines(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


def prompt_from_command_line(text):
    """A tune's opening as typed after --prompt (or in a study's prompts): a literal \\n is a line break."""
    return text.replace("\\n", "\n")


def strip_comment(line):
    """Drop a `%` comment (and `%%` directives); `\\%` is an escaped percent sign and stays."""
    match = re.search(r"(?<!\\)%", line)
    return line if match is None else line[:match.start()]


def split_tunes(text):
    """Split the text of an ABC file into tunes (each starting at an `X:` line).

    Text before the first `X:` is the file header (titles, comments) and is dropped. A text with no `X:`
    at all but with a `K:` line is taken as one tune (a bare tune, as models and people often write).
    """
    text = normalize_newlines(text)
    starts = [m.start() for m in TUNE_START.finditer(text)]
    if not starts:
        return [text.strip("\n") + "\n"] if re.search(r"^K:", text, re.MULTILINE) else []
    ends = starts[1:] + [len(text)]
    return [text[s:e].strip("\n") + "\n" for s, e in zip(starts, ends)]


def parse_header(tune):
    """Header fields of a tune, letter -> value (first occurrence), up to and including `K:`."""
    header = {}
    for line in normalize_newlines(tune).split("\n"):
        match = FIELD_LINE.match(strip_comment(line).strip())
        if match is None:
            if line.strip() and not line.lstrip().startswith("%"):
                break  # a music line: the header is over (K: missing)
            continue
        letter, value = match.group(1), match.group(2).strip()
        header.setdefault(letter, value)
        if letter == "K":
            break
    return header


def split_header_body(tune):
    """(header lines, body lines): the header ends with the first K: line."""
    lines = normalize_newlines(tune).split("\n")
    for i, line in enumerate(lines):
        if line.startswith("K:"):
            return lines[:i + 1], lines[i + 1:]
    return lines, []


def music_text(line):
    """The part of a music line that can hold notes: comments, chord symbols, decorations and inline
    fields removed."""
    return _NOT_NOTES.sub(" ", strip_comment(line))


def body_bars(tune):
    """The bars of a tune as written, whitespace removed: the music of the body (field lines, comments,
    chord symbols, decorations and inline fields dropped) cut at every `|`, `:` and `[`. A rough cut (a
    chord [CEG] starts a new piece) that needs no parser: it judges tunes music21 cannot read."""
    _, body = split_header_body(tune)
    music = "".join(music_text(l) for l in body if not FIELD_LINE.match(l))
    return ["".join(b.split()) for b in music.replace(":", "|").replace("[", "|").split("|") if b.strip()]


def has_notes(tune):
    """True when the tune body holds at least one note (not only rests, chord symbols or text)."""
    _, body = split_header_body(tune)
    for line in body:
        if FIELD_LINE.match(line) or line.startswith("%"):
            continue
        if _NOTE.search(music_text(line)):
            return True
    return False


def _drop_leading_rest_bars(music, n_bars):
    """Remove the first n_bars bars (and their bar lines) from a voice's music text."""
    parts = _BAR_LINE.split(music)  # [content, barline, content, barline, ...]
    if parts and not parts[0].strip():
        parts = parts[2:] if len(parts) > 2 else []  # a leading bar line opens, it closes nothing
    return re.sub(r"^[\s\\]+", "", "".join(parts[2 * n_bars:]))


def _leading_rest_bars(music):
    parts = _BAR_LINE.split(music)
    if parts and not parts[0].strip():
        parts = parts[2:]
    count = 0
    for i in range(0, len(parts) - 1, 2):  # only bars closed by a bar line
        content = music_text(parts[i])
        if not _REST_ONLY_BAR.match(content):
            break
        count += 1
    return count


def trim_leading_silence(body_lines):
    """Drop rest-only bars at the start of the music (MIDI files often start with silence).

    With several voices (V: blocks, as midi2abc writes them) the same number of bars is dropped from
    every voice so they stay in step; a tune whose voices are interleaved in several blocks per voice is
    left alone rather than risk desynchronising it. Returns (lines, bars_dropped).
    """
    blocks, current = [], {"field": None, "lines": []}
    for line in body_lines:
        if line.startswith("V:"):
            blocks.append(current)
            current = {"field": line, "lines": []}
        else:
            current["lines"].append(line)
    blocks.append(current)
    voices = [b["field"].split()[0] for b in blocks if b["field"]]
    if len(voices) != len(set(voices)):
        return body_lines, 0
    music_blocks = [b for b in blocks if any(l and not FIELD_LINE.match(l) for l in b["lines"])]
    if not music_blocks:
        return body_lines, 0

    def music_of(block):  # field lines inside a block (e.g. a mid-voice M:) stop the trimming there
        music = []
        for line in block["lines"]:
            if FIELD_LINE.match(line):
                break
            music.append(line)
        return "\n".join(music)

    n = min(_leading_rest_bars(music_of(b)) for b in music_blocks)
    if n == 0:
        return body_lines, 0
    out = []
    for block in blocks:
        if block["field"]:
            out.append(block["field"])
        if block in music_blocks:
            music = music_of(block)
            n_music_lines = music.count("\n") + 1
            trimmed = _drop_leading_rest_bars(music, n)
            out.extend(l for l in trimmed.split("\n") if l.strip())
            out.extend(block["lines"][n_music_lines:])
        else:
            out.extend(block["lines"])
    return out, n


def clean_tune(text):
    """Normalise one tune for training. Returns (clean_tune, None) or (None, reason).

    - line endings and whitespace normalised, comments and empty lines dropped (an empty line would end
      the tune in ABC);
    - header reduced to the fields that carry music (MUSIC_FIELDS), X: renumbered to 1, K: last;
    - body field lines other than MUSIC_FIELDS (lyrics, notes, ...) dropped;
    - rest-only bars at the start dropped; a tune with no K: or no notes is rejected.
    """
    lines = [strip_comment(l).rstrip() for l in normalize_newlines(text).split("\n")]
    lines = [re.sub(r"[ \t]+", " ", l) for l in lines if l.strip()]
    header_lines, body_lines = split_header_body("\n".join(lines))
    if not header_lines or not header_lines[-1].startswith("K:"):
        return None, "no_key"
    header = [TUNE_OPENING.rstrip("\n")]
    for line in header_lines:
        match = FIELD_LINE.match(line)
        if match and match.group(1) in MUSIC_FIELDS:
            header.append(f"{match.group(1)}:{match.group(2).strip()}")
    body = []
    for line in body_lines:
        match = FIELD_LINE.match(line)
        if match and match.group(1) not in MUSIC_FIELDS:
            continue  # lyrics (w:), titles, notes... mid-tune
        body.append(line.strip() if match is None else f"{match.group(1)}:{match.group(2).strip()}")
    body, _ = trim_leading_silence(body)
    tune = "\n".join(header + body) + "\n"
    if not has_notes(tune):
        return None, "no_notes"
    return tune, None


# Defaults used when a generated tune lacks a header field (the ABC standard's defaults for M: and K:;
# L:1/8 is what nearly every tune in the corpus states).
HEADER_DEFAULTS = {"X": "1", "M": "4/4", "L": "1/8", "K": "C"}


def complete_headers(text):
    """Make a generated text a complete tune: add X:, M:, L: and K: where missing.

    Returns (tune, added) where `added` lists the field letters that were added, so a sample's record
    can say the model did not write them itself.
    """
    text = normalize_newlines(text).strip("\n")
    lines = text.split("\n") if text else []
    header_lines, body_lines = split_header_body(text)
    if not (header_lines and header_lines[-1].startswith("K:")):
        # no K: -> the header is the leading run of field lines, the rest is music
        n = 0
        while n < len(lines) and FIELD_LINE.match(lines[n]):
            n += 1
        header_lines, body_lines = lines[:n], lines[n:]
    present = {FIELD_LINE.match(l).group(1) for l in header_lines if FIELD_LINE.match(l)}
    added = [f for f in ("X", "M", "L", "K") if f not in present]
    header = [l for l in header_lines if not l.startswith("X:") and not l.startswith("K:")]
    x_line = next((l for l in header_lines if l.startswith("X:")), "X:" + HEADER_DEFAULTS["X"])
    k_line = next((l for l in header_lines if l.startswith("K:")), "K:" + HEADER_DEFAULTS["K"])
    header = [x_line] + header + [f"{f}:{HEADER_DEFAULTS[f]}" for f in ("M", "L") if f in added] + [k_line]
    return "\n".join(header + body_lines) + "\n", added
