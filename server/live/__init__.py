"""Live broadcasts from a microphone: sessions, signing, fan-out to stations, archive."""
