"""Queue position and ETA: per-model latency fitted from recent attempts, a simulation of the
vendor limits, the forecast, the published snapshot and the ETA curve the API answers from."""
