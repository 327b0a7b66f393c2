"""Settings from defaults, bastion.toml and BASTION_* variables; every bad value refused with a fix."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bastion.settings import MIB, Settings, SettingsError, load_settings, parse_duration

BASTION = str(Path(sys.executable).parent / "bastion")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BASTION_* variable of the caller's environment leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("BASTION_"):
            monkeypatch.delenv(name)


def write_toml(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bastion.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refusal(data_dir: Path | None = None, **overrides: object) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(data_dir, **overrides)
    return str(info.value)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings == Settings(data_dir=tmp_path)
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'bastion.db'}"
    assert settings.effective_blob_dir == tmp_path / "files"
    assert settings.max_file_size == 100 * MIB
    assert settings.token_expiry == timedelta(days=90)
    assert settings.prohibited_names == ()


def test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BASTION_MAX_FILE_SIZE", "1234")
    monkeypatch.setenv("BASTION_PROHIBITED_NAMES", " evil , worse,,")
    monkeypatch.setenv("BASTION_PUBLIC_URL", "https://pkgs.example.org")
    monkeypatch.setenv("BASTION_TOKEN_DEFAULT_EXPIRY", "12h")
    monkeypatch.setenv("BASTION_BLOB_DIR", str(tmp_path / "blobs"))
    monkeypatch.setenv("BASTION_DATABASE_URL", "postgresql+psycopg://u@h/db")
    settings = load_settings()
    assert settings.data_dir == tmp_path
    assert settings.max_file_size == 1234
    assert settings.prohibited_names == ("evil", "worse")
    assert settings.public_url == "https://pkgs.example.org"
    assert settings.token_expiry == timedelta(hours=12)
    assert settings.effective_blob_dir == tmp_path / "blobs"
    assert settings.effective_database_url == "postgresql+psycopg://u@h/db"
    monkeypatch.setenv("BASTION_TOKEN_DEFAULT_EXPIRY", "never")
    assert load_settings().token_expiry is None


def test_toml_file_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(tmp_path, 'max_file_size = 2048\nprohibited_names = ["a", "b"]\nworkers = 3\n'
                         'token_default_expiry = "2w"\npublic_url = "https://toml.example"\n')
    settings = load_settings(tmp_path)
    assert (settings.max_file_size, settings.prohibited_names, settings.workers) == (2048, ("a", "b"), 3)
    assert settings.token_expiry == timedelta(weeks=2)
    monkeypatch.setenv("BASTION_MAX_FILE_SIZE", "4096")  # the environment beats the file
    assert load_settings(tmp_path).max_file_size == 4096
    assert load_settings(tmp_path).public_url == "https://toml.example"
    assert load_settings(tmp_path, workers=5).workers == 5  # explicit overrides beat both


def test_config_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_toml(tmp_path / "etc", "max_file_size = 777\n")
    write_toml(tmp_path / "data", "max_file_size = 1\n")  # ignored: BASTION_CONFIG wins
    monkeypatch.setenv("BASTION_CONFIG", str(config))
    assert load_settings(tmp_path / "data").max_file_size == 777


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration(" 90m ") == timedelta(minutes=90)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("36500d") == timedelta(days=36500)
    for bad in ("30x", "30", "d", "1.5d", "-1d", "0h", "", "30 days", "36501d", "99999999999999999999d"):
        with pytest.raises(SettingsError) as info:
            parse_duration(bad, what="--expires")
        assert f"invalid --expires {bad!r}" in str(info.value)


# (where, setting, raw value) -> words the message must contain besides the setting's name
BAD_VALUES = {
    "env: not a number": ("env", "max_file_size", "10MB", "expected a positive whole number"),
    "env: fraction": ("env", "max_file_size", "1.5", "expected a positive whole number"),
    "env: zero": ("env", "max_file_size", "0", "expected a positive whole number"),
    "env: negative": ("env", "max_archive_members", "-3", "expected a positive whole number"),
    "env: empty": ("env", "workers", "", "expected a positive whole number"),
    "env: zero workers": ("env", "workers", "0", "expected a positive whole number"),
    "env: bad expiry": ("env", "token_default_expiry", "30x", "use a whole number and a unit, e.g. 30d"),
    "env: zero expiry": ("env", "token_default_expiry", "0d", "longer than zero"),
    "toml: text for a number": ("toml", "max_file_size", '"abc"', "expected a positive whole number"),
    "toml: zero": ("toml", "max_file_size", "0", "expected a positive whole number"),
    "toml: fraction": ("toml", "max_file_size", "1.5", "expected a positive whole number"),
    "toml: boolean": ("toml", "max_file_size", "true", "expected a positive whole number"),
    "toml: list for a number": ("toml", "bomb_floor", "[1]", "expected a positive whole number"),
    "toml: bad expiry": ("toml", "token_default_expiry", '"30x"', "use a whole number and a unit"),
    "toml: number for a list": ("toml", "prohibited_names", "5", "list"),
    "toml: number for text": ("toml", "public_url", "5", "text"),
    "toml: table for a path": ("toml", "blob_dir", "{ a = 1 }", "text"),
    "env: advisories source missing": ("env", "advisories_source", "/nonexistent/advisory-database",
                                       "which does not exist: give a checkout of the PyPA advisory database"),
    "env: bad advisories interval": ("env", "advisories_interval", "often", "use a whole number and a unit"),
    "env: unknown upload strictness": ("env", "upload_strictness", "strict", "use one of pypi, lenient"),
    "toml: unknown upload strictness": ("toml", "upload_strictness", '"loose"', "use one of pypi, lenient"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_refused_with_the_setting_and_a_fix(case: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    where, setting, raw, hint = BAD_VALUES[case]
    env_name = f"BASTION_{setting.upper()}"
    if where == "env":
        monkeypatch.setenv(env_name, raw)
    else:
        write_toml(tmp_path, f"{setting} = {raw}\n")
    message = refusal(tmp_path)
    assert env_name in message or (where == "toml" and setting in message), message
    assert hint in message, message


def test_unknown_toml_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "max_filesize = 10\n")
    message = refusal(tmp_path)
    assert f"unknown setting 'max_filesize' in {path}" in message
    assert "known settings: " in message and "max_file_size" in message


def test_data_dir_cannot_be_set_in_the_file_it_lives_in(tmp_path: Path) -> None:
    write_toml(tmp_path, 'data_dir = "/elsewhere"\n')
    assert "unknown setting 'data_dir'" in refusal(tmp_path)


def test_broken_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "max_file_size = [\n")
    message = refusal(tmp_path)
    assert f"cannot read {path}" in message and "fix the TOML syntax" in message
    path.write_bytes(b"public_url = \"\xff\xfe\"\n")
    assert "fix the TOML syntax" in refusal(tmp_path)


def test_missing_config_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "typo.toml"))
    message = refusal(tmp_path)
    assert "BASTION_CONFIG" in message and str(tmp_path / "typo.toml") in message


def _cli(*args: str) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return subprocess.Popen([BASTION, *args], env=clean, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_commands_refuse_a_broken_config_cleanly(tmp_path: Path) -> None:
    """`bastion serve` (and every other command) stops with the message on stderr, no traceback."""
    broken = tmp_path / "a-rather-long-directory-name-so-that-the-message-exceeds-eighty-columns" / "data"
    path = write_toml(broken, "max_file_size = [\n")
    runs = {
        "serve": _cli("serve", "--port", "0", "--data-dir", str(broken)),
        "token create": _cli("token", "create", "--user", "x", "--data-dir", str(broken)),
    }
    results = {name: (proc.communicate(timeout=60), proc.returncode) for name, proc in runs.items()}
    for name, ((stdout, stderr), code) in results.items():
        assert code == 2, (name, code, stderr)
        assert stdout == "", name
        assert "Traceback" not in stderr, (name, stderr)
        assert stderr.startswith("error: "), (name, stderr)
        assert f"cannot read {path}: " in stderr, (name, stderr)
        assert "fix the TOML syntax" in stderr
    assert sorted(p.name for p in broken.iterdir()) == ["bastion.toml"]  # nothing created for a refused config


def test_commands_started_at_once_on_a_fresh_data_dir_share_one_secret(tmp_path: Path) -> None:
    """Two commands started together (a server and a CLI, or CLIs in parallel) both create the
    data dir: none may fail on the other's key file, and none may read it before it is written."""
    import threading

    from bastion.settings import ensure_data_dir, read_encryption_key, read_secret_key

    settings = load_settings(tmp_path / "fresh")
    start = threading.Barrier(16)
    seen: list[tuple[bytes, bytes]] = []
    errors: list[BaseException] = []

    def first_start() -> None:
        try:
            start.wait()
            ensure_data_dir(settings)
            seen.append((read_secret_key(settings), read_encryption_key(settings)))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=first_start) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(seen) == 16 and len(set(seen)) == 1 and all(seen[0])
    for path in (settings.secret_key_path, settings.encryption_key_path):
        assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in settings.data_dir.iterdir()) == ["encryption.key", "files", "secret.key"]
