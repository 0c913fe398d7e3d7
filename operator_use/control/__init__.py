"""The local control socket: a running agent answers `operator-use status` on `<home>/control.sock`.

`config.py` (`ControlConfig`), `status.py` (the `Status` document), `server.py` (served by `App`),
`client.py` (asked by the CLI). Nothing here imports the app: the app hands the server a callable.
"""
