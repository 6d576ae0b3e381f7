"""Whole-slide image processing: open slides, find tissue, cut patches, encode them.

Submodules keep heavy imports (torch, timm, openslide) out of `import cscl.wsi`.
"""
