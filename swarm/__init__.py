"""What block servers and clients share: wire contract, codec, records, DHT, errors."""

__version__ = "0.1.0"
