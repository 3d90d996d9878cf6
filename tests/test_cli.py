"""The `repa-study` entry point: our errors print one actionable line (exit 1); bugs keep their traceback."""
import pytest

from jobs import cli


def _main(monkeypatch, *args):
    monkeypatch.setattr("sys.argv", ["repa-study", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code


def test_user_errors_are_one_line(monkeypatch, capsys, tmp_path):
    code = _main(monkeypatch, "train", "smoke", f"data.spec={tmp_path / 'missing'}", "--max-steps", "1")
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("Error: dataset folder") and "Traceback" not in err


def test_bugs_keep_their_traceback(monkeypatch):
    def boom():
        raise TypeError("a bug")

    monkeypatch.setattr(cli, "cli", lambda standalone_mode: boom())
    monkeypatch.setattr("sys.argv", ["repa-study"])
    with pytest.raises(TypeError, match="a bug"):
        cli.main()


def test_user_errors_inside_any_sub_command_runner(tmp_path):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli.cli, ["train", "smoke", f"data.spec={tmp_path / 'missing'}", "--max-steps", "1"])
    assert result.exit_code == 1 and "Error: dataset folder" in result.output
