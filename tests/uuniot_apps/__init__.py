"""Small applications written against uun-iot, as their authors write them (imports of ``uun_iot``).

They are not imported by the tests as they are: ``tests/test_compat.py`` ports each one the way a
user does — ``sed 's/\\buun_iot\\b/uun_gateway/g'`` and nothing else — and runs it through its own
bin-script shape. Files here are data for that test; mypy does not check them (uun_iot is not
installed).
"""
