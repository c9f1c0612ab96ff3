"""chunk search: embedding model column, full-text index (FTS5 on SQLite, tsvector on PostgreSQL)

Revision ID: 3b1f6a0c2d47
Revises: 7c4d2679cc0d
Create Date: 2026-11-27 14:50:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '3b1f6a0c2d47'
down_revision: Union[str, None] = '7c4d2679cc0d'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# The full-text structures are not in the SQLAlchemy model (migrations/env.py leaves them out of
# `alembic check`): SQLite's FTS5 table follows `chunks` through triggers, PostgreSQL's
# `tsv` column is generated from `text`.
SQLITE_UP = [
    # Contentless (the text stays in `chunks`), with the chunk's store as a second column so that
    # a query matches within one store instead of joining every match back to `chunks`. The store
    # id is written without '_' so that it is one token.
    "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, store, content='', "
    "tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN "
    "INSERT INTO chunks_fts(rowid, text, store) VALUES (new.seq, new.text, replace(new.vector_store_id, '_', '')); "
    "END",
    "CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN "
    "INSERT INTO chunks_fts(chunks_fts, rowid, text, store) "
    "VALUES ('delete', old.seq, old.text, replace(old.vector_store_id, '_', '')); END",
    "INSERT INTO chunks_fts(rowid, text, store) SELECT seq, text, replace(vector_store_id, '_', '') FROM chunks",
    # Each term's document count, read to keep a lexical query within a postings budget.
    "CREATE VIRTUAL TABLE chunks_fts_vocab USING fts5vocab(chunks_fts, 'row')",
]
SQLITE_DOWN = ["DROP TABLE chunks_fts_vocab", "DROP TRIGGER chunks_fts_delete", "DROP TRIGGER chunks_fts_insert",
               "DROP TABLE chunks_fts"]
POSTGRES_UP = [
    "ALTER TABLE chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED",
    "CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)",
]
POSTGRES_DOWN = ["DROP INDEX ix_chunks_tsv", "ALTER TABLE chunks DROP COLUMN tsv"]


def upgrade() -> None:
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('embedding_model', sa.String(length=64), nullable=True))
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_UP if sqlite else POSTGRES_UP:
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_DOWN if sqlite else POSTGRES_DOWN:
        op.execute(statement)
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.drop_column('embedding_model')
