"""run_steps: tool_io, the model's side of built-in tool calls, out of the public step_details

Before this revision a built-in tool call kept, inside the public ``step_details`` JSON, keys the
executor needed to rebuild the model's context and stripped again on the way out: ``_arguments``
(the JSON the model wrote), ``_output`` (the text it was told), ``_results`` (citation marker →
file id) and ``_index``. They now live in ``run_steps.tool_io``, keyed by tool call id
(``{"call_…": {"arguments", "output", "sources"}}``); existing rows are moved.

Revision ID: 5a7c3e9b2f10
Revises: 9d2e4b7a1c35
Create Date: 2026-12-02 17:00:00
"""
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '5a7c3e9b2f10'
down_revision: Union[str, None] = '9d2e4b7a1c35'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_steps = sa.table('run_steps', sa.column('seq', sa.BigInteger), sa.column('type', sa.String),
                  sa.column('step_details', sa.JSON), sa.column('tool_io', sa.JSON))
_PRIVATE = {'_arguments': 'arguments', '_output': 'output', '_results': 'sources'}
BATCH = 500


def split(details: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored step_details → (the public details, the tool_io they held)."""
    calls, tool_io = [], {}
    for call in details.get('tool_calls') or []:
        io = {_PRIVATE[k]: v for k, v in call.items() if k in _PRIVATE}
        if io:
            tool_io[call['id']] = io
        calls.append({k: v for k, v in call.items() if not k.startswith('_')})
    return {**details, 'tool_calls': calls}, tool_io


def join(details: dict[str, Any], tool_io: dict[str, Any]) -> dict[str, Any]:
    calls = []
    for index, call in enumerate(details.get('tool_calls') or []):
        io = tool_io.get(call['id'])
        if io:
            call = {**call, **{k: io[v] for k, v in _PRIVATE.items() if v in io}, '_index': index}
        calls.append(call)
    return {**details, 'tool_calls': calls}


def _rewrite(change) -> None:
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(sa.select(_steps.c.seq, _steps.c.step_details, _steps.c.tool_io)
                            .where(_steps.c.type == 'tool_calls', _steps.c.seq > last)
                            .order_by(_steps.c.seq).limit(BATCH)).all()
        if not rows:
            return
        for seq, details, tool_io in rows:
            new_details, new_io = change(details or {}, tool_io or {})
            if new_details != details or new_io != (tool_io or None):
                bind.execute(_steps.update().where(_steps.c.seq == seq)
                             .values(step_details=new_details, tool_io=new_io))
        last = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table('run_steps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tool_io', sa.JSON(), nullable=True))

    def move_out(details, _io):
        public, tool_io = split(details)
        return public, tool_io or None

    _rewrite(move_out)


def downgrade() -> None:
    _rewrite(lambda details, io: (join(details, io), None))
    with op.batch_alter_table('run_steps', schema=None) as batch_op:
        batch_op.drop_column('tool_io')
