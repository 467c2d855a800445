"""wrangler_local.toml + .dev.vars + environment → Config, and one clear error for a bad file."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, free_port
from worker.config import ConfigError, Overrides, load_config
from worker.vault import ensure_master_key

BASE = """
name = "svc"
main = "worker/app.py"
compatibility_date = "2026-11-01"

[vars]
OPENAI_BASE_URL = "http://openai.test/v1"
MAX_BODY_BYTES = 2048
FEATURE = true

[[kv_namespaces]]
binding = "TREX_KV"
id = "main"

[dev]
ip = "127.0.0.1"
port = 9999

[local]
persist_to = "state"

[env.staging]
name = "svc-staging"
[env.staging.vars]
ANTHROPIC_BASE_URL = "http://anthropic.staging/"
[[env.staging.kv_namespaces]]
binding = "TREX_KV"
id = "staging"
[env.staging.local]
kv_url = "redis://127.0.0.1:6379/3"
"""


def write(tmp_path: Path, text: str, dev_vars: str | None = None) -> Path:
    path = tmp_path / "wrangler_local.toml"
    path.write_text(text)
    if dev_vars is not None:
        (tmp_path / ".dev.vars").write_text(dev_vars)
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert cfg.source == "<defaults>"
    assert (cfg.ip, cfg.port) == ("127.0.0.1", 8787)
    assert cfg.max_body_bytes == 1024 * 1024
    assert cfg.vars["OPENAI_BASE_URL"] == "https://api.openai.com/v1"
    assert cfg.persist_to == (tmp_path / ".wrangler/state").resolve()
    assert cfg.kv_url == f"sqlite:///{cfg.persist_to / 'kv.sqlite3'}"
    assert (cfg.header_timeout_seconds, cfg.body_idle_timeout_seconds) == (20, 60)
    assert cfg.client_read_timeout_seconds == 120


def test_file_values_and_relative_persist_dir(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), environ={})
    assert cfg.name == "svc" and cfg.port == 9999
    assert cfg.vars["OPENAI_BASE_URL"] == "http://openai.test/v1"
    assert cfg.vars["FEATURE"] == "true"
    assert cfg.vars["ANTHROPIC_BASE_URL"] == "https://api.anthropic.com"  # default kept
    assert cfg.max_body_bytes == 2048
    assert cfg.persist_to == (tmp_path / "state").resolve()
    assert cfg.kv_namespaces[0].id == "main"


def test_env_section_overrides_and_vars_are_not_inherited(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), Overrides(env="staging"), environ={})
    assert cfg.env_name == "staging"
    assert cfg.name == "svc-staging"
    assert cfg.port == 9999  # [dev] inherited
    assert cfg.kv_url == "redis://127.0.0.1:6379/3"
    assert cfg.persist_to == (tmp_path / "state").resolve()  # [local] merged, not replaced
    assert cfg.vars["ANTHROPIC_BASE_URL"] == "http://anthropic.staging/"
    # Like wrangler: [vars] of the top level are not inherited by [env.staging].
    assert cfg.vars["OPENAI_BASE_URL"] == "https://api.openai.com/v1"
    assert "FEATURE" not in cfg.vars
    assert cfg.kv_namespaces[0].id == "staging"


def test_environment_variables_override_vars(tmp_path: Path) -> None:
    env = {"OPENAI_BASE_URL": "http://from-env/v1", "MAX_BODY_BYTES": "4096", "TREX_KV_URL": "memory://"}
    cfg = load_config(write(tmp_path, BASE), environ=env)
    assert cfg.vars["OPENAI_BASE_URL"] == "http://from-env/v1"
    assert cfg.max_body_bytes == 4096
    assert cfg.kv_url == "memory://"


def test_cli_overrides_win(tmp_path: Path) -> None:
    ov = Overrides(ip="0.0.0.0", port=1234, kv_url="memory://", log_format="json", shutdown_grace_seconds=1.5)
    cfg = load_config(write(tmp_path, BASE), ov, environ={"TREX_KV_URL": "redis://x:1/0"})
    assert (cfg.ip, cfg.port, cfg.kv_url, cfg.log_format, cfg.shutdown_grace_seconds) == (
        "0.0.0.0",
        1234,
        "memory://",
        "json",
        1.5,
    )


@pytest.mark.parametrize("grace", [-5.0, 0.0, math.nan, math.inf])
def test_a_bad_grace_seconds_override_is_refused(tmp_path: Path, grace: float) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BASE), Overrides(shutdown_grace_seconds=grace), environ={})
    assert info.value.source == "--grace-seconds" and "positive" in info.value.problem


def test_secrets_come_from_dev_vars_and_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path, BASE, dev_vars="TREX_MASTER_KEY=from-dev-vars-0123456789abcdef0123456789\nOTHER=x\n"
    )
    cfg = load_config(path, environ={})
    assert cfg.secret("TREX_MASTER_KEY") == "from-dev-vars-0123456789abcdef0123456789"
    cfg = load_config(path, environ={"TREX_MASTER_KEY": "from-env"})
    assert cfg.secret("TREX_MASTER_KEY") == "from-env"
    assert "TREX_MASTER_KEY" not in cfg.vars
    assert "from-env" not in repr(cfg)
    # Every secret the worker reads may come from the environment, the embeddings endpoint's key too.
    cfg = load_config(path, environ={"MEMORY_EMBEDDINGS_API_KEY": "sk-embed-env"})
    assert cfg.secret("MEMORY_EMBEDDINGS_API_KEY") == "sk-embed-env"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('name = "x"\nport = [', "", "invalid TOML"),
        ('[dev]\nport = "eighty"', "dev.port", "expected 0..65535"),
        ("[dev]\nport = 70000", "dev.port", "expected 0..65535"),
        ("bogus = 1", "bogus", "unknown key"),
        ('[vars]\nTREX_ADMIN_TOKEN = "x"', "vars.TREX_ADMIN_TOKEN", "looks like a secret"),
        ('[vars]\nOPENAI_API_KEY = "sk-x"', "vars.OPENAI_API_KEY", "looks like a secret"),
        ('[vars]\nopenai_api_key = "sk-x"', "vars.openai_api_key", "looks like a secret"),
        ('[vars]\nOPENAI_APIKEY = "sk-x"', "vars.OPENAI_APIKEY", "looks like a secret"),
        ('[vars]\nOPENAIAPIKEY = "sk-x"', "vars.OPENAIAPIKEY", "looks like a secret"),
        ('[vars]\nGITHUBTOKEN = "x"', "vars.GITHUBTOKEN", "looks like a secret"),
        ('[vars]\nMYSECRET = "x"', "vars.MYSECRET", "looks like a secret"),
        ('[vars]\nDBPASSWORD = "x"', "vars.DBPASSWORD", "looks like a secret"),
        ('[vars]\nMAX_BODY_BYTES = "lots"', "vars.MAX_BODY_BYTES", "expected a positive number"),
        ("[vars]\nMAX_BODY_BYTES = 1.5e6", "vars.MAX_BODY_BYTES", "expected an integer"),
        ("[vars]\nUPSTREAM_IDLE_TIMEOUT = 0", "vars.UPSTREAM_IDLE_TIMEOUT", "expected a positive number"),
        ('[vars]\nAGENT_SIGNATURE_SKEW_SECONDS = "inf"', "vars.AGENT_SIGNATURE_SKEW_SECONDS", "up to 1e+09"),
        ("[vars]\nSESSION_TTL_SECONDS = 1e19", "vars.SESSION_TTL_SECONDS", "up to 1e+09"),
        ('[vars]\nPROTECT_RECENT_TURNS = "two"', "vars.PROTECT_RECENT_TURNS", "integer from 0 to 1000"),
        ("[vars]\nPROTECT_RECENT_TURNS = 100000", "vars.PROTECT_RECENT_TURNS", "integer from 0 to 1000"),
        ("[vars]\nNESTED = { a = 1 }", "vars.NESTED", "expected a string, number or boolean"),
        ('[local]\nkv_url = "mysql://x"', "local.kv_url", "unsupported URL"),
        ('[local]\nlog_format = "xml"', "local.log_format", "expected one of"),
        ("[dev]\nprot = 8080", "dev.prot", "unknown setting"),
        ('[local]\nkv_ur = "memory://"', "local.kv_ur", "unknown setting"),
        ("[local]\nshutdown_grace_seconds = -1", "local.shutdown_grace_seconds", "positive"),
        ("[local]\nshutdown_grace_seconds = nan", "local.shutdown_grace_seconds", "positive"),
        ("[local]\nwait_until_timeout_seconds = inf", "local.wait_until_timeout_seconds", "up to 1e+09"),
        ("[local]\nheader_timeout_seconds = 0", "local.header_timeout_seconds", "positive"),
        ('[local]\nheader_timeout_seconds = "10s"', "local.header_timeout_seconds", "positive"),
        ("[local]\nbody_idle_timeout_seconds = -5", "local.body_idle_timeout_seconds", "positive"),
        ("[local]\nclient_read_timeout_seconds = 0", "local.client_read_timeout_seconds", "positive"),
        ('kv_namespaces = [{ binding = "OTHER" }]', "kv_namespaces", "TREX_KV"),
        ('compatibility_date = "yesterday"', "compatibility_date", "YYYY-MM-DD"),
    ],
)
def test_bad_config_names_file_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.source == str(path)
    assert info.value.key == key
    assert problem in info.value.problem


def test_unknown_env_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"env\.prod: no such environment \(staging\)"):
        load_config(write(tmp_path, BASE), Overrides(env="prod"), environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_cli_exits_2_with_one_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[dev]\nport = "eighty"\n')
    for argv in (
        ["dev", "--config", str(path)],
        ["config", "--config", str(path)],
        ["kv", "list", "--config", str(path)],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "worker", *argv], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert lines == [f"trex: config error: {path}: dev.port: expected 0..65535, got 'eighty'"]


def test_shipped_config_is_valid() -> None:
    cfg = load_config(ROOT / "wrangler_local.toml", environ={})
    assert (cfg.ip, cfg.port) == ("127.0.0.1", 8787)
    assert cfg.kv_url.startswith("sqlite:///")
    shared = load_config(ROOT / "wrangler_local.toml", Overrides(env="shared"), environ={})
    assert shared.kv_url.startswith("redis://")


def test_dev_exits_2_on_an_error_found_while_building_the_gateway(tmp_path: Path) -> None:
    """A plan, a model entry or the master key is checked once the SQLite KV is open: the process still
    exits 2 with one line (it used to hang, the KV's thread keeping it alive), with one worker or several."""
    path = write(tmp_path, 'name = "t"\n[plans.broken]\ndaily_requests = -1\n')
    (tmp_path / ".dev.vars").write_text("TREX_MASTER_KEY=" + "m" * 40 + "\n")
    for extra in ([], ["--workers", "2", "--port", str(free_port())]):
        proc = subprocess.run(
            [sys.executable, "-m", "worker", "dev", "--config", str(path), *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        errors = {ln for ln in proc.stderr.splitlines() if ln.startswith("trex: config error:")}
        assert len(errors) == 1 and "plans.broken.daily_requests" in errors.pop(), proc.stderr


def test_an_empty_master_key_in_the_environment_does_not_hide_the_files(tmp_path: Path) -> None:
    """`TREX_MASTER_KEY=` exported by a shell must not make every command generate a new key (which would
    leave the provider keys sealed with the first one unreadable)."""
    key = "k" * 40
    path = write(tmp_path, 'name = "t"\n', dev_vars=f"TREX_MASTER_KEY={key}\n")
    assert load_config(path, environ={"TREX_MASTER_KEY": ""}).secret("TREX_MASTER_KEY") == key
    assert load_config(path, environ={"TREX_MASTER_KEY": "e" * 40}).secret("TREX_MASTER_KEY") == "e" * 40


def test_a_master_key_line_that_cannot_be_read_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    broken = 'TREX_MASTER_KEY="' + "A" * 40 + "\n"  # the closing quote is missing
    path = write(tmp_path, 'name = "t"\n', dev_vars=broken)
    with pytest.raises(ConfigError) as info:
        ensure_master_key(load_config(path, environ={}), announce=False)
    assert info.value.key == "TREX_MASTER_KEY" and "line 1" in info.value.problem
    assert (tmp_path / ".dev.vars").read_text() == broken  # nothing appended


def test_a_password_in_the_kv_url_is_never_printed(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "t"\n[local]\nkv_url = "redis://:s3cretpass@127.0.0.1:6379/15"\n')
    for argv in (["config", "--config", str(path)], ["config", "--config", str(path), "--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "worker", *argv], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        assert (
            "s3cretpass" not in proc.stdout + proc.stderr and "redis://:***@127.0.0.1:6379/15" in proc.stdout
        )


def test_credentials_in_any_url_valued_var_are_never_printed(tmp_path: Path) -> None:
    """`trex config` masks the userinfo and secret query parameters of every URL it prints, not only kv_url's."""
    path = write(
        tmp_path,
        'name = "t"\n[vars]\n'
        'OPENAI_BASE_URL = "https://proxyuser:s3cretpass@openai.internal/v1"\n'
        'ANTHROPIC_BASE_URL = "https://tok3n-as-user@anthropic.internal"\n'
        'MEMORY_EMBEDDINGS_URL = "http://embed.internal/v1?api_key=s3cretkey&dim=256"\n'
        'LOCAL_BASE_URL = "http://127.0.0.1:11434/v1"\n'
        "[local]\n"
        'kv_url = "redis://127.0.0.1:6379/15?password=s3cretkv"\n',
    )
    expected = (
        "https://proxyuser:***@openai.internal/v1",
        "https://***@anthropic.internal",
        "http://embed.internal/v1?api_key=***&dim=256",
        "http://127.0.0.1:11434/v1",
        "redis://127.0.0.1:6379/15?password=***",
    )
    for argv in (["config", "--config", str(path)], ["config", "--config", str(path), "--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "worker", *argv], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        for secret in ("s3cretpass", "tok3n-as-user", "s3cretkey", "s3cretkv"):
            assert secret not in proc.stdout + proc.stderr, (argv, secret)
        for shown in expected:
            assert shown in proc.stdout, (argv, shown)


def test_a_relative_sqlite_kv_url_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like persist_to: `trex kv …` run from another directory opens the server's file, not a new empty one."""
    path = write(tmp_path, 'name = "t"\n[local]\nkv_url = "sqlite:///state/kv.sqlite3"\n')
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert (
        load_config(path, environ={}).kv_url == f"sqlite:///{(tmp_path / 'state' / 'kv.sqlite3').resolve()}"
    )
    absolute = write(tmp_path, f'name = "t"\n[local]\nkv_url = "sqlite:///{tmp_path}/abs.sqlite3"\n')
    assert load_config(absolute, environ={}).kv_url == f"sqlite:///{tmp_path}/abs.sqlite3"
