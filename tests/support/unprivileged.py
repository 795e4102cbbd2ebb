"""Running a child without root's power over file modes, so permission rules are exercised.

CI runs as root, and root reads and writes files whatever their mode. A test of a
permission rule runs its child through `setpriv` with CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH dropped from the bounding set: the child is still uid 0 (so it
can reach the interpreter under /root), but file modes bind it as they bind any
owner. As an ordinary user the command runs unchanged.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import pytest

_DROP = "-dac_override,-dac_read_search"


def without_file_override(command: Sequence[str]) -> list[str]:
    """`command`, made to obey file modes when the suite runs as root."""
    if os.geteuid() != 0:
        return list(command)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and util-linux's setpriv is missing: modes cannot bind root")
    return [setpriv, f"--bounding-set={_DROP}", *command]
