"""tools/describe_classes.py against a loopback server speaking the OpenAI chat protocol:
CuPL's questions, n answers, retries on 503/429, resume after a failure."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ovseg.cli.describe_classes import CUPL_QUESTIONS, main
from ovseg.text.vocabulary import Vocabulary, load_descriptions


class ChatServer:
    """Answers ``POST /v1/chat/completions`` with ``n`` choices echoing the question.

    ``fail``: status codes to send, in order, before answering normally (one per request);
    ``refuse``: a class name whose questions get HTTP 400 (a permanent failure).
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail: list[int] = []
        self.refuse: str | None = None
        self.one_choice = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                question = body["messages"][0]["content"]
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if server.fail:
                    return self._send(server.fail.pop(0), {"error": "busy"})
                if server.refuse and server.refuse in question:
                    return self._send(400, {"error": "refused"})
                n = 1 if server.one_choice else body["n"]
                choices = [
                    {"index": i, "message": {"role": "assistant", "content": f" {question} #{i}\n"}}
                    for i in range(n)
                ]
                self._send(200, {"object": "chat.completion", "choices": choices})

            def _send(self, code: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ChatServer()
    yield s
    s.close()


def run(server, out, *extra) -> int:
    return main(["--vocab", "cat, kitty; dog; sky [stuff]", "--endpoint", server.url, "--model",
                 "m1", "--output", str(out), "--n", "2", "--retry-wait", "0.01", "--no-progress",
                 *extra])  # fmt: skip


def test_writes_cupl_json_with_retries(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server.fail = [503, 429]  # the first request is retried twice
    out = tmp_path / "cupl.json"
    assert run(server, out) == 0
    data = load_descriptions(out)
    assert list(data) == ["cat", "dog", "sky"]
    assert data["dog"][:2] == (
        "Describe what a dog looks like #0",
        "Describe what a dog looks like #1",
    )
    assert len(data["cat"]) == 2 * len(CUPL_QUESTIONS)
    assert len(server.requests) == 2 + 3 * len(CUPL_QUESTIONS)
    assert {r["model"] for r in server.requests} == {"m1"} and server.requests[0]["n"] == 2
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    # The file feeds the classifier directly.
    vocab = Vocabulary.parse("cat, kitty; dog; sky [stuff]").with_descriptions(data)
    assert vocab.descriptions["sky"] == data["sky"]


def test_server_returning_one_choice_is_asked_again(server, tmp_path):
    server.one_choice = True
    out = tmp_path / "cupl.json"
    assert run(server, out, "--vocab", "cat") == 0
    assert len(load_descriptions(out)["cat"]) == 2 * len(CUPL_QUESTIONS)
    assert len(server.requests) == 2 * len(CUPL_QUESTIONS)


def test_failure_keeps_finished_classes_and_rerun_resumes(server, tmp_path, capsys):
    out = tmp_path / "cupl.json"
    server.refuse = "dog"
    assert run(server, out) == 1
    err = capsys.readouterr().err
    assert "HTTP 400" in err and "1 class(es) are in" in err
    assert list(json.loads(out.read_text())) == ["cat"]
    server.refuse = None
    server.requests.clear()
    assert run(server, out) == 0
    assert list(load_descriptions(out)) == ["cat", "dog", "sky"]
    asked = " ".join(r["messages"][0]["content"] for r in server.requests)
    assert "cat" not in asked  # resumed: the finished class is not asked again


def test_persistent_5xx_gives_up_after_the_retries(server, tmp_path, capsys):
    server.fail = [503] * 10
    assert run(server, tmp_path / "o.json", "--retries", "2") == 1
    assert "HTTP 503" in capsys.readouterr().err and len(server.requests) == 3


def test_unreachable_endpoint_and_bad_resume_file(tmp_path, capsys):
    rc = main(["--vocab", "cat", "--endpoint", "http://127.0.0.1:9/v1", "--output",
               str(tmp_path / "o.json"), "--retries", "1", "--retry-wait", "0.01",
               "--no-progress"])  # fmt: skip
    assert rc == 1 and "after 1 retries" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cat": []}))
    rc = main(["--vocab", "cat", "--endpoint", "http://127.0.0.1:9", "--output", str(bad)])
    assert rc == 2 and "key 'cat' has an empty list" in capsys.readouterr().err
