"""The built-in ``mqtt`` module: module storages to an MQTT broker, with presence, health and commands.

Files: :mod:`.schema` (the config and its defaults), :mod:`.link` (the connection, failover,
outages), :mod:`.delivery` (storages to messages, acknowledged by PUBACK), :mod:`.presence`
(status and health topics), :mod:`.commands` (requests and replies), :mod:`.module` (the module
that ties them together), :mod:`.cli` (``uun-gateway mqtt watch`` and ``send-command``).
"""
