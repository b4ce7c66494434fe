"""The chaos test (issue 14): a cluster on a private PostgreSQL and Mosquitto,
killed and restarted under a steady QoS 1 load, with nothing acknowledged lost.

plan     ChaosPlan (CHAOS_* from the environment) and the Figures it prints
cluster  the processes, each bridge and delivery under a supervisor, the chaos
gateway  a paho gateway publishing at a steady rate, counting PUBACKs
inbox    the receiver's tally: readings, duplicates, signatures

test_private_postgres checks the helper the chaos test restarts.
"""
