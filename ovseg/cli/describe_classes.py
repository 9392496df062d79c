"""Write class descriptions (CuPL JSON) by asking an OpenAI-compatible chat endpoint.

For every class of the vocabulary, CuPL's five questions (Pratt et al., ICCV 2023) are asked,
``--n`` answers each; the answers become the class's description sentences, which
``model.text.descriptions`` / ``--descriptions`` feed to the text classifier. Any server that
speaks ``POST {endpoint}/chat/completions`` works: a local one (llama.cpp, vLLM, Ollama) or a
hosted one (the API key comes from ``$OPENAI_API_KEY`` when set).

The output file is rewritten atomically after each class; a rerun skips the classes it already
holds (resumable). Failed requests (HTTP 429 / 5xx, connection errors, time-outs) are retried
with exponential back-off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ovseg.text.vocabulary import check_descriptions, resolve_vocabulary
from ovseg.utils.io import atomic_write_json

EPILOG = """examples:
  python tools/describe_classes.py --vocab ade20k-150 --endpoint http://localhost:8080/v1 \\
      --model llama-3-8b-instruct --output ade20k_150_cupl.json
  python tools/test.py CONFIG --weights W --dataset ade20k-150 --descriptions ade20k_150_cupl.json
"""

# CuPL's "base" questions (its paper, Table 6 / its repository's prompts).
CUPL_QUESTIONS: tuple[str, ...] = (
    "Describe what a {} looks like",
    "How can you identify a {}?",
    "What does a {} look like?",
    "Describe an image from the internet of a {}",
    "A caption of an image of a {}:",
)
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """The endpoint refused or failed for good (after the retries)."""


def completions_url(endpoint: str) -> str:
    """``{endpoint}/chat/completions`` unless ``endpoint`` already is that URL."""
    url = endpoint.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def ask(
    url: str,
    question: str,
    *,
    model: str,
    n: int,
    temperature: float,
    max_tokens: int,
    api_key: str | None,
    retries: int,
    retry_wait: float,
    timeout: float,
) -> list[str]:
    """``n`` answers to ``question`` (more requests when the server returns fewer choices)."""
    answers: list[str] = []
    for _ in range(n):  # bounded: a server that ignores ``n`` answers one per request
        body = {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "n": n - len(answers),
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        reply = _post(url, body, api_key, retries, retry_wait, timeout)
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices:
            raise EndpointError(f"{url}: the reply has no 'choices' list: {str(reply)[:200]}")
        for c in choices:
            text = (c.get("message") or {}).get("content") if isinstance(c, dict) else None
            if isinstance(text, str) and text.strip():
                answers.append(" ".join(text.split()))
        if len(answers) >= n:
            break
    return answers[:n]


def _post(url: str, body: dict, api_key: str | None, retries: int, wait: float, timeout: float):
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            if e.code not in RETRY_STATUS or attempt == retries:
                detail = e.read()[:200].decode("utf-8", "replace")
                raise EndpointError(f"{url}: HTTP {e.code} {e.reason}: {detail}") from None
            delay = _retry_after(e.headers.get("Retry-After"), wait * 2**attempt)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            if attempt == retries:
                reason = getattr(e, "reason", e)
                raise EndpointError(f"{url}: {reason} (after {retries} retries)") from None
            delay = wait * 2**attempt
        except json.JSONDecodeError as e:
            raise EndpointError(f"{url}: the reply is not JSON ({e})") from None
        time.sleep(delay)
    raise AssertionError("unreachable")


def _retry_after(header: str | None, default: float) -> float:
    try:
        return min(float(header), 60.0) if header else default
    except ValueError:
        return default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="describe_classes.py",
        description="Write CuPL class descriptions by asking an OpenAI-compatible chat endpoint.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--vocab", required=True, help="built-in name, vocabulary file or 'a; b' text")
    p.add_argument(
        "--endpoint",
        required=True,
        metavar="URL",
        help="base URL (…/v1) or the full …/chat/completions URL",
    )
    p.add_argument("--model", default="gpt-4o-mini", help="model name sent to the endpoint")
    p.add_argument("--output", required=True, metavar="FILE", help="CuPL JSON (resumed if present)")
    p.add_argument("--n", type=int, default=10, help="answers per question (default 10)")
    p.add_argument("--temperature", type=float, default=0.99, help="default 0.99 (CuPL)")
    p.add_argument("--max-tokens", type=int, default=50, help="default 50 (CuPL)")
    p.add_argument("--retries", type=int, default=5, help="retries per request (default 5)")
    p.add_argument("--retry-wait", type=float, default=1.0, help="first back-off, seconds")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Returns 0 when every class is described, 1 when the endpoint failed, 2 on usage errors."""
    args = build_parser().parse_args(argv)
    if args.n < 1 or args.retries < 0 or args.max_tokens < 1:
        print("error: --n and --max-tokens must be >= 1, --retries >= 0", file=sys.stderr)
        return 2
    try:
        vocab = resolve_vocabulary(args.vocab)
    except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
        print(f"error: bad vocabulary: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    done: dict[str, list[str]] = {}
    if out.is_file():
        try:
            done = {k: list(v) for k, v in check_descriptions(json.loads(out.read_text()),
                                                              str(out)).items()}  # fmt: skip
        except (ValueError, UnicodeDecodeError) as e:
            print(f"error: cannot resume from {out}: {e}", file=sys.stderr)
            return 2
    todo = [name for name in dict.fromkeys(vocab.names) if name not in done]
    url = completions_url(args.endpoint)
    api_key = os.environ.get("OPENAI_API_KEY")
    from tqdm import tqdm

    bar = tqdm(todo, desc="describing", unit="class", disable=args.no_progress or None)
    try:
        for name in bar:
            sentences: list[str] = []
            for q in CUPL_QUESTIONS:
                sentences += ask(url, q.format(name), model=args.model, n=args.n,
                                 temperature=args.temperature, max_tokens=args.max_tokens,
                                 api_key=api_key, retries=args.retries,
                                 retry_wait=args.retry_wait, timeout=args.timeout)  # fmt: skip
            if not sentences:
                raise EndpointError(f"{url}: no non-empty answer for class {name!r}")
            done[name] = sentences
            atomic_write_json(out, done)
    except EndpointError as e:
        print(f"error: {e}; {len(done)} class(es) are in {out}, rerun to resume", file=sys.stderr)
        return 1
    finally:
        bar.close()
    print(f"{out}: descriptions of {len(done)} class(es)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
