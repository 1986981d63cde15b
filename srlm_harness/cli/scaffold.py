"""``srlm-harness new-plugin NAME``: write a working plugin package to start from.

The package (from ``plugin_template/``) has a pyproject with the entry point, a stage that
trains through the ``sft`` stage, a reward with options, a dataset, an lm-eval task with
its data, and tests that use the harness's pytest fixtures and pass as generated.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import click

from srlm_harness.errors import UserError

TEMPLATE = Path(__file__).resolve().parent.parent / "plugin_template"
VALID_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def template_values(name: str) -> dict[str, str]:
    """The names a plugin called ``name`` uses: module (also the entry point, stage and the
    prefix of its other names), distribution and class-name prefix."""
    module = name.replace("-", "_")
    if not VALID_NAME.fullmatch(name) or keyword.iskeyword(module) or module.endswith("_"):
        raise UserError(f"'{name}' is not a usable plugin name", "new-plugin NAME",
                        "use lower-case letters, digits, '_' or '-', starting with a letter")
    title = "".join(part.capitalize() for part in module.split("_"))
    return {"module": module, "dist": module.replace("_", "-"), "Class": title}


def write_plugin(name: str, parent: Path) -> Path:
    """Write the package for plugin ``name`` into ``parent/<distribution>``; return it."""
    values = template_values(name)
    target = Path(parent) / values["dist"]
    if target.exists():
        raise UserError("the folder already exists", str(target), "choose another name or --dir")
    for source in sorted(TEMPLATE.rglob("*.tmpl")):
        relative = str(source.relative_to(TEMPLATE)).replace("__module__", values["module"])
        text = source.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        path = target / relative.removesuffix(".tmpl")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


@click.command("new-plugin")
@click.argument("name")
@click.option("--dir", "parent", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Where to create the package folder.")
def new_plugin(name: str, parent: str) -> None:
    """Create a plugin package NAME: a stage, a reward, a dataset, a task and tests."""
    target = write_plugin(name, Path(parent))
    click.echo(f"created {target}\n  cd {target}\n  pip install -e '.[test]'\n  pytest")
