"""The import structure: two wings over a shared core, imports running one way."""

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("wing, other", [("trivia", "ratings"), ("ratings", "trivia")])
def test_a_wing_imports_neither_the_other_wing_nor_the_report_above_both(wing, other):
    """Imports run one way (entry points -> wings -> core): a wing that reached ``cinephile.report`` would load
    the other wing's tables with it."""
    import subprocess
    import sys

    code = (f"import importlib, pkgutil, sys, cinephile.{wing} as w\n"
            f"for m in pkgutil.iter_modules(w.__path__): importlib.import_module('cinephile.{wing}.' + m.name)\n"
            f"print(sorted(n for n in sys.modules if n.startswith(('cinephile.{other}', 'cinephile.report', "
            "'cinephile.launch'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
