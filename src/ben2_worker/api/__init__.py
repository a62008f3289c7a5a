"""The RunPod-facing layer: request handling, URL inputs (``fetch``) and output delivery
(``delivery``). Modules here are imported by name; this package imports nothing itself."""
