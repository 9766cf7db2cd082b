"""The ``simplexens`` command and :func:`simplexens.compare.compare`, end to end at quick sizes:
exit codes, the report's files and tables, reproducibility, and one-line errors on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from simplexens.cli import main
from simplexens.compare import CONTROL, FIGURES, compare
from simplexens.compare._report import judge as _judge


def _tables(markdown):
    """Every markdown table of ``markdown`` as (header cells, rows of cells)."""
    tables, current = [], None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if current is None:
            current = (cells, [])
            tables.append(current)
        elif not set(line) <= {"|", "-"}:
            current[1].append(cells)
    return tables


def _number(cell):
    """The mean of a cell such as ``**0.1234 ± 0.0100**``."""
    return float(cell.strip("*").split("±")[0])


def _without_times(value):
    """``value`` without the keys that hold times or the output path."""
    if isinstance(value, dict):
        return {
            k: _without_times(v) for k, v in value.items() if "seconds" not in k and k != "command"
        }
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def test_compare_digits_writes_a_parseable_report(tmp_path):
    code = main(
        [
            "compare",
            "--quick",
            "--out",
            str(tmp_path),
            "--verbose",
            "0",
            "--methods",
            "espro,fge,swag,spro,curve",
        ]
    )
    assert code == 0
    for name in ("report.md", "results.json", *FIGURES):
        assert (tmp_path / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "results.json").read_text())
    methods = results["config"]["methods"]
    assert set(methods) == {
        "single",
        "deep_ensemble",
        CONTROL,
        "espro",
        "fge",
        "swag",
        "spro",
        "curve",
    }
    tables = _tables((tmp_path / "report.md").read_text())
    # clean, NLL under shift, accuracy under shift, OOD AUROC, OOD AUPR and FPR at 95% TPR
    assert len(tables) == 5
    for header, rows in tables:
        assert all(h.endswith(("↑", "↓")) for h in header[1:]), header
        assert [row[0] for row in rows] == methods
        values = np.array([[_number(c) for c in row[1:]] for row in rows])
        assert np.isfinite(values).all()
        bold = np.array([[c.startswith("**") for c in row[1:]] for row in rows])
        assert bold.any(axis=0).all()  # a best value marked in every column
    clean_header, clean_rows = tables[0]
    nll = [_number(row[clean_header.index("NLL ↓")]) for row in clean_rows]
    expected = [results["table"][m]["nll"]["mean"] for m in methods]
    np.testing.assert_allclose(nll, expected, atol=5e-5)
    aurc = [_number(row[clean_header.index("AURC ↓")]) for row in clean_rows]
    np.testing.assert_allclose(
        aurc, [results["table"][m]["aurc"]["mean"] for m in methods], atol=5e-5
    )
    ood_header, _ = tables[4]
    assert "FPR@95 mutual_information ↓" in ood_header
    # The budgets of the protocol: grown methods spend what the control spends.
    epochs = {m: results["table"][m]["epochs_spent"]["mean"] for m in methods}
    assert epochs["espro"] == epochs["swag"] == epochs["spro"] == epochs[CONTROL]
    assert epochs["deep_ensemble"] == 2 * epochs["single"]


def test_same_seed_same_results(tmp_path):
    args = ["compare", "--quick", "--data", "spirals", "--verbose", "0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    second = json.loads((tmp_path / "b" / "results.json").read_text())
    assert _without_times(first) == _without_times(second)
    # The library function gives the same numbers up to float rounding (the command runs
    # torch with one thread, which orders float sums differently).
    direct = json.loads(json.dumps(compare("spirals", quick=True, out=tmp_path / "c", verbose=0)))
    assert _numbers(_without_times(direct)) == pytest.approx(
        _numbers(_without_times(second)), rel=1e-4, abs=1e-5
    )


def _numbers(tree):
    """Every number in a JSON tree, in a fixed order."""
    if isinstance(tree, dict):
        return [n for key in sorted(tree) for n in _numbers(tree[key])]
    if isinstance(tree, list):
        return [n for item in tree for n in _numbers(item)]
    return [float(tree)] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


def test_module_help_exits_zero():
    done = subprocess.run(
        [sys.executable, "-m", "simplexens", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "compare" in done.stdout


def test_verdicts_use_the_pooled_seed_sd():
    a = {"nll": {"mean": 0.30, "sd": 0.02}}
    b = {"nll": {"mean": 0.31, "sd": 0.02}}
    assert "within seed noise" in _judge(a, b, "nll", False, seeds=3)
    b["nll"]["mean"] = 0.35
    assert "better" in _judge(a, b, "nll", False, seeds=3)
    assert "worse" in _judge(b, a, "nll", False, seeds=3)
    assert "single seed: no noise estimate" in _judge(a, b, "nll", False, seeds=1)


def _csv(path, text):
    path.write_text(text)
    return str(path)


BAD_INPUT = {
    "unknown method": (lambda d: ["--methods", "espro,bagging"], "bagging"),
    "unknown dataset": (lambda d: ["--data", "mnist"], "mnist"),
    "missing file": (lambda d: ["--data", str(d / "absent.csv"), "--target", "y"], "absent.csv"),
    "non-numeric column": (
        lambda d: [
            "--data",
            _csv(d / "t.csv", "a,b,y\n1,x,0\n2,3,1\n4,5,0\n6,7,1\n"),
            "--target",
            "y",
        ],
        "'b'",
    ),
    "absent target": (
        lambda d: ["--data", _csv(d / "t.csv", "a,b,y\n1,2,0\n3,4,1\n"), "--target", "label"],
        "label",
    ),
    "one class": (
        lambda d: ["--data", _csv(d / "t.csv", "a,y\n1,0\n2,0\n3,0\n"), "--target", "y"],
        "one class",
    ),
    "bad option value": (lambda d: ["--seeds", "two"], "--seeds"),
    "unknown parameter": (lambda d: ["--set", "espro.no_such=1"], "no_such"),
    "unknown ood set": (lambda d: ["--ood", "far"], "--ood"),
    "held-out classes of two": (lambda d: ["--data", "spirals", "--ood", "classes"], "3"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    extra, named = BAD_INPUT[case]
    code = main(
        ["compare", "--quick", "--verbose", "0", "--out", str(tmp_path / "r"), *extra(tmp_path)]
    )
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert named in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "r").exists()  # nothing trained, nothing written


def test_user_csv_and_npz(tmp_path):
    from sklearn.datasets import make_classification

    X, y = make_classification(120, 4, n_informative=3, n_redundant=0, n_classes=3,
                               random_state=0)  # fmt: skip
    names = np.array(["cat", "dog", "eel"])[y]
    lines = ["f0,f1,label,f2,f3"] + [
        f"{a},{b},{c},{d},{e}" for (a, b, d, e), c in zip(X, names, strict=True)
    ]
    path = _csv(tmp_path / "data.csv", "\n".join(lines) + "\n")
    out = tmp_path / "csv"
    args = ["compare", "--quick", "--verbose", "0", "--methods", "single"]
    assert main([*args, "--data", path, "--target", "label", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["kind"] == "tabular"
    assert results["config"]["n_train"] + results["config"]["n_test"] == 120
    images = np.random.RandomState(0).uniform(size=(80, 6, 6))
    np.savez(tmp_path / "data.npz", X=images, y=np.arange(80) % 2)
    out = tmp_path / "npz"
    assert main([*args, "--data", str(tmp_path / "data.npz"), "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["kind"] == "image"


def test_held_out_classes_are_the_ood_set(tmp_path):
    from sklearn.datasets import load_digits

    from simplexens.compare._data import load_data

    data = load_data("digits", ood="classes")
    assert data.held_out == (8, 9)
    assert not np.isin(data.y_train, [8, 9]).any()
    assert not np.isin(data.y_test, [8, 9]).any()
    _, y = load_digits(return_X_y=True)
    # every held-out row, none lost and none duplicated: 75/25 of the rest, all of 8 and 9
    assert len(data.X_ood) == np.isin(y, [8, 9]).sum()
    assert len(data.y_train) + len(data.y_test) == (~np.isin(y, [8, 9])).sum()
    args = ["compare", "--quick", "--verbose", "0", "--methods", "single", "--ood", "classes"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["held_out"] == [8, 9]
    assert "held-out classes (8, 9)" in (tmp_path / "report.md").read_text()
