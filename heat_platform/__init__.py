"""heat-platform: an operated pipeline for physics-informed inverse heat problems."""

from heat_platform.paths import default_home
from heat_platform.settings import apply_library_defaults

__version__ = "0.1.0"

apply_library_defaults(default_home())
