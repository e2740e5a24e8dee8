"""AR -> block-diffusion adaptation: `adapt(AdaptConfig(...), out)` and `blockgen adapt`."""

from blockgen.adapt.trainer import AdaptConfig, AdaptProgress, AdaptResult, adapt

__all__ = ["AdaptConfig", "AdaptProgress", "AdaptResult", "adapt"]
