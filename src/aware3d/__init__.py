"""aware3d: neural scene representation on one rendering core.

Reconstruction (NeRF, a hash-grid NeRF, NeRF-W) and 3D-aware generation (GIRAFFE, GRAF, pi-GAN,
HoloGAN, CIPS-3D). Submodules import torch; this top level stays light so the CLI starts fast.
"""
__version__ = "0.1.0"
