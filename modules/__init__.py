"""Built-in uun-gateway modules (installed as ``uun_gateway.modules``)."""
