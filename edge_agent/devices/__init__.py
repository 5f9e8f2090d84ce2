"""Device codecs: Bluetooth SIG GATT payloads, implant telemetry frames, monitor lines."""
