"""The outage benchmark's parts (``python -m benchmarks.breaker_outage``): the designs and
scenarios, the simulator faults, the imagequeue and LiteLLM runs, and the figures and table."""
