"""Log output: template folding with summarised slots and key facts in markers; warnings, errors, stack traces
and what the latest request names stay verbatim."""

from __future__ import annotations

import re
from collections.abc import Callable
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.optimize.kinds._data import (
    JAVA_TRACE,
    TRACEBACK,
    WARN_LINE_INDEXES,
    app_log,
    java_log,
    missing,
    missing_from_log,
    reduction,
)
from tests.optimize.kinds._equivalence import assert_matches_alike
from worker import tokens
from worker.optimize import facts
from worker.optimize.base import Context
from worker.optimize.kinds import _common, _templates, compress_tool_output, detect, logs

BALANCED = Context(mode="balanced")
_REPEAT_RE = re.compile(r"^\[trex: previous line repeated (\d+) more times\]$")


def test_detected_as_log() -> None:
    assert detect(app_log()) == "log"
    assert detect(java_log()) == "log"


def test_balanced_meets_goal_and_keeps_every_fact_but_incidental_values() -> None:
    text = app_log()
    result = logs.compress(text, BALANCED)
    assert result is not None and result.strategy == "log-template"
    assert missing_from_log(text, result.text) == []
    summarised = missing(text, result.text)
    assert summarised  # timestamps of folded health checks are summarised, not listed
    assert all(logs.summarisable(fact) for fact in summarised)
    # Order ids in folded request lines are not incidental: each is listed verbatim in a marker.
    order_paths = sorted(set(re.findall(r"/api/v1/orders/\d+", text)))
    assert len(order_paths) > 50 and all(p in result.text for p in order_paths)
    assert reduction(text, result.text) >= 0.60


def test_warnings_errors_and_traceback_stay_verbatim() -> None:
    text = app_log()
    lines = text.split("\n")
    result = logs.compress(text, BALANCED)
    assert result is not None
    out = result.text.split("\n")
    important = [line for line in lines if "WARNING" in line or "ERROR" in line]
    assert len(important) == len(WARN_LINE_INDEXES) + 1
    for line in important:
        assert line in out
    start = out.index(TRACEBACK[0])
    assert out[start : start + len(TRACEBACK)] == TRACEBACK  # the whole trace, in order, uninterrupted
    assert out[start - 1].endswith("unhandled exception on POST /api/v1/orders/ORD-20417/refund")


_RANGE_RE = re.compile(
    r"^\[trex: (?:(\d+) more lines like the one above \(lines? (\d+)(?:-(\d+))?[;)]|lines? (\d+)(?:-(\d+))? folded)"
)


def _folded_ranges(output: str) -> list[tuple[int, int]]:
    """The 1-based line ranges the markers of `output` say they folded."""
    ranges = []
    for line in output.split("\n"):
        match = _RANGE_RE.match(line)
        if line.startswith("[trex:"):
            assert match, line
            run_count, run_start, run_end, start, end = match.groups()
            first = int(run_start or start)
            last = int(run_end or end or first)
            assert run_count is None or int(run_count) == last - first + 1, line
            ranges.append((first, last))
    return ranges


def test_markers_give_exact_line_ranges_and_nothing_moves() -> None:
    text = app_log()
    for mode in ("balanced", "aggressive"):
        result = logs.compress(text, Context(mode=mode))
        assert result is not None
        ranges = _folded_ranges(result.text)
        assert ranges
        folded = {n for first, last in ranges for n in range(first, last + 1)}
        # Exactly the lines no marker claims are kept, in their order: a marker never claims a kept line, and
        # no line is moved next to another template's example.
        expected = [line for n, line in enumerate(text.split("\n"), 1) if n not in folded]
        kept = [line for line in result.text.split("\n") if not line.startswith("[trex:")]
        assert kept == expected
        assert "re-run to see them" in result.text.split("[trex:")[1]  # said once, in the first marker
        assert result.text.count("re-run to see them") == 1


def test_java_stack_trace_is_kept_whole() -> None:
    text = java_log()
    result = logs.compress(text, Context(mode="aggressive"))
    assert result is not None
    out = result.text.split("\n")
    start = out.index(JAVA_TRACE[0])
    assert out[start : start + len(JAVA_TRACE)] == JAVA_TRACE  # the ERROR line through `... 12 more`
    assert missing_from_log(text, result.text) == []
    assert reduction(text, result.text) > 0.3


def test_aggressive_is_not_larger_than_balanced() -> None:
    text = app_log()
    balanced = logs.compress(text, BALANCED)
    aggressive = logs.compress(text, Context(mode="aggressive"))
    assert balanced is not None and aggressive is not None
    assert tokens.count(aggressive.text) <= tokens.count(balanced.text)
    assert missing_from_log(text, aggressive.text) == []


def _expand(text: str) -> list[str]:
    out: list[str] = []
    for line in text.split("\n"):
        repeat = _REPEAT_RE.match(line)
        if repeat:
            out.extend([out[-1]] * int(repeat.group(1)))
        else:
            out.append(line)
    return out


def test_safe_mode_folds_only_exact_consecutive_duplicates() -> None:
    lines = app_log(80).split("\n")
    noisy = lines[:10] + [lines[10]] * 25 + lines[11:40] + [lines[40]] * 2 + lines[41:]
    text = "\n".join(noisy)
    result = logs.compress(text, Context(mode="safe"))
    assert result is not None and result.strategy == "log-dedupe"
    assert _expand(result.text) == noisy  # lossless: the counts give back every line
    assert result.text.count("[trex:") == 1  # a pair of repeats is not worth a marker


def test_safe_mode_without_repeats_changes_nothing() -> None:
    assert logs.compress(app_log(60), Context(mode="safe")) is None


def test_deterministic() -> None:
    text = app_log()
    first = logs.compress(text, BALANCED)
    second = logs.compress(text, BALANCED)
    assert first is not None and second is not None and first.text == second.text


def test_tiny_and_unrepetitive_logs() -> None:
    assert logs.compress("2026-03-14 09:12:00 INFO started", BALANCED) is None
    two = "2026-03-14 09:12:00 INFO started\n2026-03-14 09:12:01 INFO ready"
    assert logs.compress(two, BALANCED) is None
    assert logs.compress(app_log(), Context(mode="off")) is None


def test_dispatch_through_compress_tool_output_with_ansi_colours() -> None:
    plain = app_log()
    coloured = "\n".join(
        line.replace(" INFO ", " \x1b[32mINFO\x1b[0m ").replace(" WARNING ", " \x1b[33mWARNING\x1b[0m ")
        for line in plain.split("\n")
    )
    result = compress_tool_output(coloured, BALANCED)
    assert result is not None and result.strategy == "log-template"
    assert "\x1b" not in result.text
    assert missing_from_log(plain, result.text) == []
    assert result.removed[0].startswith("terminal escape sequences")


def test_pytest_progress_lines_fold_but_failures_stay() -> None:
    lines = ["============================= test session starts =============================="]
    lines += [f"tests/test_mod{i % 7}.py::test_case_{i} PASSED   [{i * 100 // 120:3d}%]" for i in range(120)]
    lines[57] = lines[57].replace("PASSED", "FAILED")
    text = "\n".join(lines)
    assert detect(text) == "log"
    result = logs.compress(text, BALANCED)
    assert result is not None
    assert lines[57] in result.text.split("\n")
    assert missing_from_log(text, result.text) == []
    assert reduction(text, result.text) >= 0.5


def test_summarisable_is_the_incidental_class_only() -> None:
    for fact in ("2026-11-20T10:00:01.404Z", "2026-03-14 09:12:07", "09:12:07", "3ms", "2300ms", "1,204", "97%",
                 "10.0.3.17", "0x7ffe12", "4.2 s"):  # fmt: skip
        assert logs.summarisable(fact), fact
    for fact in ("$450.00", "450 USD", "ORD-77812", "txn_8Hq2ZkLp0W", "REFUND_CAP_EXCEEDED", "E501",
                 "/srv/app/payments/refund.py", "https://pay.example.net/v2/refunds", "ops@example.com",
                 "`make test`", "v2", "#1234", "ECONNREFUSED",
                 # ids: a commit SHA, a trace id, a UUID, an address (a number with a unit can look like one)
                 "3f9a2c1d", "123abcd", "0x7ffe12a0", "123e4567-e89b-12d3-a456-426614174000"):  # fmt: skip
        assert not logs.summarisable(fact), fact


def _request_log(span_id: Callable[[int], str] = lambda i: f"{i * 7919 % 4096:03x}e{i:02d}") -> str:
    lines = []
    for i in range(60):
        lines.append(
            f"2026-11-20T10:00:{i:02d}.000Z INFO api span={span_id(i)} GET /v1/items 200 {i % 9 + 1}ms"
        )
    return "\n".join(lines)


def test_slots_are_summarised_in_the_marker() -> None:
    text = _request_log()
    result = logs.compress(text, BALANCED)
    assert result is not None
    out = result.text.split("\n")
    assert out[0] == text.split("\n")[0]  # the example stays verbatim
    assert out[1] == (
        "[trex: 59 more lines like the one above (lines 2-60; re-run to see them): "
        "{2026-11-20T10:00:01.000Z … 2026-11-20T10:00:59.000Z} INFO api span={59 distinct hex} GET /v1/items 200 "
        "{1..9}ms]"
    )
    assert len(out) == 2


def test_ids_are_never_summarised() -> None:
    """A request id, a trace id, a commit SHA: the line of each one is there to find it again, so lines that
    differ in one are not folded together."""
    for span_id in (
        lambda i: f"{(i * 7919) % 65536:04x}beef{i:04d}",  # a 12-digit hex id
        lambda i: f"{i:08x}-e89b-12d3-a456-426614174000",  # a UUID
    ):
        text = _request_log(span_id)
        result = logs.compress(text, BALANCED)
        kept = text if result is None else result.text
        assert all(f"span={span_id(i)} " in kept for i in range(60))
        assert missing_from_log(text, kept) == []


def test_a_line_s_leading_number_and_pids_are_never_summarised() -> None:
    """`ps` rows, numbered lines, `pid=` fields, `name[pid]`: what the number identifies is what the agent
    acts on (the process to kill), so lines that differ in it are not folded together."""
    rows = "\n".join(
        f"dev  {48213 + i * 7}  0.0  0.3 412344 98212 ?  S  09:14  0:0{i % 3} celery worker"
        for i in range(20)
    )
    numbered = "\n".join(f"{i + 1}. queued job for worker {i % 4}" for i in range(20))
    labelled = "\n".join(
        f"2026-11-20T10:00:{i:02d}Z INFO spawned worker pid={4100 + i} ok" for i in range(20)
    )
    syslog = "\n".join(f"2026-11-20T10:00:{i:02d}Z host celery[{4100 + i}]: task received" for i in range(20))
    for text in (rows, numbered, labelled, syslog):
        result = logs.compress(text, Context(mode="aggressive"))
        kept = text if result is None else result.text
        assert [line for line in kept.split("\n") if not line.startswith("[trex:")] == text.split("\n")


def test_values_of_two_slots_are_never_listed_as_if_combined() -> None:
    """`{09|10}:{14|41}` would read as four start times where two occurred: with two slots that vary, each
    shows its range instead of a list."""
    lines = [
        f"2026-11-20T10:00:{i:02d}.000Z INFO http GET /healthz {(200, 503)[i % 2]} {(3, 7)[i % 2]}ms"
        for i in range(30)
    ]
    result = logs.compress("\n".join(lines), BALANCED)
    assert result is not None
    assert "GET /healthz {200..503} {3..7}ms]" in result.text
    assert "|" not in result.text


def test_an_id_named_by_the_latest_request_keeps_its_line() -> None:
    text = _request_log()
    wanted = text.split("\n")[41]
    rid = wanted.split("span=")[1].split()[0]
    without = logs.compress(text, BALANCED)
    assert without is not None and wanted not in without.text.split("\n")
    asked = logs.compress(text, Context(mode="balanced", query=f"why was span {rid} slow?"))
    assert asked is not None and wanted in asked.text.split("\n")
    assert rid in asked.text
    # A term most lines share (the date of every timestamp) singles nothing out and pins nothing.
    dated = logs.compress(text, Context(mode="balanced", query="what happened on 2026-11-20?"))
    assert dated is not None and dated.text == without.text


def test_amounts_and_error_codes_in_folded_lines_are_listed_verbatim() -> None:
    lines = [
        f"2026-11-20T10:00:{i:02d}.000Z INFO billing charged ${10 + i}.50 code=PAY_{i % 4}X to card"
        for i in range(40)
    ]
    text = "\n".join(lines)
    result = logs.compress(text, BALANCED)
    assert result is not None
    for i in range(40):
        assert f"${10 + i}.50" in result.text
    assert missing_from_log(text, result.text) == []
    assert reduction(text, result.text) > 0.3


def test_few_distinct_values_are_all_listed() -> None:
    lines = [
        f"2026-11-20T10:00:{i:02d}.000Z INFO http GET /healthz {(200, 503)[i % 2]} 3ms" for i in range(30)
    ]
    result = logs.compress("\n".join(lines), BALANCED)
    assert result is not None
    assert "GET /healthz {503|200} 3ms]" in result.text


def test_the_slot_scan_steps_over_words_without_changing_a_slot() -> None:
    import random
    import re

    from tests.optimize.corpus import all_cases
    from tests.optimize.test_pipeline import _strings

    plain = re.compile(_templates._VALUE_SLOTS, re.MULTILINE)

    def slots(rx: re.Pattern[str], s: str) -> list[tuple[tuple[int, int], str | None]]:
        return [(m.span(), m.lastgroup) for m in rx.finditer(s) if m.lastgroup != "skip"]

    rng = random.Random(3)
    alphabet = [
        *"abcdefghxyzABCDEFGXYZ_0123456789 .-:/,T+Z",
        "0x",
        "2026-11-20T10:00:00",
        "deadbeef",
        "worker3",
    ]
    samples = [line for case in all_cases() for line in _strings(case.body).split("\n")]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(5000)]
    for s in samples:
        assert slots(_templates._VALUE_SLOT_RE, s) == slots(plain, s), s


def test_entries_sharing_a_skeleton_get_the_shapes_they_get_alone() -> None:
    import random

    rng = random.Random(5)
    alphabet = [
        *"abcdefxyzABCXYZ_ .-:/,[]=#(T+Z\t",
        *[
            "D",
            "D",
            "DDD",
            "0x",
            "0xD",
            "DxD",
            "Dxab",
            "pid=",
            "pid ",
            "sshd[",
            "--- PASS: ",
            "ok  \t",
            "::",
            "dev   ",
        ],
        *["DDDD-DD-DDTDD:DD:DD.DDDZ", "DD:DD:DD", "DDD.DDD.DDD.DDD", "deadbeef", "DeadD", "D.D", "\n  at "],
    ]
    skeletons = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(400)]
    # Each skeleton filled in with other digits several times (`0` among them: `0x` is not a digit's twin).
    bodies = [
        "".join(rng.choice("0123456789") if c == "D" else c for c in skeleton)
        for skeleton in skeletons
        for _ in range(4)
    ]
    bodies += [line for line in app_log().split("\n")] + ["I1203 10:00:00 x 12", "12 a 7", "x 1 2"]
    found = _templates.shapes_of(bodies, [_templates.skeleton(body) for body in bodies], range(len(bodies)))
    assert found == {i: _templates.shape(body) for i, body in enumerate(bodies)}


def test_entry_facts_found_per_skeleton_are_the_whole_scans() -> None:
    import random

    rng = random.Random(8)
    pieces = [
        *[
            "DDDD-DD-DDTDD:DD:DD.DDDZ ",
            "INFO ",
            "ERROR ",
            "GET /healthz ",
            "DDD ",
            "Dms",
            " in DDms",
            "0xDD ",
        ],
        *["order=ORD-DDDD ", "txn_DDDDDDab ", "amount=$DDD.DD ", "DD USD", "DD%", "v1.D.D ", "/srv/a.py:DD "],
        *["deadbeefD ", "pid=DDD ", "DD:DD PM ", "\n  at x.y(Z.java:DD)", "\nTraceback", "\nDD", "- ", "M"],
        *["\nms later", "\nUSD D", " took DD", "\n%", "$", "\nDDD"],
    ]
    texts = [app_log(), java_log()]
    for _ in range(60):
        skeletons = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))) for _ in range(5)]
        lines = [rng.choice(skeletons) for _ in range(40)]
        texts.append(
            "\n".join("".join(rng.choice("0123456789") if c == "D" else c for c in x) for x in lines)
        )
    crossing = 0
    for text in texts:
        entries = logs._entries(text.split("\n"))
        bodies = ["\n".join(entry.lines) for entry in entries]
        starts = logs._offsets(bodies)
        forms = _templates.skeletons(text, bodies, starts)
        assert forms == [_templates.skeleton(body) for body in bodies]
        assert logs._key_facts_by_entry(text, bodies, forms, starts) == logs._key_facts_by_scan(text, starts)
        crossing += facts.may_cross_lines(text)
    assert 0 < crossing < len(texts)  # both ways are taken


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_important_entries_found_per_skeleton_or_by_scans_are_each_entrys_own(
    share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_important_entries` tests each digit skeleton once when entries repeat a few (`_SKELETON_SHARE`), or
    scans the whole text: either way, the answer of `_is_important` for each entry."""
    import random

    monkeypatch.setattr(logs, "_SKELETON_SHARE", share)
    rng = random.Random(12)
    pieces = [
        *["DDDD-DD-DDTDD:DD:DD.DDDZ ", "INFO ", "ERROR ", "error", "WARN", "warning ", "fail ", "failed"],
        *["GET /healthz ", "DDD ", "Dms", "0xDD ", "E", "EDDDD DD:DD:DD.DDD ", "W", "DD-DD DD:DD:DD.DDD  "],
        *["DDDD  DDDD E Tag: ", "E/Tag( DDD): ", "ERR ", "x ", "ValueError", "DError", "dException: ", "  "],
        *["\n  at x.y(Z.java:DD)", "\nTraceback", "\nE  ", "\nCaused by: x", "\npanic: x", "\n    > DD | x"],
        *["Fault", "Warning", "criticalD", "_error", "é", "\t", "\nDD", "- ", "panic", "alert"],
    ]
    texts = [app_log(), java_log()]
    for _ in range(150):
        skeletons = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))) for _ in range(5)]
        lines = [rng.choice(skeletons) for _ in range(rng.randint(1, 40))]
        texts.append(
            "\n".join("".join(rng.choice("0123456789") if c == "D" else c for c in x) for x in lines)
        )
    by_skeleton = 0
    for text in texts:
        entries = logs._entries(text.split("\n"))
        bodies = ["\n".join(entry.lines) for entry in entries]
        starts = logs._offsets(bodies)
        forms = _templates.skeletons(text, bodies, starts)
        found = logs._important_entries(text, bodies, starts, forms)
        assert found == [logs._is_important(body) for body in bodies], text
        by_skeleton += len(set(forms)) + forms.count(None) <= share * len(bodies)
    assert (by_skeleton > 100) == (share > 0), by_skeleton


def test_a_line_and_its_digit_skeleton_both_open_an_entry_or_neither() -> None:
    """`_entries` tests each line skeleton once for a log prefix (`_opens`)."""
    import random

    rng = random.Random(4)
    pieces = [
        *[
            "2026-03-14T10:02:00.123Z ",
            "[2026/03/14 10:02",
            "10:02:03 ",
            "Mar  4 10:02:03 ",
            "E0314 10:02:01 ",
        ],
        *["3:04PM INF ", "03-14 10:02:00.123 ", "E/Tag( 123):", "1700000000.5 ", "10.0.0.1 - x [", "ts=1"],
        *[
            "INFO",
            "[ERROR] ",
            "PASS",
            "a::b PASSED",
            "src/a.py:12:5: error",
            "a.go:7: E501 ",
            "x:12:",
            "0x1f ",
        ],
        *[" ", "  ", "\t", "x", "1", "12", "123", "1234", "0", "-", ":", "/", ".", "AM", "PM", "Z"],
    ]
    opened = 0
    for _ in range(20_000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 5)))
        line = "".join(rng.choice("0123456789") if c.isdigit() else c for c in line)
        assert logs._opens(line) == logs._opens(facts.digit_skeleton(line)), line
        opened += logs._opens(line)
    assert 2_000 < opened < 18_000


def test_the_exception_name_scan_finds_what_the_plain_pattern_finds() -> None:
    import random

    from tests.optimize.corpus import all_cases
    from tests.optimize.test_pipeline import _strings

    plain = re.compile(
        r"[a-z0-9](?:Error|Exception|Warning|Fault)\b|^E\s{2,}|^Caused by:|^panic:", re.MULTILINE
    )

    def found(rx: re.Pattern[str], s: str) -> list[tuple[int, int]]:
        # A match is used for the line it starts on and where it ends (`_important_entries`).
        return [(s.count("\n", 0, m.start()), m.end()) for m in rx.finditer(s)]

    rng = random.Random(5)
    pieces = [
        "E",
        "  ",
        "\t",
        "\n",
        "Caused by:",
        "panic:",
        "Error",
        "Exception",
        "Fault",
        "Warning",
        "x",
        "0",
    ]
    pieces += ["p", "C", "E  ", "\nE\t\t", "ValueError", "Errors", "_Error", "É"]
    samples = [_strings(case.body) for case in all_cases()] + [
        app_log(),
        java_log(),
        "\n".join(TRACEBACK),
        "\n".join(JAVA_TRACE),
    ]
    samples += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(20000)]
    for s in samples:
        assert found(logs._EXCEPTION_NAME_RE, s) == found(plain, s), s
        assert (logs._EXCEPTION_NAME_RE.search(s) is None) == (plain.search(s) is None), s


def _glog(i: int, level: str = "I", body: str = "") -> str:
    where = "memcache.go:287" if body else f"controller.go:{100 + i % 7}"
    return f"{level}0314 10:{i // 60:02d}:{i % 60:02d}.345678       1 {where}] " + (
        body or f"Synced pod default/web-{i}"
    )


def _zerolog(i: int, level: str = "INF", body: str = "") -> str:
    return f"{1 + i % 12}:{i % 60:02d}PM {level} " + (
        body or f"request served path=/api/v1/items status=200 n={i}"
    )


def _logcat_brief(i: int, level: str = "I", body: str = "") -> str:
    return f"{level}/ActivityManager( {1200 + i % 3}): " + (
        body or f"Start proc {i} for service com.example/.Sync"
    )


def _logcat_threadtime(i: int, level: str = "I", body: str = "") -> str:
    return f"03-14 10:02:{i % 60:02d}.123  1234  5678 {level} ActivityManager: " + (
        body or f"Displayed com.example/.Main: +{300 + i}ms"
    )


_LEVEL_FORMATS = {
    "glog": (_glog, ["E", "W", "F"]),
    "zerolog": (_zerolog, ["ERR", "WRN", "FTL"]),
    "logcat-brief": (_logcat_brief, ["E", "W", "F"]),
    "logcat-threadtime": (_logcat_threadtime, ["E", "W", "F"]),
}


@pytest.mark.parametrize("name", list(_LEVEL_FORMATS))
def test_letter_and_abbreviated_levels_stay_verbatim(name: str) -> None:
    line, levels = _LEVEL_FORMATS[name]
    lines = [line(i) for i in range(30)]
    important = [
        line(
            30 + k,
            level,
            "couldn't get resource list for metrics.k8s.io/v1beta1: the server is unable to handle it",
        )
        for k, level in enumerate(sorted(levels * 5))
    ]
    text = "\n".join(lines[:10] + important + lines[10:])
    assert detect(text) == "log"
    for mode in ("balanced", "aggressive"):
        result = logs.compress(text, Context(mode=mode))
        assert result is not None and result.strategy == "log-template"  # the routine lines are folded
        kept = result.text.split("\n")
        for entry in important:
            assert entry in kept, (mode, entry)


def test_the_level_code_pattern_matches_what_its_backtracking_form_matches() -> None:
    plain = re.compile(logs._LEVEL_CODE_RE.pattern.replace(r"(?:\S++[ \t]++){0,2}", r"(?:\S+[ \t]+){0,2}"))
    alphabet = [
        *"ab \t/:()EWFAI1234\u00a0",
        "ERR",
        "WRN",
        "E/Tag",
        "W1203 10:02:01",
        "03-14 10:02:00.123  1  2 E ",
    ]
    assert_matches_alike(logs._LEVEL_CODE_RE, plain, alphabet, seed=3, most=10)


def test_the_level_word_scan_of_lowercased_text_finds_what_the_plain_pattern_finds() -> None:
    import random

    plain = re.compile(logs._IMPORTANT_RE.pattern)
    words = plain.pattern.split("(?:", 1)[1].split(")", 1)[0].replace("\n", "").split("|")
    rng = random.Random(2)
    alphabet = [*words, *" _x1-.e\n", "rror", "ing", "s"]
    for _ in range(50_000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        assert [m.start() for m in logs._IMPORTANT_LOWER_RE.finditer(s)] == [
            m.start() for m in plain.finditer(s)
        ]


# Log lines, records and markers, in pieces: words, numbers, punctuation, blanks, line breaks, non-ASCII.
_FOLD_PARTS = [
    *[
        "INFO",
        "GET",
        "/healthz",
        "200",
        "4ms",
        "it's",
        "ORD-77812",
        "2026-11-20T10:00:00.191Z",
        "x",
        "é",
        "↵",
    ],
    *["[trex: ", "folded ", "lines 3-42", "; ", ", ", "{", '"id":', "}", "...", " ", "  ", "\t", "\n", "\n/"],
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_FOLD_PARTS), max_size=8),
    st.lists(st.lists(st.sampled_from(_FOLD_PARTS), max_size=12), min_size=1, max_size=20),
)
def test_a_fold_is_judged_worth_it_as_when_every_piece_is_counted(
    marker: list[str], dropped: list[list[str]]
) -> None:
    """`worth_folding` skips an encode when the pre-tokenizer's pieces already bound the dropped text; the
    answer is the one counting them gives."""
    marker_text, pieces = "".join(marker), ["".join(parts) for parts in dropped]
    with mock.patch.object(_common, "pieces_at_least", return_value=0):
        counted = _common.worth_folding(marker_text, pieces)
    assert _common.worth_folding(marker_text, pieces) == counted


_ENTRY_LINES = st.sampled_from(
    [
        "",
        "   ",
        "2026-03-14T09:12:03Z INFO request served id=7",
        "09:12:04 WARN slow query 812 ms",
        "[ERROR] payment declined E4012",
        "ValueError: amount must be positive",
        "    at com.shop.Pay.run(Pay.java:42)",
        '  File "app.py", line 7, in main',
        "\tcontinued with a tab",
        "Caused by: java.io.IOException",
        "... 12 more",
        "plain words without a prefix",
        "src/app.py:12: error: bad type",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_ENTRY_LINES, max_size=30), st.booleans())
def test_entries_without_a_traceback_are_found_alike_by_both_ways(lines: list[str], structured: bool) -> None:
    """`_entries` takes the sliced way for lines without `Traceback`: it must find the entries the line-by-line
    walk finds, in both modes (most lines prefixed or not)."""
    blank = [not line.strip() for line in lines]
    opens = [logs._opens(line) for line in lines]
    assert logs._entries_sliced(lines, blank, opens, structured) == logs._entries_walked(
        lines, blank, opens, structured
    )
