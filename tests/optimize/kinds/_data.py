"""Realistic tool outputs for the compressor tests, generated with fixed seeds (same text on every run)."""

from __future__ import annotations

import difflib
import random
from typing import Any

from worker import tokens
from worker.optimize.facts import find_facts


def missing(original: str, output: str) -> list[str]:
    """Facts of `original` (the catalog's own `find_facts` over the whole text) not verbatim in `output`."""
    return [fact for fact in find_facts(original) if fact not in output]


def missing_from_log(original: str, output: str) -> list[str]:
    """`missing()` under the log compressor's rule: only incidental values (`logs.summarisable`) of folded
    entries may be summarised instead of kept, so any other fact missing from `output` is a loss."""
    from worker.optimize.kinds.logs import summarisable

    return [fact for fact in missing(original, output) if not summarisable(fact)]


def reduction(original: str, output: str) -> float:
    """Share of tokens saved."""
    return 1 - tokens.count(output) / tokens.count(original)


# --- JSON -------------------------------------------------------------------------------------------

_FIRST = ["Alice", "Bob", "Carla", "Dev", "Erin", "Farid", "Grace", "Hiro", "Ines", "Jon"]
_LAST = ["Smith", "Lopez", "Nguyen", "Okafor", "Muller", "Rossi", "Kim", "Silva"]

FAILED_ORDER_INDEX = 117
OUTLIER_ORDER_INDEX = 64


def orders(n: int = 200, seed: int = 7) -> dict[str, Any]:
    """A page of an orders API: 200 records, one failed payment (with an error object), one huge total."""
    rnd = random.Random(seed)
    statuses = ["paid"] * 6 + ["shipped"] * 3 + ["refunded"]
    records: list[dict[str, Any]] = []
    for i in range(n):
        first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
        day = 1 + i * 27 // n
        records.append(
            {
                "id": 10001 + i,
                "order_number": f"ORD-{10001 + i}",
                "customer": {
                    "id": rnd.randint(5000, 5999),
                    "name": f"{first} {last}",
                    "email": f"{first.lower()}.{last.lower()}{rnd.randint(1, 99)}@example.com",
                    "tier": rnd.choice(["standard", "standard", "gold"]),
                },
                "status": rnd.choice(statuses),
                "currency": "USD",
                "total": round(rnd.uniform(12, 480), 2),
                "items_count": rnd.randint(1, 6),
                "created_at": f"2026-02-{day:02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:"
                f"{rnd.randint(0, 59):02d}Z",
                "shipping": {
                    "method": rnd.choice(["ground", "ground", "express"]),
                    "carrier": rnd.choice(["UPS", "FedEx", "DHL"]),
                    "country": rnd.choice(["US", "US", "CA", "DE"]),
                },
                "gift": False,
                "payment_error": None,
            }
        )
    if n > FAILED_ORDER_INDEX:
        failed = records[FAILED_ORDER_INDEX]
        failed["status"] = "failed"
        failed["payment_error"] = {"code": "card_declined", "message": "Your card was declined."}
    if n > OUTLIER_ORDER_INDEX:
        records[OUTLIER_ORDER_INDEX]["total"] = 98450.0
    return {"data": records, "has_more": True, "next_cursor": "cur_8f3K2mQ1xZ"}


def users(n: int = 200, seed: int = 9) -> list[dict[str, Any]]:
    """A user-admin API listing: 200 accounts, two of them suspended by an error."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
        out.append(
            {
                "id": 7000 + i,
                "login": f"{first.lower()}{last.lower()}{i}",
                "display_name": f"{first} {last}",
                "role": rnd.choice(["member", "member", "member", "admin"]),
                "active": True,
                "mfa_enabled": rnd.random() < 0.7,
                "teams": rnd.sample(["core", "infra", "billing", "growth"], k=rnd.randint(1, 2)),
                "last_login_days": rnd.randint(0, 30),
            }
        )
    for i in (33, 151):
        out[i]["active"] = False
        out[i]["error"] = "account locked after too many failed logins"
    return out


# --- logs -------------------------------------------------------------------------------------------

WARN_LINE_INDEXES = (120, 260, 410)
TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/srv/app/api/orders.py", line 212, in refund',
    "    result = payments.refund(order.payment_id, amount)",
    '  File "/srv/app/payments/client.py", line 88, in refund',
    "    raise PaymentGatewayError(resp.status, resp.body)",
    "app.payments.errors.PaymentGatewayError: 502 Bad Gateway from https://pay.example.net/v2/refunds",
]


def app_log(n: int = 500, seed: int = 11) -> str:
    """500 lines of a busy web service: health checks, request logs, cache/worker/metrics chatter, three
    warnings and one error with a Python traceback. Several lines per second, as under load."""
    rnd = random.Random(seed)
    t = 9 * 3600 + 12 * 60
    ips = ["10.0.3.17", "10.0.3.18", "10.0.7.41"]
    lines: list[str] = []
    while len(lines) < n:
        if rnd.random() < 0.3:
            t += 1
        ts = f"2026-03-14 {t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"
        k = len(lines)
        if k in WARN_LINE_INDEXES:
            lines.append(
                f"{ts} WARNING app.db: connection pool near capacity (in use 19/20, waiting {k % 7})"
            )
            continue
        if k == 333:
            lines.append(f"{ts} ERROR app.api: unhandled exception on POST /api/v1/orders/ORD-20417/refund")
            lines += TRACEBACK
            continue
        r = rnd.random()
        ip = rnd.choice(ips)
        if r < 0.45:
            lines.append(f'{ts} INFO uvicorn.access: {ip} - "GET /healthz HTTP/1.1" 200')
        elif r < 0.75:
            order = rnd.randint(20000, 20999)
            lines.append(f'{ts} INFO uvicorn.access: {ip} - "GET /api/v1/orders/{order} HTTP/1.1" 200')
        elif r < 0.85:
            events, ms = rnd.randint(10, 60), rnd.randint(5, 90)
            lines.append(f"{ts} INFO app.worker: processed batch of {events} events in {ms}ms")
        elif r < 0.95:
            lines.append(f"{ts} DEBUG app.cache: hit ratio {rnd.randint(80, 99)}% over last 60s")
        else:
            lines.append(f"{ts} INFO app.metrics: flushed {rnd.randint(100, 400)} series to statsd")
    return "\n".join(lines)


JAVA_TRACE = [
    "2026-03-14T09:12:02.051Z ERROR [http-6] c.e.Orders - request failed",
    "java.lang.IllegalStateException: order 6 has no customer",
    "\tat com.example.orders.OrderService.load(OrderService.java:118)",
    "\tat com.example.orders.OrderController.get(OrderController.java:42)",
    "Caused by: java.sql.SQLException: connection reset",
    "\tat org.postgresql.core.v3.QueryExecutorImpl.execute(QueryExecutorImpl.java:391)",
    "\t... 12 more",
]


def java_log() -> str:
    """A Spring-style log, millisecond timestamps: pool-stats chatter around one exception with a cause."""
    lines = ["2026-03-14T09:12:01.120Z INFO  [main] c.e.Orders - started in 4.2 s"]
    for i in range(40):
        if i == 20:
            lines += JAVA_TRACE
        lines.append(
            f"2026-03-14T09:12:{2 + i // 10:02d}.{(i * 37) % 1000:03d}Z DEBUG [pool-1] c.z.h.HikariPool - "
            "HikariPool-1 - Pool stats (total=10, active=2, idle=8, waiting=0)"
        )
    return "\n".join(lines)


# --- search -----------------------------------------------------------------------------------------

GREP_FILES = [
    "src/payments/webhooks.py", "src/payments/client.py", "src/payments/retry.py", "src/orders/service.py",
    "src/orders/models.py", "src/api/routes/orders.py", "src/api/middleware.py", "src/jobs/scheduler.py",
    "src/jobs/worker.py", "src/config/settings.py", "src/utils/backoff.py", "tests/test_webhooks.py",
    "tests/test_retry.py", "tests/test_scheduler.py", "docs/operations.md",
]  # fmt: skip
GREP_QUERY = "where is the retry limit for payment webhooks configured?"
GREP_ANSWER = (
    'src/config/settings.py:57:WEBHOOK_MAX_RETRIES = int(os.environ.get("WEBHOOK_MAX_RETRIES", "8"))'
)
_GREP_TEMPLATES = [
    "    retry_count = {a}",
    "    for attempt in range(self.max_retries):",
    '        logger.info("retrying request", attempt=attempt, delay=delay)',
    "    def retry_with_backoff(self, fn, *, retries={a}):",
    "        if response.status_code >= 500 and attempt < self.max_retries:",
    "    # retry transient failures; see RetryPolicy",
    "        delay = min(self.base_delay * 2 ** attempt, self.max_delay)",
    "from src.utils.backoff import retry_with_backoff",
    "    assert job.retries == {a}",
    "        await asyncio.sleep(retry_delay)",
    "    retryable = isinstance(exc, (TimeoutError, ConnectionError))",
    "    policy = RetryPolicy(max_attempts={a}, jitter=True)",
]


def grep_output(seed: int = 5) -> str:
    """`grep -rn retry` over a 15-file project: 300 lines, 20 per file, one line answering GREP_QUERY."""
    rnd = random.Random(seed)
    lines: list[str] = []
    for path in GREP_FILES:
        numbers = sorted(rnd.sample(range(1, 400), 20))
        for k, number in enumerate(numbers):
            if path == "src/config/settings.py" and k == 5:
                lines.append(GREP_ANSWER + "  # payment webhook retry limit")
                continue
            lines.append(f"{path}:{number}:{rnd.choice(_GREP_TEMPLATES).format(a=rnd.randint(2, 6))}")
    return "\n".join(lines)


# --- diffs ------------------------------------------------------------------------------------------

_BODY = [
    '    """Synchronise {noun} {{item_id}} with the upstream service and return the stored record."""',
    "    session = get_session(settings.database_url, pool_size=settings.pool_size)",
    '    response = client.get(f"/api/v2/{noun}s/{{item_id}}", timeout=settings.request_timeout)',
    "    if response.status_code == 404:",
    '        logger.info("{noun} %s no longer exists upstream; marking as archived", item_id)',
    "        return archive_{noun}(session, item_id)",
    "    response.raise_for_status()",
    "    payload = response.json()",
    "",
    "    record = session.get({cls}, item_id) or {cls}(id=item_id)",
    '    record.name = payload["name"].strip()',
    '    record.status = payload.get("status", "pending")',
    '    record.updated_at = parse_timestamp(payload["updated_at"])',
    "    if record.status not in ALLOWED_STATUSES:",
    '        raise SyncError(f"unexpected status {{record.status!r}} for {noun} {{item_id}}")',
    "",
    "    session.add(record)",
    "    session.commit()",
    "    return record",
]
_EDITS = [
    ['    record.status = payload.get("status", "pending")'],
    [
        '    response = client.get(f"/api/v2/items/{item_id}", timeout=settings.request_timeout, '
        "headers=auth_headers())"
    ],
    [
        "    if not payload:",
        '        logger.warning("empty payload for %s", item_id)',
        "        return None",
        "",
    ],
    ['    metrics.increment("sync.records", tags={"kind": kind})'],
]


def _module(noun: str, cls: str, functions: int) -> list[str]:
    out = [
        f'"""Synchronisation jobs for {noun}s."""', "", "from __future__ import annotations", "",
        "import logging", "from datetime import datetime, timezone", "", "from app.db import get_session",
        "from app.settings import settings", "", "logger = logging.getLogger(__name__)",
        'ALLOWED_STATUSES = frozenset({"active", "pending", "archived"})', "",
    ]  # fmt: skip
    for k in range(functions):
        out += ["", f"def sync_{noun}_{k}(client: ApiClient, item_id: int) -> {cls}:"]
        out += [line.format(noun=noun, cls=cls) for line in _BODY]
    return out


def git_diff(seed: int = 1) -> str:
    """`git diff` of a 4-file change (3 edits per file: replaced, inserted and deleted lines), -U3."""
    rnd = random.Random(seed)
    parts: list[str] = []
    targets = [
        ("app/jobs/orders.py", "order", "Order"),
        ("app/jobs/invoices.py", "invoice", "Invoice"),
        ("app/jobs/users.py", "user", "User"),
        ("app/jobs/reports.py", "report", "Report"),
    ]
    for path, noun, cls in targets:
        old = _module(noun, cls, 6)
        new = list(old)
        for _ in range(3):
            i = rnd.randrange(14, len(new) - 3)
            r = rnd.random()
            block = rnd.choice(_EDITS)
            if r < 0.5:
                new[i : i + 1] = block
            elif r < 0.8:
                new[i:i] = block
            else:
                del new[i : i + 2]
        body = list(difflib.unified_diff(old, new, f"a/{path}", f"b/{path}", lineterm="", n=3))
        header = (
            f"diff --git a/{path} b/{path}\nindex {rnd.getrandbits(28):07x}..{rnd.getrandbits(28):07x} 100644"
        )
        parts.append(header + "\n" + "\n".join(body))
    return "\n".join(parts)


# --- markup -----------------------------------------------------------------------------------------


def html_page() -> str:
    """An API reference page with head boilerplate, analytics scripts, nav, a list, a table and a footer."""
    endpoints = ["list-orders", "get-order", "create-refund", "cancel-order", "list-invoices"]
    items = "\n".join(
        f'        <li><a href="/docs/api/v2/endpoints/{name}">{name.replace("-", " ").title()}</a>'
        f" — returns {k} fields</li>"
        for k, name in enumerate(endpoints, start=3)
    )
    errors = [
        ("400", "Malformed request body", "no"),
        ("401", "Missing or invalid API key", "no"),
        ("429", "Rate limit exceeded (600 requests/min)", "yes"),
        ("503", "Upstream unavailable", "yes"),
    ]
    rows = "\n".join(f"          <tr><td>{c}</td><td>{m}</td><td>{r}</td></tr>" for c, m, r in errors)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Orders API v2.4.1 — Reference</title>
  <link rel="stylesheet" href="/static/css/main.3f9a2c1.css">
  <style>
    body {{ font-family: system-ui, sans-serif; margin: 0 auto; max-width: 960px; line-height: 1.5; }}
    .nav a {{ color: #333; padding: 4px 8px; text-decoration: none; }}
    .nav a:hover {{ background: #eee; }}
    pre {{ background: #f6f8fa; padding: 16px; overflow: auto; }}
    table.errors td, table.errors th {{ border: 1px solid #ddd; padding: 6px; }}
  </style>
  <script async src="https://www.googletagmanager.com/gtag/js?id=G-8XK2L9QW1E"></script>
  <script>
    window.dataLayer = window.dataLayer || [];
    function gtag(){{dataLayer.push(arguments);}}
    gtag('js', new Date());
    gtag('config', 'G-8XK2L9QW1E', {{ 'anonymize_ip': true, 'cookie_expires': 63072000 }});
  </script>
</head>
<body>
  <nav class="nav" aria-label="Main">
    <a href="/">Home</a> <a href="/docs">Docs</a> <a href="/pricing">Pricing</a> <a href="/blog">Blog</a>
    <a href="/login" class="btn btn-primary">Sign in</a>
  </nav>
  <main>
    <article>
      <h1>Orders API</h1>
      <p>The Orders API lets you list, create and refund orders. All requests go to
        <a href="https://api.example.com/v2">https://api.example.com/v2</a> and must carry an
        <code>Authorization: Bearer &lt;key&gt;</code> header.</p>
      <h2>Endpoints</h2>
      <ul>
{items}
      </ul>
      <h2>Example</h2>
      <pre><code>curl -H "Authorization: Bearer $KEY" \\
     https://api.example.com/v2/orders?limit=50</code></pre>
      <h2>Errors</h2>
      <table class="errors">
        <thead><tr><th>Code</th><th>Meaning</th><th>Retry</th></tr></thead>
        <tbody>
{rows}
        </tbody>
      </table>
      <p>Refunds over $5,000.00 require the <code>refunds:large</code> scope. Contact support@example.com.</p>
    </article>
  </main>
  <footer class="site-footer"><p>&copy; 2026 Example Inc. · <a href="/privacy">Privacy</a> ·
    <a href="/terms">Terms</a></p></footer>
  <script src="/static/js/app.8c1d2e3.js" defer></script>
</body>
</html>
"""


def csv_invoices(n: int = 120, seed: int = 2) -> str:
    """An invoices CSV export; row 77 failed."""
    rnd = random.Random(seed)
    lines = ["invoice_id,customer,plan,status,amount,currency,issued_on"]
    for i in range(n):
        status = "failed" if i == 77 else ("paid" if rnd.random() < 0.8 else "open")
        customer = rnd.choice(["Acme Corp", "Globex", "Initech", "Umbrella", "Hooli"])
        plan = rnd.choice(["starter", "pro", "enterprise"])
        amount, day = rnd.randint(20, 900), 1 + i % 28
        lines.append(f"INV-{2026000 + i},{customer},{plan},{status},{amount}.00,USD,2026-01-{day:02d}")
    return "\n".join(lines)


def markdown_services(n: int = 40, seed: int = 4) -> str:
    """A padded markdown status table; svc-23 is degraded."""
    rnd = random.Random(seed)
    lines = [
        "| Service        | Region     | Status    | p99 latency |",
        "|----------------|------------|-----------|-------------|",
    ]
    for i in range(n):
        status = "degraded" if i == 23 else "healthy"
        region = rnd.choice(["us-east-1", "eu-west-1"])
        lines.append(f"| svc-{i:<10} | {region:<10} | {status:<9} | {rnd.randint(20, 99)} ms       |")
    return "\n".join(lines)


def kubectl_pods(n: int = 60, seed: int = 6) -> str:
    """`kubectl get pods`: 60 running pods, one in CrashLoopBackOff."""
    rnd = random.Random(seed)
    lines = ["NAME                                READY   STATUS    RESTARTS   AGE"]
    for i in range(n):
        status, restarts = ("CrashLoopBackOff", 17) if i == 41 else ("Running", 0)
        name = f"api-{rnd.getrandbits(32):08x}-{rnd.getrandbits(20):05x}"
        lines.append(f"{name}          1/1     {status:<9} {restarts:<10} {rnd.randint(1, 30)}d")
    return "\n".join(lines)


PYTHON_SOURCE = '''"""Order loading."""

import os
import sys


class Loader:
    """Load orders from disk."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> str:
        with open(self.path) as fh:
            return fh.read()


def main() -> int:
    loader = Loader(sys.argv[1])
    print(loader.read())
    return 0
'''

PROSE = """The deployment finished without incident. We rolled the new build out to the canary pool first,
watched the error budget for thirty minutes, and then promoted it to the remaining regions.

Two follow-ups remain: the dashboard still shows the old version string, and the on-call runbook
needs a paragraph about the new feature flag. Neither blocks the release."""
