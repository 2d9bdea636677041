"""Removing a parametrization from one module without touching its copies.

``torch.nn.utils.parametrize`` gives a parametrized module a class of its own
(``ParametrizedLinear``) that holds the property of the parametrized tensor; ``copy.deepcopy``
keeps that class, so a module and its deep copy share it. ``remove_parametrizations`` deletes
the property from the class: folding the masks of a copy (a deployment measured beside the run)
would take ``weight`` away from the original too. ``remove_parametrization`` gives the module a
class of its own first.

Example
-------
>>> import copy, torch
>>> from torch.nn.utils import parametrize
>>> class Half(torch.nn.Module):
...     def forward(self, w):
...         return w / 2
>>> layer = torch.nn.Linear(2, 2)
>>> _ = parametrize.register_parametrization(layer, "weight", Half())
>>> twin = copy.deepcopy(layer)
>>> remove_parametrization(twin, "weight", leave_parametrized=True)
>>> type(twin).__name__, torch.equal(layer.weight, twin.weight)
('Linear', True)
"""

from torch.nn.utils import parametrize


def remove_parametrization(module, name, leave_parametrized=True):
    """``torch.nn.utils.parametrize.remove_parametrizations`` on ``module`` alone (its deep
    copies, which share its parametrized class, keep theirs).

    Arguments
    ---------
    module : torch.nn.Module
        A module with ``name`` parametrized.
    name : str
        The tensor (``weight``).
    leave_parametrized : bool
        Keep the parametrized value (True) or the original tensor (False).
    """
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    parametrize.remove_parametrizations(module, name, leave_parametrized=leave_parametrized)
