"""govchain-edge: signed sensor readings from the street to the IoT-Hub and the govchain."""
