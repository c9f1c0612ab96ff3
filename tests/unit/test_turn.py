"""runs/turn.py: upstream chunks → a turn's text, tool calls and usage (pure)."""

from __future__ import annotations

import itertools
import json

from assistantd.runs.turn import InputDelta, TextDelta, ToolCallStarted, TurnReader


def reader(**kwargs) -> TurnReader:
    ids = (f"call_{i}" for i in itertools.count())
    kinds = {"code_interpreter": "code_interpreter", "file_search": "file_search"}
    return TurnReader(lambda name: kinds.get(name, "function"), lambda: next(ids),
                      {"code_interpreter": "code"}, **kwargs)


def chunk(delta=None, finish=None, index=0, usage=None):
    out = {"object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish}]}
    if usage:
        out["usage"] = usage
    return out


def call(index, name=None, arguments=None, id_="upstream-id"):
    function = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    return {"tool_calls": [{"index": index, "id": id_, "type": "function", "function": function}]}


def test_text_streams_as_text_deltas_and_the_finish_reason_is_kept():
    r = reader()
    assert r.feed(chunk({"role": "assistant", "content": ""})) == []
    assert r.feed(chunk({"content": "Hello"})) == [TextDelta("Hello")]
    assert r.feed(chunk({"content": ", world"})) == [TextDelta(", world")]
    assert r.feed(chunk(finish="stop")) == []
    assert (r.answer, r.finish_reason, r.calls) == ("Hello, world", "stop", {})


def test_other_choices_are_ignored():
    r = reader()
    assert r.feed(chunk({"content": "second answer"}, index=1)) == []
    assert r.answer == ""


def test_a_function_call_streams_its_raw_arguments():
    r = reader()
    [started] = r.feed(chunk(call(0, "get_weather", "")))
    assert isinstance(started, ToolCallStarted)
    assert (started.call.name, started.call.type, started.call.id, started.call.index) == \
        ("get_weather", "function", "call_0", 0)
    assert r.feed(chunk(call(0, arguments='{"city": '))) == [InputDelta(started.call, '{"city": ')]
    assert r.feed(chunk(call(0, arguments='"Paris"}'))) == [InputDelta(started.call, '"Paris"}')]
    assert r.feed(chunk(finish="tool_calls")) == []
    assert [c.arguments for c in r.ordered_calls()] == ['{"city": "Paris"}']
    assert r.finish_reason == "tool_calls"


def test_code_interpreter_streams_the_decoded_code_not_its_json():
    r = reader()
    code = 'print("a\\tb")\nx = "é😀"\n'
    arguments = json.dumps({"code": code})
    [started] = r.feed(chunk(call(0, "code_interpreter", "")))
    assert started.call.type == "code_interpreter"
    pieces = []
    for i in range(0, len(arguments), 3):  # split anywhere, escapes included
        for happening in r.feed(chunk(call(0, arguments=arguments[i:i + 3]))):
            assert isinstance(happening, InputDelta)
            pieces.append(happening.piece)
    assert "".join(pieces) == code
    assert r.calls[0].arguments == arguments


def test_parallel_calls_are_numbered_in_the_order_they_start():
    r = reader()
    first = r.feed(chunk(call(3, "file_search", "")))[0].call
    second = r.feed(chunk(call(7, "lookup", '{"q": 1}')))[0].call
    assert (first.index, second.index, first.type, second.type) == (0, 1, "file_search", "function")
    # file_search has no streamed argument: its arguments gather silently
    assert r.feed(chunk(call(3, arguments='{"query": "x"}'))) == []
    assert [c.id for c in r.ordered_calls()] == ["call_0", "call_1"]
    assert r.calls[3].arguments == '{"query": "x"}'


def test_a_name_split_across_chunks_is_joined():
    r = reader()
    r.feed(chunk(call(0, "get_", "")))
    r.feed(chunk(call(0, "weather")))
    assert r.calls[0].name == "get_weather"


def test_usage_is_the_upstreams_when_reported_else_counted():
    r = reader()
    r.feed(chunk({"content": "one two three"}))
    r.feed({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}})
    assert r.final_usage(prompt_tokens=99) == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}

    counted = reader()
    counted.feed(chunk({"content": "one two three"}))
    usage = counted.final_usage(prompt_tokens=42)
    assert usage["prompt_tokens"] == 42 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == 42 + usage["completion_tokens"]
