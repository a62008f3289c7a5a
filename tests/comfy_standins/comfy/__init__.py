"""Stand-in for ComfyUI's ``comfy`` package (tests only): just ``comfy.model_management``."""
