"""Vendor adapters, the error taxonomy and the model catalogue.

    from providers import call, load_catalogue
    result = call(client, catalogue.model("gpt-image-1.5"), GenerationRequest("a fox"))
"""

from providers.calls import call
from providers.catalogue import load_catalogue

__all__ = ["call", "load_catalogue"]
