"""Networks that are not fields: the GAN discriminators (:mod:`aware3d.nets.discriminators`).
Import the submodule you need; this package imports nothing."""
