"""Training: reconstruction loop, GAN engine, checkpoints and logging (:mod:`aware3d.train.io`).

Kept free of imports so ``import aware3d.train.io`` stays cheap; import submodules directly.
"""
