"""Networks (nn.Module): NeRF MLP, hash-grid field, GIRAFFE feature fields, SIREN/FiLM, CAM.

Import the submodule you need (``from aware3d.fields.giraffe import FeatureField``); this package
imports nothing so that it stays cheap."""
