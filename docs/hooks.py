"""MkDocs hooks of the documentation site.

- The benchmark plots: the PNGs stay where the benchmark scripts write them
  (one copy in git); `on_files` adds each `benchmarks/results/*.png` to the
  site's files as `benchmarks/plots/<name>.png`, so the benchmark pages link
  to `plots/<name>.png` and `mkdocs build --strict` checks those links.
- Snippets (`--8<-- "README.md:..."`) are read from the repository root
  wherever mkdocs is run from (`on_config`).
"""

import glob
import os

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLOTS = os.path.join(ROOT, "benchmarks", "results")


def on_config(config):
    snippets = config.mdx_configs.setdefault("pymdownx.snippets", {})
    snippets["base_path"] = [ROOT]
    return config


def on_files(files, config):
    for path in sorted(glob.glob(os.path.join(PLOTS, "*.png"))):
        uri = f"benchmarks/plots/{os.path.basename(path)}"
        files.append(File.generated(config, uri, abs_src_path=path))
    return files
