"""``srlm-harness store check``: is every committed artefact what its manifest says, and
what is left over from runs that died (temporary builds, lock files, runs still marked as
running)? ``--clean`` removes the leftovers whose owner is gone and never touches anything
a live process (in this container or another sharing the store) holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from srlm_harness.store.store import KINDS, MANIFEST, Store, safetensors_problem


def entry_problems(folder: Path, kind: str) -> list[str]:
    """What is wrong with one committed stage or evaluation folder (empty: nothing)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{folder}: manifest unreadable ({type(exc).__name__})"]
    if not isinstance(manifest, dict) or manifest.get("key") != folder.name:
        return [f"{folder}: manifest is for another key"]
    problems = []
    if kind == "stages":
        model = folder / "model"
        if not (model / "config.json").is_file():
            problems.append(f"{folder}: model/config.json is missing")
        for weights in sorted(model.glob("*.safetensors")):
            problem = safetensors_problem(weights)
            if problem:
                problems.append(f"{weights}: {problem}")
    for path in _listed_files(manifest.get("files") or {}):
        if not (folder / path).is_file():
            problems.append(f"{folder}: {path} is listed in the manifest but missing")
    return problems


def _listed_files(files: Any) -> list[str]:
    if isinstance(files, dict):
        return [p for value in files.values() for p in _listed_files(value)]
    return [files] if isinstance(files, str) and not Path(files).is_absolute() else []


@click.group("store")
def store() -> None:
    """Check and tidy the artifact store."""


@store.command("check")
@click.option("--clean", is_flag=True,
              help="remove leftovers of dead runs (temporary builds, locks) and mark their "
                   "runs interrupted")
@click.pass_context
def check(ctx: click.Context, clean: bool) -> None:
    """Verify committed stages and evaluations against their manifests; list leftovers of
    runs that died. Exits 1 if a committed artefact is broken."""
    the_store = Store(getattr(ctx.find_root().obj, "store_root", None))
    broken = [
        problem
        for kind in KINDS
        for folder in sorted((the_store.root / kind).glob("*"))
        if folder.is_dir()
        for problem in entry_problems(folder, kind)
    ]
    for problem in broken:
        click.echo(f"broken: {problem} (delete that folder; the next run rebuilds it)")
    leftovers = [("temporary build", p) for p in the_store.stale_tmp()]
    leftovers += [("stale lock", p) for p in the_store.stale_locks()]
    leftovers += [("run marked running, its process is gone", p)
                  for p in the_store.dead_runs()]
    removed: set[Path] = set()
    if clean:
        removed.update(the_store.clean_tmp(), the_store.clean_locks())
        for folder in the_store.dead_runs():
            the_store.mark_interrupted(folder)
            removed.add(folder)
    for what, path in leftovers:
        done = " (cleaned)" if clean and path in removed else ""
        click.echo(f"{what}: {path}{done}")
    entries = sum(1 for kind in KINDS for p in (the_store.root / kind).glob("*") if p.is_dir())
    click.echo(f"{entries} committed entries checked, {len(broken)} broken, "
               f"{len(leftovers)} leftovers{' cleaned' if clean else ''}")
    if broken:
        raise SystemExit(1)
