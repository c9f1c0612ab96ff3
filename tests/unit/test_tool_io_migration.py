"""Migration 5a7c3e9b2f10 moves built-in tool bookkeeping out of step_details (pure part)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "5a7c3e9b2f10_run_step_tool_io.py"


def load():
    spec = importlib.util.spec_from_file_location("tool_io_migration", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OLD = {"type": "tool_calls", "tool_calls": [
    {"id": "call_f", "type": "function", "function": {"name": "f", "arguments": "{}", "output": "ok"}},
    {"id": "call_c", "type": "code_interpreter", "code_interpreter": {"input": "1+1", "outputs": []},
     "_arguments": '{"code": "1+1"}', "_index": 1, "_output": "2"},
    {"id": "call_s", "type": "file_search", "file_search": {"results": []},
     "_arguments": '{"query": "q"}', "_index": 2, "_output": "【0:0†a】", "_results": {"0:0": "file-a"}},
]}


def test_split_leaves_public_details_and_keys_the_rest_by_call_id():
    m = load()
    public, tool_io = m.split(OLD)
    assert all(not k.startswith("_") for call in public["tool_calls"] for k in call)
    assert public["tool_calls"][0] == OLD["tool_calls"][0]
    assert tool_io == {"call_c": {"arguments": '{"code": "1+1"}', "output": "2"},
                       "call_s": {"arguments": '{"query": "q"}', "output": "【0:0†a】", "sources": {"0:0": "file-a"}}}


def test_join_undoes_split():
    m = load()
    assert m.join(*m.split(OLD)) == OLD
    assert m.split({"type": "message_creation", "message_creation": {"message_id": "m"}})[1] == {}
