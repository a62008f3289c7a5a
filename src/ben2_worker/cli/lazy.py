"""Sub-commands imported only when they are run.

Why: ``ben2-worker remove`` on one photo should cost what cutting out one photo costs. Importing
every sub-app at start (the workflow runner and its nodes, the endpoint tester, the self-check)
added ~0.8 s to every invocation before the first pixel was read (docs/performance.md). The
group class made here knows the lazy commands by name and help line and imports a command's
module only when click resolves that name to run it; the top-level help lists them from the
registered help line without importing them. Commands defined in the CLI module itself
(``remove``) keep typer's ordinary registration, so their signatures (derived from
options.py) are unchanged."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click
import typer
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True)
class LazyCommand:
    """``module:attribute`` (a ``typer.Typer`` sub-app or a command function) and its help line."""

    target: str
    help: str

    def load(self, name: str) -> click.Command:
        module_name, _, attribute = self.target.partition(":")
        obj = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(obj, typer.Typer):  # a plain command function
            single = typer.Typer()
            single.command(name)(obj)
            obj = single
        command = typer.main.get_command(obj)
        command.name = name
        command.short_help = self.help
        if isinstance(command, click.Group):  # a sub-app's page opens with the line it is listed with
            command.help = self.help
        return command

    def placeholder(self, name: str) -> click.Command:
        """What a help page lists: the name and help line, nothing imported."""
        return TyperCommand(name, help=self.help, short_help=self.help)


def lazy_group(commands: dict[str, LazyCommand]) -> type[TyperGroup]:
    """A TyperGroup class (typer builds the group itself: ``typer.Typer(cls=lazy_group(...))``)
    that serves ``commands`` besides the ones registered the ordinary way."""

    class LazyGroup(TyperGroup):
        lazy = commands
        _listing = False

        def list_commands(self, ctx: click.Context) -> list[str]:
            return [*super().list_commands(ctx), *(n for n in self.lazy if n not in self.commands)]

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            if cmd_name in self.commands or cmd_name not in self.lazy:
                return super().get_command(ctx, cmd_name)
            if self._listing:  # this group's own help page
                return self.lazy[cmd_name].placeholder(cmd_name)
            command = self.lazy[cmd_name].load(cmd_name)
            self.commands[cmd_name] = command
            return command

        def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            self._listing = True
            try:
                super().format_help(ctx, formatter)
            finally:
                self._listing = False

    return LazyGroup
