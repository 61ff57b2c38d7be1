"""Helpers for the energy tests: a private PostgreSQL schema per test."""

from __future__ import annotations

import contextlib
import uuid
from urllib.parse import quote

import sqlalchemy as sa


@contextlib.contextmanager
def private_schema(base_url: str):
    """Yield a URL whose connections use a fresh schema (dropped afterwards), so tests can
    migrate and fill the energy tables without seeing each other."""
    schema = f"energy_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
