"""`mockex run`: a client against many scenarios, each against a fresh mock, judged by the scenario's `expect`.

- ``plan``: which scenarios (all, by layer, by name or file) and a deterministic shard of them.
- ``client``: the client's command line (placeholders), environment, and one bounded run of it.
- ``expect``: what a client must do in a scenario (from ``expect.analyzer``, overridden by ``expect.client``).
- ``worker``: a process that runs scenarios one after another, a fresh mock for each.
- ``execute``: N workers over a plan; interruption ends every worker, mock and client.
- ``report``: progress, summary table, JUnit XML, JSON.
- ``cli``: the `mockex run` command.
"""
