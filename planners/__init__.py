"""Planners turn a request into an outline (and its outline latent). Installed as `blockgen.planners`."""
