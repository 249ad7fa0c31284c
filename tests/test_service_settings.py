"""Serve settings: where each value comes from, and what a bad one looks like to the person who set it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotorec.cli import build_parser, main


def _settings(argv: list[str]):
    from rotorec.service.cli import read_settings

    return read_settings(build_parser().parse_args(["serve", *argv]))


def test_a_flag_beats_a_file_named_by_the_environment_which_beats_the_variable_and_the_default(tmp_path: Path, monkeypatch) -> None:
    assert _settings(["--run", "r"]).max_batch_size == 32  # the default
    monkeypatch.setenv("ROTOREC_MAX_BATCH_SIZE", "8")
    assert _settings(["--run", "r"]).max_batch_size == 8
    (tmp_path / "size").write_text("4\n")
    monkeypatch.setenv("ROTOREC_MAX_BATCH_SIZE_FILE", str(tmp_path / "size"))
    assert _settings(["--run", "r"]).max_batch_size == 4
    assert _settings(["--run", "r", "--max-batch-size", "2"]).max_batch_size == 2


def test_tokens_come_from_the_secrets_directory_split_on_commas_and_newlines(tmp_path: Path) -> None:
    (tmp_path / "rotorec_admin_tokens").write_text("first, second\nthird\n")
    assert _settings(["--run", "r", "--secrets-dir", str(tmp_path)]).admin_tokens == ["first", "second", "third"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ROTOREC_PORT", "eighty", "serve setting port: Input should be a valid integer"),
        ("ROTOREC_MAX_CANDIDATES", "0", "serve setting max_candidates: Input should be greater than or equal to 1"),
        ("ROTOREC_DEVICE", "tpu", "serve setting device: Input should be 'auto', 'cpu' or 'cuda'"),
    ],
)
def test_a_bad_environment_value_is_one_line_naming_the_setting_not_a_traceback(
    variable: str, value: str, expected: str, monkeypatch, capsys
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve", "--run", "unused"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"rotorec: error: {expected}") and variable in error, error
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
