"""Logs: SEQSERVE_LOG_FORMAT=json makes every line the process writes one JSON object,
uvicorn's included, with the request's fields; escaping and caps still hold; one
failure is one ERROR line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time

import httpx

from app.ops.logs import MAX_LOGGED_MESSAGE, JsonFormatter
from bench.server import ServerProcess
from tests.engine.test_faults import fail_once

REQUIRED = {"time", "level", "logger", "message", "request_id"}


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    r = logging.LogRecord("seqserve.test", logging.ERROR, __file__, 1, msg, args, exc_info)
    r.__dict__.update(extra)
    return r


def test_json_lines_escape_controls_cap_lengths_and_stay_one_line():
    f = JsonFormatter()
    nasty = "a\nb\r\x1b[31mred\u2028c\x00\x85 é"
    line = f.format(_record("path %s", nasty, route=nasty, status=404, exc=True))
    assert "\n" not in line and "\r" not in line and "\u2028" not in line and line.isascii()
    obj = json.loads(line)
    assert REQUIRED <= obj.keys() and obj["level"] == "ERROR" and obj["status"] == 404
    assert "\n" not in obj["message"] and "\\x0a" in obj["message"] and "\\x1b" in obj["message"]
    assert "\\x0a" in obj["route"]  # extra fields a client controls are escaped too
    assert "ValueError: boom" in obj["exception"]  # the traceback, as one JSON string
    long = json.loads(f.format(_record("x" * 100_000)))
    assert len(long["message"]) < MAX_LOGGED_MESSAGE + 100


def test_every_line_of_a_json_server_is_one_json_object_with_the_request_fields(tiny_models_dir):
    with ServerProcess(tiny_models_dir, log_format="json") as srv:
        rid = "log-test-1"
        r = httpx.post(srv.url + "/sentiment", json={"text": "a fine film"},
                       headers={"x-request-id": rid})
        assert r.status_code == 200
        httpx.post(srv.url + "/sentiment", json={"text": 5})  # 422
        httpx.get(srv.url + "/nothing%0aforged")  # 404, a control in the path
        httpx.post(srv.url + "/generate", json={"prompt": "a", "max_new_chars": 5})
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert srv.terminate() == 0
        lines = srv.log().splitlines()
    objs = [json.loads(line) for line in lines]  # every line parses
    assert all(REQUIRED <= o.keys() for o in objs), [o for o in objs if not REQUIRED <= o.keys()]
    loggers = {o["logger"] for o in objs}
    assert "uvicorn.error" in loggers and "seqserve.http" in loggers  # uvicorn's lines too
    done = next(o for o in objs if o["request_id"] == rid and o["logger"] == "seqserve.http")
    assert done["route"] == "/sentiment" and done["status"] == 200 and done["method"] == "POST"
    assert done["model"] == "sentiment" and done["model_version"].startswith("0.0.test")
    assert done["duration_ms"] > 0 and done["bytes"] > 0
    assert done["client"].startswith("127.0.0.1:")
    forged = next(o for o in objs if o.get("status") == 404)
    assert "\\x0a" in forged["message"] and forged["route"] == "unmatched"
    assert any("SIGHUP" in o["message"] for o in objs)


def test_one_failure_is_one_error_line_and_its_requests_carry_the_error_id(
        make_client, tiny_models_dir, capture_log):
    c = make_client(tiny_models_dir)
    log = capture_log()
    fail_once(c.app.state.seqserve.registry.models["sentiment"])
    r = c.post("/sentiment", json={"text": "a good film"})
    assert r.status_code == 500
    error_id = r.json()["error"]["error_id"]
    errors = [x for x in log.records if x.levelno >= logging.ERROR]
    assert len(errors) == 1 and error_id in errors[0].getMessage()
    done = [x for x in log.records if x.name == "seqserve.http"]
    assert done[-1].__dict__["error_id"] == error_id and done[-1].__dict__["status"] == 500
    fail_once(c.app.state.seqserve.registry.models["chargen"])
    r = c.post("/generate", json={"prompt": "the ", "max_new_chars": 5})
    assert r.status_code == 500
    assert len([x for x in log.records if x.levelno >= logging.ERROR]) == 2
