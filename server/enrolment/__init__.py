"""Zero-touch enrolment: claim codes, stations asking to join, and their approval."""
