"""Persistence for vcc-bot: SQLModel tables, engine factory and repository functions."""
