"""Which usagg code this process runs: the package's folder, version and a digest of its source files.

A Slurm element unpickles the submitting run's job call with whatever usagg the node's Python imports: another
virtual environment, an older install, a checkout at another commit. Such a node would train with other code than
the run that planned the job (other defaults, metrics, file layouts) and say nothing. The submitting run records
its `CodeOrigin` in the call, and the node refuses to run under a different one (usagg/execute/slurm.py).
The digest covers every .py file under the package (names and bytes), so an editable install at another commit
differs even where `__version__` does not; it is computed once per process, in about 20 ms.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import usagg


@dataclass(frozen=True)
class CodeOrigin:
    """Where this process's usagg comes from and what its code is."""

    folder: str
    version: str
    digest: str

    def differs_from(self, other: CodeOrigin) -> bool:
        return self.digest != other.digest

    def describe(self) -> str:
        return f"usagg {self.version} from {self.folder} (code {self.digest[:12]})"


@functools.cache
def code_origin() -> CodeOrigin:
    """This process's usagg: its package folder, `__version__` and a blake2b digest over its .py files."""
    folder = Path(usagg.__file__).resolve().parent
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(folder.rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return CodeOrigin(str(folder), usagg.__version__, digest.hexdigest())
