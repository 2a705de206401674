"""Optional dependencies stay optional: ``import scalecheck`` pulls in none of them, and the
modules that need one say which extra to install. Checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

OPTIONAL = (
    "hypothesis",
    "matplotlib",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "accelerate",
    "IPython",
)

CODE = f"""
import json, sys
import scalecheck
import scalecheck.testing, scalecheck.integrations
from scalecheck.reference import interpolation
loaded = [m for m in {OPTIONAL!r} if m in sys.modules]

# Then block the optional packages (sys.modules[name] = None makes importing them raise
# ImportError) and import the modules that need them.
for name in ("hypothesis", "lightning", "lightning.pytorch", "pytorch_lightning",
             "transformers"):
    sys.modules[name] = None
messages = {{}}
for module in ("strategies", "integrations.lightning", "integrations.pytorch_lightning",
               "integrations.transformers"):
    try:
        __import__("scalecheck." + module)
    except scalecheck.MissingDependencyError as e:
        messages[module] = [str(e), isinstance(e, ImportError)]
print(json.dumps({{"loaded": loaded, "messages": messages}}))
"""


def test_optional_dependencies_stay_optional():
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CODE)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # import scalecheck (and scalecheck.testing, scalecheck.integrations) imports none.
    assert result["loaded"] == []
    # The modules that need an extra fail with an ImportError that names it.
    messages = result["messages"]
    assert all(is_import_error for _, is_import_error in messages.values())
    assert 'pip install "scalecheck[hypothesis]"' in messages["strategies"][0]
    assert 'pip install "scalecheck[lightning]"' in messages["integrations.lightning"][0]
    assert "pip install pytorch-lightning" in messages["integrations.pytorch_lightning"][0]
    assert 'pip install "scalecheck[transformers]"' in messages["integrations.transformers"][0]
