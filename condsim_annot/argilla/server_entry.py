"""Entry point run by the argilla-server virtual environment's python.

    python server_entry.py serve --host 127.0.0.1 --port 6900 --username owner \
        --password-env CONDSIM_ARGILLA_PASSWORD --api-key-env CONDSIM_ARGILLA_API_KEY
    python server_entry.py worker        # only with Redis: an rq worker that knows the engine

It must not import ``condsim_annot`` (the server's venv pins old FastAPI/Pydantic and
has none of our dependencies).  The parent (``condsim_annot/argilla/serve.py``) sets
``ARGILLA_HOME_PATH``, ``ARGILLA_DATABASE_URL`` and ``ARGILLA_SEARCH_ENGINE``.

What it changes in a stock argilla-server 2.8.0:
* registers a search engine that reads the server's own SQL tables (no Elasticsearch);
* without Redis (no ``ARGILLA_REDIS_URL``), rq jobs run in-process on the server's event
  loop and the start-up Redis ping is skipped;
* the web UI's static folder, copied to a temp dir on every import, goes to a folder
  under the home that is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
_TASKS: set = set()
log = logging.getLogger("condsim.argilla")


def _import_server(static_tmp: Path):
    """Import argilla_server with its static copy going under ``static_tmp``."""
    static_tmp.mkdir(parents=True, exist_ok=True)
    old = tempfile.tempdir
    tempfile.tempdir = str(static_tmp)
    try:
        import argilla_server  # noqa: F401  (creates the app and copies the statics)
    finally:
        tempfile.tempdir = old
    sys.path.insert(0, str(HERE))
    import server_engine  # noqa: F401  (registers the engine)

    return argilla_server


def _run_in_process(fn):
    """Replacement for an rq job's ``.delay``: run the coroutine on the running loop."""

    def delay(*args, **kwargs):
        coro = fn(*args, **kwargs)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(coro)
            return None

        async def guarded():
            await asyncio.sleep(0.05)  # let the request's transaction commit first (SQLite)
            try:
                await coro
            except Exception:  # pragma: no cover - logged, like a failed rq job
                log.exception("in-process job %s failed", getattr(fn, "__name__", fn))

        task = loop.create_task(guarded())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return None

    return delay


def _patch_no_redis() -> None:
    import argilla_server._app as app_mod
    from argilla_server.jobs import dataset_jobs, webhook_jobs

    app_mod.configure_redis = lambda: None
    for fn in (dataset_jobs.update_dataset_records_status_job, webhook_jobs.notify_event_job):
        fn.delay = _run_in_process(fn)


def _patch_bulk_events() -> None:
    """Bulk record upserts build a webhook event per record (6 queries + serialisation each)
    even when no webhook listens; skip that work when no webhook is enabled."""
    from argilla_server.bulk import records_bulk
    from argilla_server.contexts import webhooks

    original = records_bulk.notify_record_event_v1

    async def notify(db, record_event, record):
        if not await webhooks.list_enabled_webhooks(db):
            return []
        return await original(db, record_event, record)

    records_bulk.notify_record_event_v1 = notify


async def _ensure_owner(username: str, password: str, api_key: str) -> str:
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal, async_engine
    from argilla_server.models import User, UserRole

    try:
        async with AsyncSessionLocal() as db:
            user = await accounts.get_user_by_username(db, username)
            if user is None:
                other = await accounts.get_user_by_api_key(db, api_key)
                if other is not None:
                    raise SystemExit(f"error: API key already belongs to user {other.username!r}")
                await User.create(
                    db, first_name=username, username=username, role=UserRole.owner,
                    password_hash=accounts.hash_password(password), api_key=api_key,
                )
                state = "created"
            else:
                changed = False
                if user.api_key != api_key:
                    user.api_key = api_key
                    changed = True
                if not accounts.verify_password(password, user.password_hash):
                    user.password_hash = accounts.hash_password(password)
                    changed = True
                if user.role != UserRole.owner:
                    user.role = UserRole.owner
                    changed = True
                if changed:
                    await db.commit()
                state = "updated" if changed else "exists"
    finally:
        await async_engine.dispose()
    return state


def _migrate() -> None:
    import alembic.config
    from argilla_server.database import ALEMBIC_CONFIG_FILE

    alembic.config.main(argv=["-c", ALEMBIC_CONFIG_FILE, "-q", "upgrade", "head"])


def serve(args) -> int:
    home = Path(os.environ["ARGILLA_HOME_PATH"])
    static_tmp = Path(args.static_tmp or home / "static-tmp")
    try:
        redis = bool(os.environ.get("ARGILLA_REDIS_URL"))
        _import_server(static_tmp)
        if not redis:
            _patch_no_redis()
        _patch_bulk_events()
        _migrate()
        password = os.environ.get(args.password_env, "")
        api_key = os.environ.get(args.api_key_env, "")
        state = asyncio.run(_ensure_owner(args.username, password, api_key))
        print(f"condsim: owner user {args.username!r} {state}", flush=True)

        import uvicorn
        from argilla_server import app

        config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
        server = uvicorn.Server(config)
        print(f"condsim: serving on http://{args.host}:{args.port}", flush=True)
        server.run()
        return 0
    finally:
        shutil.rmtree(static_tmp, ignore_errors=True)


def worker(args) -> int:
    home = Path(os.environ["ARGILLA_HOME_PATH"])
    static_tmp = Path(args.static_tmp or home / "static-tmp-worker")
    try:
        _import_server(static_tmp)
        from argilla_server.cli.worker import worker as rq_worker
        from argilla_server.jobs.queues import DEFAULT_QUEUE, HIGH_QUEUE

        rq_worker(queues=[DEFAULT_QUEUE.name, HIGH_QUEUE.name], num_workers=1)
        return 0
    finally:
        shutil.rmtree(static_tmp, ignore_errors=True)


def main(argv=None) -> int:
    os.environ.setdefault("ARGILLA_SEARCH_ENGINE", "condsim-sql")
    os.environ.setdefault("ARGILLA_ENABLE_TELEMETRY", "0")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    ap = argparse.ArgumentParser(prog="server_entry")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=6900)
    s.add_argument("--username", default="owner")
    s.add_argument("--password-env", default="CONDSIM_ARGILLA_PASSWORD")
    s.add_argument("--api-key-env", default="CONDSIM_ARGILLA_API_KEY")
    s.add_argument("--static-tmp", default=None)
    s.add_argument("--log-level", default="warning")
    w = sub.add_parser("worker")
    w.add_argument("--static-tmp", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return serve(args) if args.cmd == "serve" else worker(args)


if __name__ == "__main__":
    sys.exit(main())
