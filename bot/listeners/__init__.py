"""Thin Slack handlers: ack, parse, call the core, render. One module per kind."""

from slack_bolt.async_app import AsyncApp

from bot.listeners import actions, commands, events, home


def register(app: AsyncApp) -> None:
    commands.register(app)
    actions.register(app)
    events.register(app)
    home.register(app)
