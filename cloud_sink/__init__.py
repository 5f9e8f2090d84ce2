"""bedside-twin cloud sink: opens gateway envelopes, writes InfluxDB, keeps patient twins."""
