"""T-NeRF, the dynamic-scene baseline that feeds time to the NeRF (:mod:`aware3d.methods.dnerf`)."""
from .dnerf import TNERF as METHOD  # noqa: F401
