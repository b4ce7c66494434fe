"""Commands for people: the webhooks API, a gateway simulator, a local receiver.

    edgesense webhooks register|list|get|update|rotate-secret|delete|enable
    edgesense event-types   the event types and their bodies' JSON Schemas
    edgesense rules create|list|get|update|delete
    edgesense deliveries list|redeliver
    edgesense alerts list   what the project's threshold rules raised
    edgesense devices list|get  the devices and gateways seen: status, readings
    edgesense simulate      publish readings, alerts and status over MQTT
    edgesense receive       a local webhook receiver that checks signatures

The API commands talk to the REST API (`--api-url`, else EDGESENSE_API_URL,
else http://{EDGESENSE_HTTP_ADDR}) with an API key (`--api-key`, else
EDGESENSE_API_KEY, else the file var/dev-api-key that `edgesense up --dev`
writes). Every API command takes `--json` to print the API's JSON as is.

Exit codes, for scripts:

    0  ok
    1  the API answered an error (4xx/5xx; its message is printed), or
       `simulate` could not get every message acknowledged
    2  usage or configuration error (bad option, no API key)
    3  cannot connect: the API or the MQTT broker does not answer, or
       `receive` cannot listen on its address
    130  interrupted by Ctrl-C (simulate and receive stop cleanly with 0)

Errors go to stderr as one line, `error: <message>`; the exception tree
behind them is drawn in `errors.py`.

The parsers are built here without importing httpx, aiohttp or paho: a
handler imports its module only when its command runs, so `edgesense up` and
the services start as fast as before.
"""

from __future__ import annotations

from edgesense.tools.errors import EXIT_CODES_EPILOG
from edgesense.tools.parsers import add_tool_commands

__all__ = ["EXIT_CODES_EPILOG", "add_tool_commands"]
