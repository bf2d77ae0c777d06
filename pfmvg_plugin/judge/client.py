"""A small client for any OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint, built on httpx.

Why httpx and not the ``openai`` SDK: the chat-completions wire format is stable while the SDK's API has changed
across major versions; one retry policy here covers HTTP errors *and* unparsable replies with one budget and a
backoff the caller sets; local servers (vLLM, Ollama, llama.cpp) need no key, which the SDK insists on. httpx is a
dependency of the SDK, so anyone with ``openai`` installed has it.

Before a run, :meth:`ChatClient.probe` makes one cheap request (``GET {base_url}/models``): a refused connection, a
host name that does not resolve or a connect timeout stops the run at once with one line saying what to check; any
HTTP answer, even an error, counts as reachable. During the run, 408, 409, 425, 429 and 5xx answers and read
timeouts / dropped connections are retried with exponential backoff and full jitter (``backoff * 2**attempt``,
capped), honouring ``Retry-After``; a connection that cannot be opened (refused, DNS, connect timeout: the server is
gone, which no backoff fixes) gets one retry after :data:`CONNECT_RETRY_DELAY` seconds and then stops the run.
401/403 (key) and 404 (URL or model) stop the whole run with a message saying what to fix; other 4xx fail that one
request. The API key only ever goes into the ``Authorization`` header: error texts are scrubbed of it before they are
raised.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field

RETRY_STATUS = frozenset({408, 409, 425, 429})
#: Longest single wait between attempts, in seconds (also the cap on ``Retry-After``).
MAX_BACKOFF = 60.0
#: Seconds before the one retry of a connection that could not be opened (refused, DNS, connect timeout).
CONNECT_RETRY_DELAY = 0.2
#: Longest wait of the probe, in seconds (connect and read).
PROBE_TIMEOUT = 10.0
_BODY_CHARS = 300


class JudgeError(RuntimeError):
    """The run cannot go on (endpoint unreachable, key refused, wrong URL or model); the message says what to do."""


class RequestFailed(Exception):
    """One request failed for good (a non-retryable 4xx, or retries used up on 5xx); the sample stays unrated."""


@dataclass
class ClientStats:
    """Counters over the client's lifetime (thread-safe through :meth:`add`)."""

    requests: int = 0
    retries: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, status: str, retried: bool) -> None:
        with self._lock:
            self.requests += 1
            self.retries += int(retried)
            self.by_status[status] = self.by_status.get(status, 0) + 1

    def to_dict(self) -> dict:
        return {"requests": self.requests, "retries": self.retries, "by_status": dict(sorted(self.by_status.items()))}


def chat_url(base_url: str) -> str:
    """``{base_url}/chat/completions``; a URL that already ends in ``/chat/completions`` is kept."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--base-url must start with http:// or https:// (got {base_url!r}), "
                         "e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def backoff_delay(attempt: int, base: float, retry_after: str | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1``: ``Retry-After`` if given, else full jitter."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), MAX_BACKOFF)
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
    ceiling = min(base * (2 ** attempt), MAX_BACKOFF)
    return (rng or random).uniform(ceiling / 2, ceiling)


class ChatClient:
    """Thread-safe chat-completions client with retries; use as a context manager or call :meth:`close`.

    One ``httpx.Client`` (a thread-safe connection pool) is shared by all worker threads.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 5, backoff: float = 1.0, temperature: float | None = 0.0,
                 max_tokens: int | None = None, extra_body: dict | None = None, max_connections: int = 8) -> None:
        import httpx  # lazy: the core package imports without it

        self._httpx = httpx
        self.url = chat_url(base_url)
        self.model = model
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.stats = ClientStats()
        self._key = api_key or None
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        # one pooled connection per worker: the pool waits (pool timeout = ``timeout``) rather than opening more
        pool = max(1, int(max_connections))
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self.connect_timeout = min(timeout, PROBE_TIMEOUT)
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=self.connect_timeout),
                                    limits=limits)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scrub(self, text: str) -> str:
        """``text`` with the API key (if any) replaced by ``***``."""
        return text.replace(self._key, "***") if self._key else text

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        with self._rng_lock:
            delay = backoff_delay(attempt, self.backoff, retry_after, self._rng)
        time.sleep(delay)

    def body(self, messages: list[dict]) -> dict:
        """The JSON request body for ``messages``."""
        body: dict = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        body.update(self.extra_body)
        return body

    # -- the call ---------------------------------------------------------------------------------------------------
    def complete(self, messages: list[dict]) -> str:
        """The assistant message text for ``messages``, after up to ``retries`` retries.

        Raises :class:`JudgeError` when the run cannot go on and :class:`RequestFailed` when only this request failed.
        """
        httpx = self._httpx
        body = self.body(messages)
        connect_failures = 0
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._client.post(self.url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:  # refused, DNS: server gone
                connect_failures += 1
                stop = last or connect_failures > 1
                self.stats.add(type(exc).__name__, retried=not stop)
                if stop:
                    raise JudgeError(self._unreachable(exc)) from None
                time.sleep(CONNECT_RETRY_DELAY)
                continue
            except httpx.TransportError as exc:  # read timeouts, dropped connections: retried with backoff
                self.stats.add(type(exc).__name__, retried=not last)
                if last:
                    raise JudgeError(self._unreachable(exc, f"after {self.retries} retries")) from None
                self._sleep(attempt)
                continue
            code = response.status_code
            self.stats.add(str(code), retried=not last and (code in RETRY_STATUS or code >= 500))
            if code == 200:
                return self._content(response)
            detail = self.scrub(response.text[:_BODY_CHARS].strip())
            if code in (401, 403):
                raise JudgeError(f"the endpoint refused the request (HTTP {code}: {detail}). Check the API key: it is "
                                 "read from the environment variable named by --api-key-env (default OPENAI_API_KEY)")
            if code == 404:
                raise JudgeError(f"HTTP 404 from {self.url} ({detail}). Check --base-url (most servers want the "
                                 f"part up to /v1, e.g. http://localhost:8000/v1) and --model {self.model!r}")
            if code in RETRY_STATUS or code >= 500:
                if last:
                    raise RequestFailed(f"HTTP {code} after {self.retries} retries: {detail}")
                self._sleep(attempt, response.headers.get("retry-after"))
                continue
            raise RequestFailed(f"HTTP {code}: {detail}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _content(self, response) -> str:
        try:
            data = response.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RequestFailed("the reply is not a chat completion (no choices[0].message.content): "
                                + self.scrub(response.text[:_BODY_CHARS])) from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""

    def probe(self) -> None:
        """One cheap request (``GET {base_url}/models``) before a run; raises :class:`JudgeError` when no connection
        can be opened. Any HTTP answer (even 404 or 401) and a slow reply count as reachable."""
        httpx = self._httpx
        url = self.url.removesuffix("/chat/completions") + "/models"
        try:
            self._client.get(url, timeout=httpx.Timeout(PROBE_TIMEOUT, connect=self.connect_timeout))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError, httpx.UnsupportedProtocol) as exc:
            raise JudgeError(self._unreachable(exc)) from None
        except httpx.TransportError:  # connected, but the reply was slow or odd: the chat requests will tell
            pass

    def _unreachable(self, exc: Exception, tries: str = "") -> str:
        return self.scrub(f"cannot reach the judge endpoint {self.url}{' ' + tries if tries else ''}: "
                          f"{connect_failure(exc, self.connect_timeout)}")


def _in_chain(exc: BaseException, kind: type) -> bool:
    seen = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def connect_failure(exc: Exception, connect_timeout: float) -> str:
    """What went wrong opening a connection, and what to check, in one sentence for the user."""
    name = type(exc).__name__
    check_url = ("check --base-url (e.g. https://api.openai.com/v1, or http://localhost:8000/v1 for a local "
                 "vLLM/Ollama server)")
    if name == "ProxyError":
        return f"the proxy failed ({exc}); check HTTPS_PROXY / HTTP_PROXY / NO_PROXY"
    if name == "ConnectTimeout":
        return (f"no answer to the connection within {connect_timeout:g} s: the host is down, a firewall drops the "
                f"connection or the port is wrong; {check_url} and your network or proxy (HTTPS_PROXY)")
    if _in_chain(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        return (f"connection refused: nothing listens at that host and port. Check that the server is running and "
                f"listening there, and {check_url}")
    if _in_chain(exc, socket.gaierror) or "name or service not known" in str(exc).lower():
        return (f"the host name does not resolve (DNS: {exc}); {check_url} for a typo, and your network or proxy "
                "(HTTPS_PROXY)")
    return f"{name}: {exc}. Check that the server is running, {check_url}, and your network or proxy (HTTPS_PROXY)"
