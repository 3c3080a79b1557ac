"""aware3d: neural scene representation on one rendering core.

Reconstruction (NeRF, a hash-grid NeRF, NeRF-W) and 3D-aware generation (GIRAFFE, GRAF, pi-GAN,
HoloGAN, CIPS-3D) behind one method surface::

    import aware3d
    run = aware3d.load("runs/ngp-lego")
    out = run.render(run.orbit_camera(azimuth_deg=30.0))   # {"color", "depth", "opacity"}

Training goes through a method's surface: ``aware3d.method("ngp").train(data, out=...)``
(``aware3d.train`` is the package of the training loops). Submodules import torch; this top level
stays light (the functions below import on first call) so that the command line starts fast.
"""
__version__ = "0.1.0"

__all__ = ["load", "method", "list_methods", "__version__"]


def load(run_dir, device=None, checkpoint=None):
    """A trained run of any method, ready to render (see :func:`aware3d.api.load`)."""
    from .api import load as _load

    return _load(run_dir, device=device, checkpoint=checkpoint)


def method(name: str):
    """The surface of method ``name`` (see :func:`aware3d.api.method`)."""
    from .api import method as _method

    return _method(name)


def list_methods() -> dict:
    """``{name: one-line summary}`` of every method (``aware3d.methods`` is the package of method
    modules)."""
    from .api import list_methods as _list

    return _list()
