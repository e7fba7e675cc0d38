"""MQTT store-and-forward: the SQLite outbox to the central broker (docs/mqtt.md).

  service.py    the Uplink service and its thread: send, mark sent, commands, stats
  link.py       one broker connection (paho client), callbacks that only record
  outbox.py     unsent rows in SQLite, marking them sent, resync
  retention.py  backlog limits (rows, bytes, age) and `dropped` notices
  commands.py   ping, snapshot, config/get, resync
  messages.py   topics and payloads
  pacing.py     reconnect backoff with jitter, bandwidth cap
  cli.py        `appliance uplink status`
"""
