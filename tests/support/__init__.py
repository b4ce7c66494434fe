"""Helpers every test package (and bench/) shares: free ports, a real Mosquitto,
webhook receivers, processes, waiting with a deadline, test certificates."""
