"""The ``condsim-annot`` command line.

The core commands (init, ingest, criteria, status, db) live here.  Every
pipeline stage adds its own commands through a small plugin seam: each module in
``condsim_annot/commands/`` defines ``register(main: click.Group)``.  Stages stay
independent and the help lists everything that is installed.

Every command module is imported when the CLI starts, so the store-facing modules (SQLAlchemy,
Alembic, SQLModel: about a second of imports) are imported by the command that runs, not here:
``condsim-annot --help`` answers in well under 100 ms.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__, commands
from .errors import CondsimError

console = Console(stderr=True)
out = Console()

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Ctx:
    """Lazily opened store, shared by every subcommand of one invocation."""

    def __init__(self, db: str | None):
        self.db = db
        self._store = None

    def store(self, *, create: bool = False):
        if self._store is None:
            from .db import open_store

            self._store = open_store(self.db, create=create)
        return self._store


pass_ctx = click.make_pass_decorator(Ctx)


class Main(click.Group):
    """Turns :class:`CondsimError` into one clean ``error:`` line, exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CondsimError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: everything acknowledged so far is saved")
            ctx.exit(130)


@click.group(cls=Main, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--db",
    envvar="CONDSIM_DB",
    metavar="URL|PATH",
    help="Store: a SQLite path or any SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. "
    "Default: $CONDSIM_DB or ./condsim.db",
)
@click.version_option(__version__, prog_name="condsim-annot")
@click.pass_context
def main(ctx: click.Context, db: str | None):
    """Gold triplets for conditional similarity: ingest a corpus and criteria, propose
    informative (anchor, candidate, candidate) triplets, collect votes from people
    (TUI, Argilla) and LM judges, calibrate them, export gold labels.

    \b
    Quick start (SQLite in ./condsim.db):
      condsim-annot init
      condsim-annot ingest problems.jsonl --id-field id --text-field text
      condsim-annot criteria add proof-strategy --description "Same proof technique, regardless of topic"
      condsim-annot status
    Or try everything offline on a bundled corpus:  condsim-annot demo
    """
    ctx.obj = Ctx(db)


# --------------------------------------------------------------------------- init / db


@main.command()
@pass_ctx
def init(ctx: Ctx):
    """Create (or upgrade) the store.

    \b
    Example:
      condsim-annot init                                  # ./condsim.db, SQLite in WAL mode
      condsim-annot --db postgresql+psycopg://me@localhost/annot init
    """
    from .db import redact, table_names

    store = ctx.store(create=True)
    out.print(f"store ready: [bold]{redact(store.url)}[/] ({len(table_names(store))} tables)")


@main.group()
def db():
    """Store maintenance: migrations.

    \b
    Example:
      condsim-annot db upgrade
      condsim-annot db current
    """


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Ctx):
    """Apply all pending migrations (also done automatically when the store is opened).

    \b
    Example:
      condsim-annot --db postgresql+psycopg://me@localhost/annot db upgrade
    """
    from .db import current_revisions, open_store, upgrade

    store = open_store(ctx.db, migrate=False, create=True)
    upgrade(store.engine)
    out.print(f"at revision {', '.join(sorted(current_revisions(store.engine)))}")


@db.command("current")
@pass_ctx
def db_current(ctx: Ctx):
    """Print the store's migration revisions (one per stage branch).

    \b
    Example:
      condsim-annot db current
    """
    from .db import current_revisions, open_store

    store = open_store(ctx.db, migrate=False)
    out.print(", ".join(sorted(current_revisions(store.engine))) or "(empty)")


# --------------------------------------------------------------------------- ingest


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE... (or - for stdin)")
@click.option("--id-field", default="id", show_default=True, help="Field/column holding the document id.")
@click.option("--text-field", default="text", show_default=True, help="Field/column holding the text.")
@click.option("--corpus", default="default", show_default=True, help="Corpus name (criteria are views of a corpus).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]),
              help="Override detection by extension (needed for stdin other than JSONL).")
@click.option("--update", "update_existing", is_flag=True,
              help="Replace the text of ids already stored with a different text.")
@pass_ctx
def ingest(ctx: Ctx, files, id_field, text_field, corpus, fmt, update_existing):
    """Add documents from JSONL, CSV or Parquet files (other fields are kept as metadata).

    All files are read in one transaction: on the first bad row nothing is written
    and the error names the file, line and field. Re-ingesting a file adds nothing.

    \b
    Examples:
      condsim-annot ingest problems.jsonl --id-field id --text-field text
      condsim-annot ingest papers.parquet --id-field doi --text-field abstract
      cat more.jsonl | condsim-annot ingest -
    """
    from .ingest import ingest_db

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    ) as progress:
        tasks: dict[str, int] = {}

        def cb(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        res = ingest_db(  # a migrated SQLite store is opened without SQLAlchemy (a second of start-up)
            ctx.db, list(files), lambda: ctx.store(create=True), id_field=id_field, text_field=text_field,
            corpus=corpus, fmt=fmt, update_existing=update_existing, progress=cb, stdin=sys.stdin.buffer,
        )
    out.print(
        f"corpus [bold]{res.corpus}[/]: read {res.read}, added {res.added}, "
        f"updated {res.updated}, unchanged {res.unchanged}"
    )


# --------------------------------------------------------------------------- criteria


@main.group()
def criteria():
    """Manage criteria: the natural-language definitions of similarity.

    \b
    Examples:
      condsim-annot criteria add proof-strategy --description "Same proof technique, regardless of topic"
      condsim-annot criteria load criteria.yaml
      condsim-annot criteria list
    """


@criteria.command("add")
@click.argument("name")
@click.option("--description", "-d", required=True, help="What 'similar' means under this criterion.")
@click.option("--instruction", help="Query instruction for embedding models (default: built from the description).")
@click.option("--corpus", default=None, help="Corpus this criterion is a view of (default: all documents).")
@pass_ctx
def criteria_add(ctx: Ctx, name, description, instruction, corpus):
    """Add one criterion.

    \b
    Example:
      condsim-annot criteria add same-topic -d "Same mathematical topic (algebra, geometry, ...)"
    """
    from .criteria import add_criterion

    c = add_criterion(ctx.store(create=True), name, description, instruction=instruction, corpus=corpus)
    out.print(f"criterion [bold]{c.name}[/] added (version {c.version})")


@criteria.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--update", "update_existing", is_flag=True,
              help="Update criteria that already exist (bumps their version).")
@pass_ctx
def criteria_load(ctx: Ctx, file, update_existing):
    """Load criteria from a YAML or TOML file (all or nothing).

    \b
    YAML:                                 TOML:
      criteria:                             [[criteria]]
        - name: proof-strategy              name = "proof-strategy"
          description: Same technique       description = "Same technique"
          instruction: Represent ...        instruction = "Represent ..."

    Example:
      condsim-annot criteria load criteria.yaml
    """
    from .criteria import load_criteria_file

    added = load_criteria_file(ctx.store(create=True), file, update_existing=update_existing)
    out.print(f"{len(added)} criteria loaded: {', '.join(c.name for c in added)}")


@criteria.command("edit")
@click.argument("name")
@click.option("--description", "-d", help="New description.")
@click.option("--instruction", help="New embedding instruction.")
@pass_ctx
def criteria_edit(ctx: Ctx, name, description, instruction):
    """Change a criterion's wording; its version goes up so later votes can be told apart.

    \b
    Example:
      condsim-annot criteria edit proof-strategy -d "Same key lemma or technique"
    """
    from .criteria import edit_criterion

    c = edit_criterion(ctx.store(), name, description=description, instruction=instruction)
    out.print(f"criterion [bold]{c.name}[/] is now version {c.version}")


@criteria.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def criteria_list(ctx: Ctx, as_json):
    """List criteria.

    \b
    Example:
      condsim-annot criteria list --json
    """
    from .criteria import list_criteria

    rows = list_criteria(ctx.store())
    if as_json:
        rows_out = [{"name": c.name, "description": c.description, "instruction": c.instruction, "version": c.version}
                    for c in rows]
        click.echo(json.dumps(rows_out, indent=2))
        return
    t = Table("name", "version", "description")
    for c in rows:
        t.add_row(escape(c.name), str(c.version), escape(c.description))
    out.print(t)


# --------------------------------------------------------------------------- status


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print counts as JSON with stable keys, for scripts.")
@pass_ctx
def status(ctx: Ctx, as_json):
    """Counts: documents, criteria, triplets, votes by source, gold labels.

    \b
    Example:
      condsim-annot status
      condsim-annot status --json | jq '.criteria["proof-strategy"].votes'
    """
    from .status import render_status, status_counts

    counts = status_counts(ctx.store())
    if as_json:
        click.echo(json.dumps(counts, indent=2, sort_keys=True))
    else:
        render_status(counts, out)


# --------------------------------------------------------------------------- plugins


def _load_plugins() -> None:
    """Import ``condsim_annot.commands.*`` and let each register its commands."""
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        reg = getattr(mod, "register", None)
        if reg is not None:
            reg(main)


_load_plugins()
