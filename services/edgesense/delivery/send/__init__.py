"""Send: render the body and POST it; the dispatcher (claim/dispatcher.py) signs it.

payload.py renders an event's body once for all its webhooks; http_sender.py
makes one POST (libcurl, through pycurl); attempt.py is how a POST ended (`AttemptResult`) and
what sends it (`Sender`). With `EDGESENSE_DELIVERY_SENDERS` above 0 the POSTs
are made in that many child processes (senders.py starts them,
sender_process.py is their program, sender_wire.py their framing); with 0
there are no sender processes: the delivery process makes them itself with one
`HttpSender` (delivery/server.py picks which).
"""
