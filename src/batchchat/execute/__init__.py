"""Execute: send planned requests within the limits, retry what is worth it, parse the answers."""
