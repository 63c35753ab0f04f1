"""``condsim-annot argilla push | pull | serve``: web review through Argilla 2.x."""

from __future__ import annotations

import click
from rich.markup import escape

from condsim_annot.cli import Ctx, console, out, pass_ctx


@click.group()
def argilla():
    """Review triplets in the Argilla web UI: push, pull votes back, or run a local server.

    \b
    The server is $ARGILLA_API_URL (default http://localhost:6900), the key $ARGILLA_API_KEY.
    Example:
      condsim-annot argilla serve                     # terminal 1: local Argilla, prints URL + key
      export ARGILLA_API_URL=http://127.0.0.1:6900 ARGILLA_API_KEY=...
      condsim-annot argilla push proof-strategy --workspace team --dataset proof-v1 --min-submitted 2
      condsim-annot argilla pull proof-strategy --dataset proof-v1
    """

server_opts = [
    click.option("--api-url", envvar="ARGILLA_API_URL", default=None, metavar="URL",
                 help="Argilla server (default $ARGILLA_API_URL or http://localhost:6900)."),
    click.option("--api-key", envvar="ARGILLA_API_KEY", default=None, metavar="KEY",
                 help="API key of an owner/admin (default $ARGILLA_API_KEY)."),
]

def with_server(f):
    for opt in reversed(server_opts):
        f = opt(f)
    return f

@argilla.command("push")
@click.argument("criterion")
@click.option("--workspace", "-w", required=True, help="Argilla workspace (created if missing).")
@click.option("--dataset", "-d", required=True, help="Argilla dataset (created with the condsim schema if missing).")
@click.option("--min-submitted", default=2, show_default=True, type=click.IntRange(1, None),
              help="Reviewers per record (Argilla task distribution; fixed when the dataset is created).")
@click.option("--suggestions", is_flag=True,
              help="Pre-fill LM-judge votes as suggestions (for reviewing judges; off for gold collection).")
@click.option("--limit", type=click.IntRange(1, None), default=None, help="Only the N highest-priority triplets.")
@with_server
@pass_ctx
def push_cmd(ctx: Ctx, criterion, workspace, dataset, min_submitted, suggestions, limit, api_url, api_key):
    """Push a criterion's triplets as records (record id = triplet id; re-pushing adds only new ones).

    A/B order is randomised per record and stored, so position bias stays measurable.

    \b
    Example:
      condsim-annot argilla push proof-strategy --workspace team --dataset proof-v1 --min-submitted 2
      condsim-annot argilla push proof-strategy -w team -d judge-review --suggestions
    """
    from condsim_annot.argilla.remote import connect, push, sdk_errors

    with sdk_errors():
        client = connect(api_url, api_key)
        res = push(ctx.store(), criterion, client=client, workspace=workspace, dataset=dataset,
                   min_submitted=min_submitted, suggestions=suggestions, limit=limit,
                   log=lambda m: console.print(m, highlight=False))
    out.print(
        f"dataset [bold]{res.dataset}[/] ({res.workspace}): added {res.added} records, "
        f"{res.existing} already there" + (f", {res.suggestions} suggestions" if suggestions else ""),
        highlight=False,
    )
    out.print(f"annotate at {res.url}", highlight=False, soft_wrap=True)

@argilla.command("pull")
@click.argument("criterion")
@click.option("--dataset", "-d", required=True, help="Argilla dataset to read.")
@click.option("--workspace", "-w", default=None, help="Workspace (needed only if the name is ambiguous).")
@with_server
@pass_ctx
def pull_cmd(ctx: Ctx, criterion, dataset, workspace, api_url, api_key):
    """Pull responses as votes (source argilla): submitted -> votes, discarded -> skips, drafts ignored.

    Pulling again adds nothing; a response changed in Argilla supersedes its old vote (kept as history).
    Annotators are Argilla usernames.

    \b
    Example:
      condsim-annot argilla pull proof-strategy --dataset proof-v1
    """
    from condsim_annot.argilla.remote import connect, pull, sdk_errors

    with sdk_errors():
        client = connect(api_url, api_key)
        res = pull(ctx.store(), criterion, client=client, dataset=dataset, workspace=workspace)
    out.print(
        f"dataset [bold]{res.dataset}[/]: {res.added} new votes, {res.changed} changed, "
        f"{res.unchanged} unchanged, {res.skips} skips (discards), {res.drafts} drafts ignored; "
        f"annotators: {', '.join(sorted(res.annotators)) or '-'}",
        highlight=False, soft_wrap=True,
    )
    if res.unknown_triplets or res.other_criterion or res.invalid:
        console.print(
            f"[yellow]note:[/] {res.unknown_triplets} records are not triplets of {criterion!r} in this store, "
            f"{res.other_criterion} belong to another criterion, {res.invalid} answers had an unknown label",
            highlight=False,
        )

@argilla.command("install-server")
@click.option("--venv", type=click.Path(file_okay=False), default=None, envvar="CONDSIM_ARGILLA_VENV",
              help="Where to create the server's virtual environment "
                   "(default $CONDSIM_ARGILLA_VENV or ~/.cache/condsim-annot/argilla-venv, as scripts/bootstrap.sh).")
def install_server_cmd(venv):
    """Create the local server's own virtual environment now (serve does it on first use).

    \b
    Example (CI, cached between runs):
      condsim-annot argilla install-server --venv ~/.cache/condsim-annot/argilla-venv
    """
    from pathlib import Path

    from condsim_annot.argilla.serve import SERVER_REQUIREMENT, default_venv, ensure_server_venv

    target = Path(venv).expanduser() if venv else default_venv()
    py = ensure_server_venv(target, log=lambda m: console.print(m, highlight=False))
    out.print(f"{SERVER_REQUIREMENT} is ready: {py}", highlight=False)

@argilla.command("serve")
@click.option("--port", default=6900, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (keep 127.0.0.1 unless behind a proxy).")
@click.option("--api-key", envvar="ARGILLA_API_KEY", default=None,
              help="Owner's API key (default $ARGILLA_API_KEY, else generated once and kept in HOME).")
@click.option("--password", envvar="ARGILLA_PASSWORD", default=None, help="Owner's password (default: generated once).")
@click.option("--username", default="owner", show_default=True, help="Owner's username.")
@click.option("--home", type=click.Path(file_okay=False), default=None,
              help="Server data, credentials and logs, private to you; one server per home "
                   "(default ~/.cache/condsim-annot/argilla).")
@click.option("--venv", type=click.Path(file_okay=False), default=None, envvar="CONDSIM_ARGILLA_VENV",
              help="Where the server's own virtual environment lives "
                   "(default ~/.cache/condsim-annot/argilla-venv, the one scripts/bootstrap.sh builds).")
@click.option("--redis-url", default=None, help="Use this Redis for background jobs (default: in-process, no Redis).")
def serve_cmd(port, host, api_key, password, username, home, venv, redis_url):
    """Run a local Argilla 2.8 server (web UI included): SQLite, no Elasticsearch, no Docker.

    The first start creates its virtual environment (pip install argilla-server, a few minutes).
    Prints the URL and the owner's credentials; Ctrl-C stops it.

    \b
    Example:
      condsim-annot argilla serve --port 6900
      # in another shell:
      export ARGILLA_API_URL=http://127.0.0.1:6900 ARGILLA_API_KEY=<printed key>
      condsim-annot argilla push proof-strategy --workspace team --dataset proof-v1
    """
    from pathlib import Path

    from condsim_annot.argilla.serve import LocalServer, default_home, serve_forever

    server = LocalServer(
        home=Path(home).expanduser() if home else default_home(), port=port, host=host, api_key=api_key,
        password=password, username=username, venv=Path(venv) if venv else None, redis_url=redis_url,
        log=lambda m: console.print(m, highlight=False),
    )
    console.print(f"starting Argilla {'(first start installs it) ' if not server.venv.exists() else ''}…",
                  highlight=False)

    def show(s):
        for line in (
            f"Argilla is running at [bold]{s.url}[/]",
            f"  username: {escape(s.creds.username)}",
            f"  password: {escape(s.creds.password)}",
            f"  API key:  {escape(s.creds.api_key)}",
            f"  export ARGILLA_API_URL={s.url} ARGILLA_API_KEY={escape(s.creds.api_key)}",
            f"  data and logs: {escape(str(s.home))}",
            "  Ctrl-C stops the server",
        ):
            out.print(line, highlight=False, soft_wrap=True)

    serve_forever(server, show)


def register(main: click.Group) -> None:
    main.add_command(argilla)
