"""The install's optional parts: a command whose extra is missing names the extra to install."""

import sys
import tomllib
from pathlib import Path

import pytest

from unisono.cli import EXTRA_OF_MODULE, main

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_every_extra_named_by_the_cli_is_declared_and_the_core_holds_none_of_their_packages():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(EXTRA_OF_MODULE.values()) <= set(extras)
    core = {d.split(">")[0].split("=")[0].split("~")[0].split("[")[0] for d in PYPROJECT["project"]["dependencies"]}
    optional = {d.split(">")[0].split("=")[0].split("~")[0].split("[")[0] for name in ("eval", "data", "train", "voices")
                for d in extras[name] if not d.startswith("unisono")}
    assert not core & optional, core & optional
    assert {"ray", "scikit-learn", "pyroomacoustics", "resemblyzer"} <= optional  # the heavy ones left the core


def test_a_command_whose_extra_is_missing_says_which_extra_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "duckdb", None)  # `import duckdb` now raises ModuleNotFoundError
    monkeypatch.setattr(sys, "argv", ["unisono", "data", "stats", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "[data]" in err and "duckdb" in err and "Traceback" not in err


def test_a_missing_module_that_no_extra_provides_is_not_disguised(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "duckdb", None)
    monkeypatch.setattr("unisono.cli.EXTRA_OF_MODULE", {})
    monkeypatch.setattr(sys, "argv", ["unisono", "data", "stats", str(tmp_path)])
    with pytest.raises(ModuleNotFoundError):
        main()
