"""Log lines carry the stage and the trace id; JSON off a terminal, readable on one."""

from __future__ import annotations

import io
import json

from shared.log import configure_logging, get_logger, trace


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_carry_stage_and_trace_id():
    out = io.StringIO()
    configure_logging("graph", "info", "auto", stream=out)
    log = get_logger()
    log.info("before", n=1)
    with trace("t-123", msg_id="m-9"):
        log.info("during", step=4)
    log.debug("hidden")
    log.info("after")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["before", "during", "after"]
    assert all(e["stage"] == "graph" for e in events)
    assert [e["trace_id"] for e in events] == [None, "t-123", None]
    assert events[1]["msg_id"] == "m-9" and events[1]["step"] == 4 and "msg_id" not in events[2]


def test_terminal_gets_readable_lines():
    out = FakeTty()
    configure_logging("llm", "debug", "auto", stream=out)
    get_logger().debug("scored", k=4)
    line = out.getvalue()
    assert "scored" in line and "k" in line and "llm" in line
    assert not line.lstrip().startswith("{")
