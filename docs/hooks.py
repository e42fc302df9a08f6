"""MkDocs hook: the benchmark plots, from benchmarks/results/, as site files.

The PNGs stay where the benchmark scripts write them (one copy in git); this
hook adds each `benchmarks/results/*.png` to the site's files as
`benchmarks/plots/<name>.png`, so the benchmark pages link to
`plots/<name>.png` and `mkdocs build --strict` checks those links.
"""

import glob
import os

from mkdocs.structure.files import File

PLOTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "benchmarks", "results")


def on_files(files, config):
    for path in sorted(glob.glob(os.path.join(PLOTS, "*.png"))):
        uri = f"benchmarks/plots/{os.path.basename(path)}"
        files.append(File.generated(config, uri, abs_src_path=path))
    return files
