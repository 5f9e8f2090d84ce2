"""bedside-twin edge agent: reads bedside devices and ships sealed frames to the cloud sink."""
