"""matplotlib without a display: every figure wganlab draws is written to a file."""
from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use, so that
    training without plots never pays for matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
