"""The `repa-study` entry point: our errors print one actionable line (exit 1); bugs keep their traceback."""
import pytest

import jobs.cli.root as cli


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


def _caught(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError("expected an exception")


def test_what_counts_as_a_user_error(tmp_path):
    import numpy as np

    from study.config import apply_overrides
    from study.run import read_config

    # a check of ours refusing bad input, with a builtin type: one line
    assert cli._is_user_error(_caught(read_config, tmp_path))
    # the same builtin types raised while computing (in our code or a library's) are bugs: traceback
    assert not cli._is_user_error(_caught(apply_overrides, None, {}))
    assert not cli._is_user_error(_caught(np.reshape, np.zeros(3), (2, 2)))
    assert not cli._is_user_error(_caught(int, "x"))


def test_no_command_needs_its_own_error_wrapper(tmp_path):
    """The root group alone turns errors our code raises on purpose into one line (no per-command wrappers)."""
    from click.testing import CliRunner

    (tmp_path / "not-a-run").mkdir()
    result = CliRunner().invoke(cli.cli, ["eval", "fid", str(tmp_path / "not-a-run"), "--step", "1", "--n", "4",
                                          "--extractor", "synthetic"])
    assert result.exit_code == 1 and "Error: " in result.output and "no config.yaml" in result.output, result.output
    assert "Traceback" not in result.output
