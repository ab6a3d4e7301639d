"""Proposal generators for rotated boxes (registered in ``PROPOSAL_GENERATOR_REGISTRY``)."""

from emdet.modeling.proposal_generator.hrpn import HRPN
from emdet.modeling.proposal_generator.rrpn import EMRRPN

__all__ = ["EMRRPN", "HRPN"]
