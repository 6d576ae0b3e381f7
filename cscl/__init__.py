"""cscl: Cross-Stain Contrastive Learning for computational pathology.

The library has no Kubeflow imports; components/ and pipelines/ wrap it.
"""

__version__ = "0.1.0"
