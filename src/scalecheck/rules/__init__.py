"""Stage 4: rules, pure functions from measurements to findings.

Codes: SC0xx the measurement itself, SC1xx input features, SC2xx nonlinearities, SC3xx
gradients, SC4xx loss, targets and the training trial.

Example:
    >>> from scalecheck.rules import all_rules, get_rule
    >>> get_rule("SC101").name
    'unscaled-input-feature'
    >>> get_rule("saturated-nonlinearity").code
    'SC201'
"""

from ._registry import Context, Rule, Threshold, all_rules, get_rule, run_rules, select_rules

__all__ = ["Context", "Rule", "Threshold", "all_rules", "get_rule", "run_rules", "select_rules"]
