"""The vendor simulator: an HTTP server speaking each image vendor's real wire format, following
a failure profile (latency, error mix, outages), for tests, the demo and benchmarks.

    python -m simulator --port 8765 --profile peak-hours --latency-scale 0.05
"""

from simulator.app import create_app
from simulator.outcomes import Kind
from simulator.profile import Profile, ProfileError, load_profile
from simulator.server import serve

__all__ = ["Kind", "Profile", "ProfileError", "create_app", "load_profile", "serve"]
