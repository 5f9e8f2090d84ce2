"""bedside-twin simulators: devices that speak the real byte formats, and the local stack."""
