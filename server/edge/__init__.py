"""The HTTP edge: what every request meets before any route — body-size gate, trusted
proxies, security headers — and the outbound stream check's network guard."""
