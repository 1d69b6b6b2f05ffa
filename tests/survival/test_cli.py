"""``tmln survival`` end to end on a small simulated table."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tmln.cli import main


def test_cli_end_to_end(sim_csv, simulate, tmp_path):
    valid = tmp_path / "valid.csv"
    simulate(80, seed=9).to_csv(valid, index=False)
    out = tmp_path / "surv"
    result = CliRunner().invoke(main, [
        "survival", str(sim_csv), "--time", "os_months", "--event", "death", "--covariates", "n_stage,age",
        "--horizons", "24,48", "--time-unit", "months", "--validation", str(valid), "--permutations", "9",
        "--bootstrap", "3", "--seed", "4", "--no-figures", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "cut-point t_mln >" in result.output
    res = json.loads((out / "survival.json").read_text())
    assert res["time_unit"] == "months" and res["horizons"] == [24.0, 48.0]
    assert res["cutpoint"]["permutations"] == 9 and res["seed"] == 4
    assert res["validation"]["n"] == 80
    assert (out / "cox_multivariable.csv").is_file() and not (out / "km_t_mln.svg").exists()
    assert (out / "survival.html").read_text().startswith("<section")


def test_cli_errors_exit_2(sim_csv, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["survival", str(sim_csv), "--time", "months", "--event", "death", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "missing column(s) ['months']" in r.output
    r = runner.invoke(main, ["survival", str(sim_csv), "--time", "os_months", "--event", "death",
                             "--cutpoint", "best", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "maxstat, median or a number" in r.output
    r = runner.invoke(main, ["survival", str(sim_csv), "--time", "os_months", "--event", "death",
                             "--marker", "n_stage", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "'n_stage' must be numeric" in r.output
    assert not (tmp_path / "o").exists()


def test_cli_help_has_example():
    r = CliRunner().invoke(main, ["survival", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "--cutpoint" in r.output
