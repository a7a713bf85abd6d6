"""
Step 1 of prepare.py: which input files a dataset is made of. An --input is a file, a folder (searched
recursively) or a glob pattern; an existing path is always taken as the path it names, so a file called
"Tunes [2020].abc" is that file, and a pattern is expanded only when no such file or folder exists.
"""
import glob
import os

from music_scaling_laws.errors import UserError

MIDI_EXTENSIONS = (".mid", ".midi", ".kar")
ABC_EXTENSIONS = (".abc",)
SCORE_EXTENSIONS = (".mxl", ".xml", ".musicxml", ".krn")  # music21 corpus scores, converted via MIDI
KINDS = {**dict.fromkeys(MIDI_EXTENSIONS, "midi"), **dict.fromkeys(ABC_EXTENSIONS, "abc"),
         **dict.fromkeys(SCORE_EXTENSIONS, "score")}


def kind_of(path):
    """midi, abc, score, or None for a file the pipeline does not read."""
    return KINDS.get(os.path.splitext(path)[1].lower())


def evenly_spaced(items, n):
    """n items spread over the whole (sorted) list, so a cap samples every part of a collection."""
    if n <= 0 or n >= len(items):
        return items
    return [items[int(i * len(items) / n)] for i in range(n)]


def collect_inputs(patterns):
    """[(path, kind)] of every input file, in the order of the patterns and in path order within each (so a
    dataset does not depend on where on disk its inputs lie); {path: name}, the path relative to the folder it was
    searched from (the same on every machine, for the list of failed files); and every path the patterns
    name, which --out_dir must not contain. A score (MusicXML, Humdrum) is read only when named, not from folders."""
    found, given = [], []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        # an existing path is that path, even with [ ] * ? in its name ("Tunes [2020].abc"); else a pattern
        literal = os.path.exists(pattern) or not glob.has_magic(pattern)
        matches = [pattern] if literal else sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise UserError(f"--input {pattern!r} matches nothing")
        searched = pattern
        while not literal and glob.has_magic(searched):  # a glob's names start below its last plain folder
            searched = os.path.dirname(searched)
        for path in matches:
            given.append(path)
            top = searched if searched != pattern else path if os.path.isdir(path) else os.path.dirname(path)
            if os.path.isdir(path):
                for root, dirs, files in os.walk(path):
                    dirs.sort()
                    found += [(os.path.join(root, f), top) for f in sorted(files) if kind_of(f) in ("midi", "abc")]
            elif os.path.isfile(path):
                if kind_of(path) is None:
                    raise UserError(f"{path}: not a MIDI (.mid/.midi/.kar), ABC (.abc) or score "
                         f"({'/'.join(SCORE_EXTENSIONS)}) file")
                found.append((path, top))
            else:
                raise UserError(f"--input {path!r} does not exist")
    names = {path: os.path.relpath(path, top or ".") for path, top in found}
    if not names:
        raise UserError(f"no .mid/.midi/.kar/.abc files found in {', '.join(patterns)}")
    return [(path, kind_of(path)) for path in names], names, given  # dicts keep order; a repeat counts once


def default_corpus_inputs(max_scores):
    """As collect_inputs, for the corpus inside music21; names are relative to its corpus folder."""
    from music21 import common, corpus
    folder = str(common.getCorpusFilePath())
    paths = sorted(str(p) for p in corpus.getPaths())
    abc = [(p, "abc") for p in paths if kind_of(p) == "abc"]
    scores = [(p, "score") for p in paths if kind_of(p) == "score"]
    items = abc + evenly_spaced(scores, max_scores) if max_scores > 0 else abc
    return items, {p: os.path.relpath(p, folder) for p in paths}, [folder]
