"""CLI for the LM stage: ``condsim-annot judge`` and ``condsim-annot llm {judges,log,transform}``."""

from __future__ import annotations

import json

import click
from rich.markup import escape

from ..cli import Ctx, console, out, pass_ctx
from ..errors import CondsimError
from ..llm.prices import load_prices, price_for


def _endpoint_options(f):
    f = click.option("--api-key-env", metavar="VAR",
                     help="Read the API key from this environment variable (default OPENAI_API_KEY).")(f)
    f = click.option("--base-url", metavar="URL",
                     help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (default: $OPENAI_BASE_URL or "
                          "OpenAI).")(f)
    f = click.option("--model", "-m", metavar="MODEL",
                     help="Model name as the server knows it (default: $CONDSIM_LLM_MODEL).")(f)
    return f


def _money(x: float | None) -> str:
    if x is None:
        return "unknown"
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _progress(description: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=True)


@click.command("judge")
@click.argument("criterion")
@_endpoint_options
@click.option("--concurrency", "-c", default=8, show_default=True, help="Requests in flight at once.")
@click.option("--limit", "-n", type=int,
              help="Judge the first N triplets by priority (each in both orders). Default: all.")
@click.option("--dry-run", is_flag=True, help="Count the calls, tokens and cost; call nothing (no key needed).")
@click.option("--prices", "prices_file", type=click.Path(dir_okay=False),
              help="Price table (TOML/JSON, USD per 1M tokens); default $CONDSIM_LLM_PRICES.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per request.")
@click.option("--max-retries", default=5, show_default=True,
              help="Retries on 429/5xx/timeouts (exponential backoff; a Retry-After up to 60 s is honoured, a longer "
                   "one stops the run's requests).")
@click.option("--temperature", default=0.0, show_default=True,
              help="Sampling temperature (part of the judge's identity).")
@click.option("--max-tokens", type=int,
              help="Reply length limit (default 20, or 300 with --rationale; raise it for reasoning models).")
@click.option("--allow-tie", is_flag=True, help="Let the judge answer 'tie' (another judge).")
@click.option("--rationale", is_flag=True,
              help="Ask for a one-sentence rationale before the answer (stored with the vote).")
@click.option("--no-structured", is_flag=True,
              help="Do not ask for a JSON schema (response_format); replies are parsed anyway.")
@click.option("--no-logprobs", is_flag=True, help="Do not ask for logprobs (no confidence).")
@click.option("--invalid-retries", default=2, show_default=True,
              help="Ask again this often when a reply cannot be read.")
@click.option("--retry-invalid", is_flag=True,
              help="Ask again the presentations whose logged reply was unreadable (e.g. after fixing the server); "
                   "by default they are answered from the log.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_ctx
def judge(ctx: Ctx, criterion, model, base_url, api_key_env, concurrency, limit, dry_run, prices_file, timeout,
          max_retries, temperature, max_tokens, allow_tie, rationale, no_structured, no_logprobs, invalid_retries,
          retry_invalid, as_json):
    """Let an LM judge vote on a criterion's triplets, each in both presentation orders.

    The judge (model, prompt version, parameters) becomes an annotator of kind llm;
    both answers are stored as votes with the order shown, so its position bias is
    visible (`condsim-annot llm judges CRITERION`). Every call is logged and cached:
    running the command again makes zero calls, and a run that was stopped resumes.
    Unreadable replies are retried and never stop the batch; only the reply's own final
    answer counts (text quoted from a document never does). The command exits 1 when
    presentations were to be judged and none got a vote (server errors, a rate limit,
    unreadable replies), with a summary saying why.

    The key comes from $OPENAI_API_KEY (or the variable named by --api-key-env),
    never from the command line, and is never stored; local servers need none.

    \b
    Examples:
      export OPENAI_API_KEY=...
      condsim-annot judge proof-strategy --model gpt-4.1-mini --limit 500 --dry-run
      condsim-annot judge proof-strategy --model gpt-4.1-mini --concurrency 8 --limit 500
      condsim-annot judge proof-strategy --model qwen2.5-7b --base-url http://127.0.0.1:8000/v1
      condsim-annot judge proof-strategy -m llama3.1 --base-url http://localhost:11434/v1 --no-logprobs
      condsim-annot judge proof-strategy -m qwen2.5-7b --base-url http://127.0.0.1:8000/v1 --retry-invalid
    """
    from ..llm.judge import JudgeParams, run_judge

    if limit is not None and limit < 1:
        raise click.BadParameter("must be at least 1", param_hint="--limit")
    params = JudgeParams(temperature=temperature, max_tokens=max_tokens, allow_tie=allow_tie, rationale=rationale,
                         structured=not no_structured, logprobs=not no_logprobs, invalid_retries=invalid_retries)
    store = ctx.store()
    with _progress("judging") as prog:
        task = prog.add_task("dry run" if dry_run else "judging", total=None)
        run = run_judge(store, criterion, model=model, base_url=base_url, api_key_env=api_key_env,
                        concurrency=concurrency,
                        limit=limit, dry_run=dry_run, params=params, timeout=timeout, max_retries=max_retries,
                        prices_file=prices_file, progress=lambda d, t: prog.update(task, completed=d, total=t),
                        retry_invalid=retry_invalid)
    if as_json:
        click.echo(json.dumps(run.as_dict(), indent=2, default=str))
        _fail_if_nothing_voted(run)
        return
    if run.triplets == 0:
        out.print(f"no triplets for criterion {escape(repr(run.criterion))} yet: propose some first (`condsim-annot "
                  f"propose --help`)")
        return
    out.print(f"judge [bold]{escape(run.judge)}[/] on [bold]{escape(run.criterion)}[/] ({escape(run.server)})",
              highlight=False, emoji=False)  # "llm:m:..." is a name, not the :m: emoji
    out.print(f"  {run.triplets} triplets, {2 * run.triplets} presentations: {run.already_voted} already voted, "
              f"{run.requests} to do")
    if dry_run:
        _print_dry_run(run, prices_file, base_url)
        return
    _print_run(run)
    _fail_if_nothing_voted(run)
    if run.errors:
        console.print(f"[yellow]{run.errors} presentations failed after retries; run the command again to retry "
                      f"them[/]")
    if run.invalid:
        console.print(f"[yellow]{run.invalid} presentations got unreadable replies[/] (`condsim-annot llm log --status "
                      "invalid`); after fixing the server or model, `--retry-invalid` asks them again")


def _print_dry_run(run, prices_file, base_url) -> None:
    """What a real run would cost: calls, tokens, price."""
    st = run.stats
    pr = price_for(run.model, load_prices(prices_file), base_url)
    out.print(f"  dry run: {st.cached} answered from the log, [bold]{st.would_call}[/] calls to make "
              f"(plus retries of unreadable replies)")
    out.print(f"  about {st.est_tokens_in:,} input + {st.est_tokens_out:,} output tokens, estimated cost "
              f"{_money(run.cost_usd)}"
              + (f" (at ${pr[0]}/${pr[1]} per 1M tokens in/out)" if pr else
                 f" — no price for {escape(repr(run.model))}: add one with --prices FILE"))


def _print_run(run) -> None:
    """The outcome of a run: votes, calls, tokens, cost, position bias."""
    st = run.stats
    out.print(f"  votes added {run.votes_added}; unreadable {run.invalid}; failed {run.errors}")
    out.print(f"  calls {st.calls} new, {st.cached} from the log, {st.retries} retries; tokens {st.tokens_in:,} in / "
              f"{st.tokens_out:,} out; cost {_money(run.cost_usd)}")
    if st.dropped_features:
        out.print(f"  the server rejected {', '.join(sorted(set(st.dropped_features)))}: asked without it")
    b = run.bias
    if b:
        out.print(f"  position bias: {b['pairs']} triplets judged in both orders; same answer in "
                  f"{_pct(b['consistency'])}, answer follows the order in {_pct(b['position_flips'])}; "
                  f"A chosen {_pct(b['a_rate'])} (0.5 = no preference)"
                  + (f"; mean confidence {b['mean_confidence']:.2f}" if b.get("mean_confidence") is not None else ""))
        out.print(f"  all calls of this judge: {b['tokens_in']:,} in / {b['tokens_out']:,} out tokens, cost "
                  f"{_money(b['cost_usd'])}")


def _fail_if_nothing_voted(run) -> None:
    """Exit 1 with a summary when there was work and no presentation got a vote."""
    if run.dry_run or run.requests == 0 or run.votes_added > 0:
        return
    why = f"; last error: {run.last_error}" if run.last_error else ""
    hint = " (--retry-invalid asks unreadable ones again)" if run.invalid else ""
    raise CondsimError(f"no votes: all {run.requests} presentations failed ({run.errors} server errors, "
                       f"{run.invalid} unreadable{hint}){why}")


@click.group("llm")
def llm():
    """LM judges and transforms: per-judge reports, the call log, document transforms.

    \b
    Examples:
      condsim-annot llm judges proof-strategy
      condsim-annot llm log --status invalid --limit 5
      condsim-annot llm log --show 42
      condsim-annot llm transform proof-strategy --task in-one-word -m gpt-4.1-mini --limit 20
    """


@llm.command("judges")
@click.argument("criterion")
@click.option("--prices", "prices_file", type=click.Path(dir_okay=False),
              help="Price table (TOML/JSON, USD per 1M tokens).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def llm_judges(ctx: Ctx, criterion, prices_file, as_json):
    """Per LM judge on a criterion: votes, position bias, unreadable replies, tokens, cost.

    \b
    consistency: both orders of a triplet got the same answer;
    a_rate: how often the candidate shown as A was chosen (0.5 = no position preference).
    Example:
      condsim-annot llm judges proof-strategy --json
    """
    from ..llm.judge import judge_report

    rows = judge_report(ctx.store(), criterion, prices_file=prices_file)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"no LM judge has voted on {criterion!r} yet: `condsim-annot judge {criterion} --model M`",
                  markup=False)
        return
    for r in rows:
        out.print(f"[bold]{escape(r['judge'])}[/]", highlight=False, emoji=False)
        conf = "" if r["mean_confidence"] is None else f", mean confidence {r['mean_confidence']:.2f}"
        out.print(f"  votes {r['votes']} on {r['triplets']} triplets, {r['pairs']} judged in both orders: same answer "
                  f"{_pct(r['consistency'])}, A chosen {_pct(r['a_rate'])}{conf}", highlight=False)
        if r["attention_checks"]:
            out.print(f"  attention checks: {r['attention_correct']}/{r['attention_checks']} answered as expected",
                      highlight=False)
        out.print(f"  calls {r['calls']} (unreadable {r['invalid_calls']}, failed {r['error_calls']}); tokens "
                  f"{r['tokens_in']:,} in / {r['tokens_out']:,} out; cost {_money(r['cost_usd'])}", highlight=False)


@llm.command("log")
@click.option("--criterion", help="Only calls for this criterion.")
@click.option("--task", help="judge | in-one-word | rewrite")
@click.option("--status", type=click.Choice(["ok", "invalid", "error"]), help="Only calls with this outcome.")
@click.option("--model", "-m", help="Only calls to this model.")
@click.option("--limit", "-n", default=20, show_default=True, help="Newest N calls.")
@click.option("--show", "show_id", type=int, help="Print one call in full (prompt, raw reply, parsed, error).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def llm_log(ctx: Ctx, criterion, task, status, model, limit, show_id, as_json):
    """Inspect the LLM call log (every request, its raw reply, tokens, latency and error; no keys).

    \b
    Examples:
      condsim-annot llm log --status invalid
      condsim-annot llm log --show 42
    """
    from rich.table import Table
    from rich.text import Text
    from sqlalchemy import select

    from ..criteria import load_criterion
    from ..llm.tables import LLMCall

    store = ctx.store()
    with store.session() as s:
        if show_id is not None:
            r = s.get(LLMCall, show_id)
            if r is None:
                raise CondsimError(f"no LLM call with id {show_id}")
            d = r.model_dump(mode="json")
            if as_json:
                click.echo(json.dumps(d, indent=2))
                return
            out.print(f"[bold]call {r.id}[/] {escape(r.task)} {escape(r.model)} ({escape(str(r.prompt_version))}) at "
                      f"{escape(r.base_url or 'OpenAI')}: {r.status}, {r.tries} tries, {r.latency_ms or 0:.0f} ms, "
                      f"tokens {r.tokens_in}/{r.tokens_out}", emoji=False)
            for m in (r.request or {}).get("messages", []):
                out.print(f"[bold cyan]{m['role']}[/]:", highlight=False)
                out.print(m.get("content") or "", markup=False, highlight=False)
            out.print("[bold cyan]reply[/]:", highlight=False)
            out.print(r.response_text or "", markup=False, highlight=False)
            out.print(f"[bold]parsed[/]: {escape(json.dumps(r.parsed))}", highlight=False)
            if r.error:
                out.print(f"[bold red]error[/]: {escape(r.error)}", highlight=False)
            return
        q = select(LLMCall).order_by(LLMCall.id.desc()).limit(limit)
        if criterion:
            q = q.where(LLMCall.criterion_id == load_criterion(store, criterion).id)
        if task:
            q = q.where(LLMCall.task == task)
        if status:
            q = q.where(LLMCall.status == status)
        if model:
            q = q.where(LLMCall.model == model)
        rows = s.scalars(q).all()
    if as_json:
        brief = [{k: v for k, v in r.model_dump(mode="json").items() if k not in ("request", "response")} for r in rows]
        click.echo(json.dumps(brief, indent=2))
        return
    if not rows:
        out.print("no LLM calls logged (with these filters)")
        return
    t = Table("id", "task", "model", "status", "tries", "ms", "tokens", "reply / error")
    for r in rows:
        text = (r.error if r.status == "error" else r.response_text) or ""
        t.add_row(str(r.id), Text(r.task), Text(r.model), r.status, str(r.tries), f"{r.latency_ms or 0:.0f}",
                  f"{r.tokens_in or 0}/{r.tokens_out or 0}", Text(text.replace("\n", " ")[:60]))  # shown as is
    out.print(t)


@llm.command("transform")
@click.argument("criterion")
@click.option("--task", type=click.Choice(["in-one-word", "rewrite"]), default="in-one-word", show_default=True)
@_endpoint_options
@click.option("--ids", help="Comma-separated document ids (store ids). Default: the corpus, first --limit.")
@click.option("--limit", "-n", default=20, show_default=True, help="How many documents when --ids is not given.")
@click.option("--concurrency", "-c", default=8, show_default=True)
@click.option("--dry-run", is_flag=True, help="Count calls and tokens; call nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print {id: text} as JSON.")
@pass_ctx
def llm_transform(ctx: Ctx, criterion, task, model, base_url, api_key_env, ids, limit, concurrency, dry_run, as_json):
    """Transform documents under a criterion (one word, or a criterion-only rewrite); cached.

    The proposers use the same cache, so this also pre-computes their LLM inputs.

    \b
    Example:
      condsim-annot llm transform proof-strategy --task in-one-word -m gpt-4.1-mini --limit 50
    """
    from sqlalchemy import select

    from ..criteria import load_criterion
    from ..llm.transform import transform_documents
    from ..models import Document

    store = ctx.store()
    crit = load_criterion(store, criterion)
    if ids:
        try:
            doc_ids = [int(x) for x in ids.split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter("comma-separated integers", param_hint="--ids") from None
    else:
        with store.session() as s:
            q = select(Document.id).order_by(Document.id).limit(limit)
            if crit.corpus_id:
                q = q.where(Document.corpus_id == crit.corpus_id)
            doc_ids = list(s.scalars(q).all())
    with _progress(task) as prog:
        t = prog.add_task(task, total=len(doc_ids))
        res = transform_documents(store, criterion, doc_ids, task=task, model=model, base_url=base_url,
                                  api_key_env=api_key_env, concurrency=concurrency, dry_run=dry_run,
                                  progress=lambda d, n: prog.update(t, completed=d, total=n))
    if as_json:
        click.echo(json.dumps({str(k): v for k, v in res.items()}, indent=2, ensure_ascii=False))
        return
    for i in doc_ids:
        if i in res:
            out.print(f"{i}\t{res[i]}", markup=False, highlight=False)
        elif i in res.failed:
            out.print(f"{i}\t[red]failed[/]: {escape(str(res.failed[i]))}", highlight=False)
    st = res.stats
    dry = f", {st.would_call} to make (dry run)" if dry_run else ""
    console.print(f"{st.calls} calls, {st.cached} from the log{dry}; "
                  f"tokens {st.tokens_in:,} in / {st.tokens_out:,} out")


def register(main: click.Group) -> None:
    main.add_command(judge)
    main.add_command(llm)
