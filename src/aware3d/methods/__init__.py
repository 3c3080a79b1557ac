"""Methods: one module per method, each defining ``METHOD`` (its surface, :mod:`aware3d.methods.base`).

The list of methods is :mod:`aware3d.registry` (``aware3d.registry.get(name)`` imports a method's
module on first use); this package imports nothing so that importing it stays cheap.
"""
