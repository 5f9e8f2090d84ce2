"""Simulated serial devices on pseudo-terminals: implant telemetry receiver and bedside monitor."""

from firmware_sims.serial.implant import (
    ImplantReceiverSim,
    ImplantRecord,
    encode_frame,
    encode_record,
)
from firmware_sims.serial.monitor import BedsideMonitorSim, VitalsRecord, encode_sentence
from firmware_sims.serial.pty import PtyPort, Sent, SerialDevice, stream

__all__ = [
    "BedsideMonitorSim",
    "ImplantReceiverSim",
    "ImplantRecord",
    "PtyPort",
    "Sent",
    "SerialDevice",
    "VitalsRecord",
    "encode_frame",
    "encode_record",
    "encode_sentence",
    "stream",
]
