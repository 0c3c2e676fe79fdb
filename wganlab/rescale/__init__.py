"""The invariance engine: find a critic's rescalable unit pairs (:mod:`.discovery`), choose
per-unit scales (:mod:`.solvers`, pure maths), apply them to weights and optimizer state
(:mod:`.apply`), layer after layer (:mod:`.sweep`); :mod:`.impact` measures what a projection
changes in the critic's output."""
from .apply import (STATE_POWERS, incoming, outgoing, rescale_pair_, state_powers,
                    transform_state_, unit_norms)
from .discovery import InvarianceError, UnitPair, find_pairs
from .impact import ImpactProbe, critic_loss, critic_output
from .layers import layer_bounds, weight_layers
from .solvers import balance, box_distance2, exact, log_balance, paper, paper_guarded, violation
from .sweep import SOLVERS, SolveContext, get_solver, register_solver, rescale_critic_
from . import function as _function  # noqa: F401  (registers the "function" solver)
from . import output as _output  # noqa: F401  (registers the "output" solver)

__all__ = ["STATE_POWERS", "incoming", "outgoing", "rescale_pair_", "state_powers",
           "transform_state_", "unit_norms", "InvarianceError", "UnitPair", "find_pairs",
           "ImpactProbe", "critic_loss", "critic_output", "layer_bounds", "weight_layers",
           "balance", "box_distance2", "exact", "log_balance", "paper", "paper_guarded", "violation",
           "SOLVERS", "SolveContext", "get_solver", "register_solver", "rescale_critic_"]
