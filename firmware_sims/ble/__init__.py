"""Simulated BLE peripherals: payload encoders written from the SIG specifications.

The bleak backend that serves them lives in `firmware_sims.ble.backend` and is imported on its
own, so importing the encoders never pulls in bleak.
"""

from firmware_sims.ble.encoders import (
    DEVICE_INFORMATION_UUIDS,
    MAX_PAYLOAD_BYTES,
    SAMPLE_TYPES,
    BatteryLevelSample,
    BloodPressureSample,
    DeviceInformationSample,
    EnvironmentTemperatureSample,
    GlucoseSample,
    HeartRateSample,
    HumiditySample,
    MeasurementSample,
    PlxContinuousSample,
    PlxSpotCheckSample,
    Quantity,
    Sample,
    Special,
    TemperatureSample,
    characteristic_of,
    date_time,
    float32,
    max_rr_intervals,
    sfloat,
)

__all__ = [
    "DEVICE_INFORMATION_UUIDS",
    "MAX_PAYLOAD_BYTES",
    "SAMPLE_TYPES",
    "BatteryLevelSample",
    "BloodPressureSample",
    "DeviceInformationSample",
    "EnvironmentTemperatureSample",
    "GlucoseSample",
    "HeartRateSample",
    "HumiditySample",
    "MeasurementSample",
    "PlxContinuousSample",
    "PlxSpotCheckSample",
    "Quantity",
    "Sample",
    "Special",
    "TemperatureSample",
    "characteristic_of",
    "date_time",
    "float32",
    "max_rr_intervals",
    "sfloat",
]
