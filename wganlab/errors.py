"""The one base class of wganlab's own errors, and the path checks every writer relies on.

Every problem a user can cause (a bad config, data file, checkpoint or output folder) raises a
subclass of :class:`WganlabError` whose message names the key or the file and the fix; the
command line prints it as one line (``wganlab: error: ...``) with its ``exit_code``, never as a
traceback.
"""
from __future__ import annotations

import re
from pathlib import Path


class WganlabError(Exception):
    """A problem with what the user gave wganlab; exit code 2 on the command line."""
    exit_code = 2


class ConfigError(WganlabError, ValueError):
    """A configuration problem, with the offending key in the message."""


class DataError(WganlabError, ValueError):
    """A data file or folder that cannot be used, with the path and the reason."""


class InvarianceError(WganlabError, ValueError):
    """A critic layer breaks the rescaling invariance (raised in strict mode)."""


class CheckpointError(WganlabError, ValueError):
    """A checkpoint that cannot be written or used, naming the file and the problem."""


class RunFolderError(WganlabError):
    """A run folder in use by another process, or holding something other than this run."""


class RunError(WganlabError, RuntimeError):
    """A run directory or checkpoint that cannot be evaluated, with the path and the reason."""


class CompareError(WganlabError, RuntimeError):
    """A comparison that cannot be set up (bad names, an unusable output folder)."""


class TrainingError(WganlabError, RuntimeError):
    """A run that cannot go on (e.g. a non-finite loss), with the step and the network."""
    exit_code = 1  # the run failed, not its input


#: names that become file or folder names: no separators, no '..', no leading dot or dash
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def unsafe_name(name: object) -> bool:
    """Whether ``name`` could leave, hide in or escape the folder it is joined to."""
    return (not isinstance(name, str) or len(name) > 128 or not SAFE_NAME.fullmatch(name)
            or ".." in name)


def inside(root: str | Path, path: str | Path) -> Path:
    """``path`` resolved (symlinks followed), refused unless it lies inside ``root``: the check
    before wganlab writes or deletes anything in a folder it owns."""
    base, target = Path(root).resolve(), Path(path).resolve()
    if target != base and base not in target.parents:
        raise WganlabError(f"refusing to touch {path}: it resolves to {target}, outside "
                           f"{root} (a symlink or a '..' in a name?)")
    return target
