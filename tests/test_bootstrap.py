"""tools/bootstrap.py answers --help like every tool, and names an unknown command."""
import subprocess
import sys
from pathlib import Path

BOOTSTRAP = Path(__file__).resolve().parents[1] / "tools/bootstrap.py"


def test_help_exits_0_and_an_unknown_command_is_named():
    ok = subprocess.run([sys.executable, str(BOOTSTRAP), "--help"], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and "bootstrap.py test" in ok.stdout
    bad = subprocess.run([sys.executable, str(BOOTSTRAP), "tets"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unknown command 'tets'" in bad.stderr
