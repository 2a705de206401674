"""mkdocs hooks: the pages get the figures and report excerpts drawn by ``gen_figures``, and
the navigation lists every rule page of the registry.

- ``on_config``: the "Rules" section of the nav gets one entry per rule, in code order;
- ``on_files``: the PNG figures are added to the site as generated files (they are never
  written into ``docs/``), so pages link to them like to any other file;
- ``on_page_markdown``: a line ``<!-- generated: NAME -->`` is replaced by the text block
  ``NAME`` (a report printed by the reference case), in a fenced code block.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.structure.files import File, Files

_HERE = Path(__file__).resolve().parent
_MARKER = re.compile(r"^<!-- generated: ([a-z0-9-]+) -->$", re.MULTILINE)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "scalecheck_docs_gen_figures", _HERE / "gen_figures.py"
    )
    if spec is None or spec.loader is None:
        raise RuntimeError("docs/gen_figures.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_GEN = _generator()


def on_config(config: Any) -> Any:
    from scalecheck.rules import all_rules

    for entry in config["nav"] or []:
        if isinstance(entry, dict) and "Rules" in entry:
            entry["Rules"] = ["rules/index.md"] + [
                {f"{r.code} {r.name}": f"rules/{r.code}.md"} for r in all_rules()
            ]
    return config


def on_files(files: Files, config: Any) -> Files:
    for path, data in _GEN.build().figures.items():
        files.append(File.generated(config, path, content=data))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    texts = _GEN.build().texts

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in texts:
            raise KeyError(
                f"{page.file.src_uri}: no generated text {name!r} (have {sorted(texts)})"
            )
        return "```text\n" + texts[name].rstrip() + "\n```"

    return _MARKER.sub(replace, markdown)
