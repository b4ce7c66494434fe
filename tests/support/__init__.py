"""Helpers every test package (and bench/) shares.

ports      free_port (never the same port twice in a process), wait_for_port
waiting    eventually (async) and wait_until (blocking): the one poll loop
receivers  Receiver, a real webhook receiver on loopback (HTTP or HTTPS), Flaky
postgres   PrivatePostgres, a PostgreSQL server of our own to restart
broker     Mosquitto on a free port (persistent if asked), and a Gateway that publishes to it
processes  EdgeSense services as real subprocesses
metrics    every Prometheus metric name a process exposes
tls_files  test certificates written where EDGESENSE_GRPC_TLS_* can name them
"""
