"""Remote actions for technicians: signed one-shot commands and the stations' replies."""
