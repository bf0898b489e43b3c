"""`mlxspec chat`: the Textual chat app (mlxspec.tui), plus list/export of saved chats."""
from __future__ import annotations

import time

import click

from mlxspec.cli.common import check_name, check_sampling, check_verify, model_options, verify_options
from mlxspec.errors import InvalidParameterError


@click.command("chat")
@model_options
@click.option("--temp", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("-n", "--max-tokens", type=int, default=512, show_default=True,
              help="Most tokens per reply.")
@click.option("--system", default="", help="System prompt.")
@click.option("--show-draft", is_flag=True, help="Start with draft/target token colouring on.")
@click.option("--resume", "resume_id", metavar="ID", help="Resume a saved conversation.")
@click.option("--list", "list_only", is_flag=True, help="List saved conversations and exit.")
@click.option("--export", "export_id", metavar="ID", help="Export a saved conversation as Markdown and exit.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where --export writes (default: data dir).")
@click.option("--adapt/--no-adapt", "adapt", default=None,
              help="The draft head learns from every reply and while you type "
                   "(default: on when a head drafts).")
@click.option("--idle-adapt", "idle_adapt_s", type=float, default=30.0, show_default=True,
              metavar="SECONDS", help="Most head training between two replies (0 = only the "
                                      "short slice after each reply).")
@verify_options
def chat(model, draft, temp, top_p, max_tokens, system, show_draft, resume_id, list_only,
         export_id, output, adapt, idle_adapt_s, verify, relax_weight, relax_budget):
    """Chat with a model in the terminal; draft tokens and live speed are shown."""
    from mlxspec.tui.settings import ChatSettings
    from mlxspec.tui.store import ConversationStore

    store = ConversationStore()
    if list_only:
        convs = store.list()
        if not convs:
            click.echo(f"no saved conversations in {store.root}")
        for c in convs:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.updated))
            click.echo(f"{c.id}  {when}  {c.title or c.auto_title()}")
        return
    if export_id:
        path = store.export_markdown(_load(store, export_id), output)
        click.echo(str(path))
        return

    check_name(model, "model")
    check_name(draft, "draft")
    check_sampling(max_tokens, temp, top_p, 0, None, None, None)  # NaN / inf too
    check_verify(verify, relax_weight, relax_budget)
    settings = ChatSettings(model=model, draft=draft, temp=temp, top_p=top_p,
                            max_tokens=max_tokens, system=system, show_draft=show_draft,
                            adapt=adapt, idle_adapt_s=idle_adapt_s, verify=verify,
                            relax_weight=relax_weight, relax_budget=relax_budget)
    problem = settings.validate()
    if problem:
        raise InvalidParameterError(problem)
    conv = None
    if resume_id:
        conv = _load(store, resume_id)
        if model is None and conv.model:
            settings = settings.with_(model=conv.model)  # same model, so the turns make sense
    from mlxspec.tui.app import ChatApp

    ChatApp(settings, conversation=conv, store=store).run()


def _load(store, conv_id):
    try:
        return store.load(conv_id)
    except (KeyError, OSError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise click.ClickException(f"{msg} (see: mlxspec chat --list)") from None
