"""Text-to-speech: Vietnamese text normalised, spoken by a pluggable engine, stored as audio.

``normalise`` is pure; ``engines`` runs espeak-ng or piper; ``service.TtsService`` ties
them to the upload pipeline and the audio store (see docs/audio.md). Nothing is
imported here, so the pure normaliser loads without the database or ffmpeg.
"""
