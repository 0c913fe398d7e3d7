"""Audio decoding and encoding for voice notes (see codec.py)."""
